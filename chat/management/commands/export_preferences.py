"""``manage.py export_preferences --out FILE.jsonl [--since DATE] [--models a,b] [--kto]``: the
people's votes (or, with --kto, their thumbs) as training data in TRL's conversational formats.
See chat/preference_data.py and docs/models.md ("Preference data")."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat import preference_data
from chat.leaderboard import parse_day


class Command(BaseCommand):
    help = (
        "Write preference data as JSONL: one line per (chosen, rejected) pair of each decided "
        "vote (TRL's DPO/reward format), or with --kto one line per reply rated thumbs up/down "
        "outside compare (TRL's unpaired KTO format). One file holds one format. Conversations "
        "whose text was not kept, and those of people who opted out, are never exported."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", required=True, help="the file to write; - for stdout")
        parser.add_argument("--since", help="votes (or ratings) from this day on (YYYY-MM-DD)")
        parser.add_argument(
            "--models", help="comma-separated model names: only lines whose models are all in it"
        )
        parser.add_argument(
            "--kto",
            action="store_true",
            help="thumbs up/down on single replies as KTO lines (prompt, completion, label) "
            "instead of the votes' preference pairs",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            since = parse_day(options["since"]) if options["since"] else None
        except ValueError as exc:
            raise CommandError(f"--since: {exc}") from None
        models = None
        if options["models"] is not None:
            models = {name.strip() for name in options["models"].split(",") if name.strip()}
            if not models:
                raise CommandError("--models: give at least one model name")
        if options["kto"]:
            lines = preference_data.kto_lines(since=since, models=models)
        else:
            lines = preference_data.preference_lines(since=since, models=models)
        out = options["out"]
        count = 0
        if out == "-":
            for text in preference_data.jsonl(lines):
                self.stdout.write(text, ending="")
                count += 1
        else:
            try:
                with open(out, "w", encoding="utf-8", newline="\n") as fp:
                    for text in preference_data.jsonl(lines):
                        fp.write(text)
                        count += 1
            except OSError as exc:
                raise CommandError(f"cannot write {out}: {exc.strerror or exc}") from None
        kind = "KTO" if options["kto"] else "preference"
        where = "stdout" if out == "-" else out
        # On stderr: with --out - the data alone is on stdout.
        self.stderr.write(f"Wrote {count} {kind} lines to {where}.", style_func=lambda m: m)
