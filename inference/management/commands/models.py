"""``manage.py models``: the registry as this deployment reads it, and with ``--check`` each
model loaded and asked for a few tokens, so an operator finds a wrong path, a down server or a
missing key before the people do."""

from __future__ import annotations

import threading
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from inference import registry


def where(spec: registry.ModelSpec) -> str:
    if spec.backend == "transformers":
        return spec.path
    if spec.backend == "openai":
        return f"{spec.url} ({spec.remote_model})"
    return "-"


class Command(BaseCommand):
    help = "List the models this deployment serves; --check loads each and generates a little."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--check",
            action="store_true",
            help="load each model (in this process) and generate a few tokens",
        )
        parser.add_argument("--tokens", type=int, default=4, help="tokens each check generates")

    def handle(self, *args: Any, **options: Any) -> None:
        registry.refresh_providers()  # the providers' models as they list them now
        models = registry.models()
        default = registry.default_name()
        loaded = registry.loaded_by_workers()
        rows = [("name", "label", "backend", "where", "groups", "loaded")]
        for spec in models.values():
            here = getattr(registry.backend(spec.name), "ready", False)
            state = ", ".join(
                s for s, on in (("here", here), ("worker", spec.name in loaded)) if on
            )
            rows.append(
                (
                    spec.name + (" (default)" if spec.name == default else ""),
                    spec.label or spec.name,
                    spec.backend,
                    where(spec),
                    ", ".join(spec.groups) or "everyone",
                    state or "no",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write(
                "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            )
        if not options["check"]:
            return
        failed = [name for name in models if not self._check(name, max(1, options["tokens"]))]
        if failed:
            raise CommandError(f"{len(failed)} of {len(models)} failed: {', '.join(failed)}")

    def _check(self, name: str, tokens: int) -> bool:
        from inference.options import GenerationOptions

        started = time.monotonic()
        options = GenerationOptions(temperature=0.0, max_new_tokens=tokens)
        text, result = "", None
        try:
            for item in registry.backend(name).stream(
                [{"role": "user", "content": "Hello"}], options, threading.Event()
            ):
                if isinstance(item, registry.Result):
                    result = item
                else:
                    text += item
        except registry.BackendError as exc:
            self.stdout.write(f"{name}: FAILED {exc}")
            return False
        seconds = time.monotonic() - started
        if result is None or result.finish_reason == "error":
            why = result.error if result is not None else "no result"
            self.stdout.write(f"{name}: FAILED {why}")
            return False
        self.stdout.write(f"{name}: ok in {seconds:.1f} s: {text.strip()[:60]!r}")
        return True
