"""``manage.py import_stellarbyte``: turn a StellarByte ``.pth`` into a Hugging Face folder.

Thin on purpose: the conversion lives in :mod:`inference.stellarbyte`; this only parses arguments
and turns its errors into one-line ``CommandError`` messages (no traceback).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from inference.stellarbyte import StellarByteImportError, import_checkpoint


class Command(BaseCommand):
    help = (
        "Convert an original StellarByte checkpoint (.pth state dict + config JSON) into a "
        "Hugging Face Llama folder that transformers loads with AutoModelForCausalLM."
    )
    requires_system_checks: list[str] = []  # touches no database or app state

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("checkpoint", type=Path, help="the StellarByte .pth state dict")
        parser.add_argument(
            "--config", type=Path, required=True, help="the StellarByte config JSON"
        )
        parser.add_argument(
            "--tokenizer", type=Path, required=True, help="directory of the model's tokenizer"
        )
        parser.add_argument("--out", type=Path, required=True, help="directory to write")
        parser.add_argument(
            "--force", action="store_true", help="write into --out even if it is not empty"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = import_checkpoint(
                options["checkpoint"],
                config_path=options["config"],
                tokenizer_dir=options["tokenizer"],
                out=options["out"],
                force=options["force"],
            )
        except StellarByteImportError as exc:
            raise CommandError(str(exc)) from exc
        tying = "tied embeddings" if result.tied else "separate lm_head"
        self.stdout.write(
            self.style.SUCCESS(
                f"Wrote {result.out} ({result.parameters:,} parameters, {tying}, "
                f"rope {result.rope_type})."
            )
        )
