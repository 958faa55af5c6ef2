"""Train the bundled StellarByte-mini model: a thin wrapper around ``inference.training``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Train StellarByte-mini, the small chat model bundled with StellarChat (CPU only)."

    def add_arguments(self, parser: CommandParser) -> None:
        from inference.training import cli

        cli.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        # Imported here so other management commands never pay for torch and transformers.
        from inference.training import cli, train

        if options["card_only"]:
            path = train.rerender_card(out=cli.out_from(options), scratch=options["scratch"])
            self.stdout.write(self.style.SUCCESS(f"model card rewritten: {path}"))
            return

        def log(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        outcome = train.run(
            cli.config_from(options),
            out=cli.out_from(options),
            scratch=options["scratch"],
            log=log,
        )
        self.stdout.write(self.style.SUCCESS(f"StellarByte-mini written to {outcome.out}"))
