"""``manage.py leaderboard [--since DATE] [--until DATE] [--arena] [--json]``: the models'
leaderboard as the admin shows it (Bradley–Terry ratings from the votes, on the Elo scale)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.leaderboard import Row, leaderboard, parse_day

COLUMNS = (
    "model",
    "rating",
    "95% CI",
    "battles",
    "W/T/L",
    "up/down",
    "tok/s",
    "TTFT p50",
    "failed",
)


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def cells(row: Row) -> tuple[str, ...]:
    interval = (
        f"{row.ci_low:.0f}-{row.ci_high:.0f}"
        if row.ci_low is not None and row.ci_high is not None
        else "-"
    )
    return (
        row.model,
        _number(row.rating),
        interval,
        str(row.battles),
        f"{row.wins}/{row.ties}/{row.losses}",
        f"{row.thumbs_up}/{row.thumbs_down}",
        _number(row.tokens_per_second, 1),
        "-" if row.ttft_p50_ms is None else f"{row.ttft_p50_ms:.0f} ms",
        "-" if row.failure_rate is None else f"{row.failure_rate:.1%}",
    )


class Command(BaseCommand):
    help = (
        "Print the models' leaderboard: Bradley-Terry ratings (Elo scale, mean 1000) fitted on "
        "the votes, with a 95% bootstrap interval, battles, wins/ties/losses, thumbs outside "
        "compare, mean tokens/s, TTFT p50 and failure rate."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", help="votes and replies from this day (YYYY-MM-DD)")
        parser.add_argument("--until", help="votes and replies up to this day, included")
        parser.add_argument("--arena", action="store_true", help="blind arena votes only")
        parser.add_argument("--json", action="store_true", help="a JSON list of rows instead")

    def handle(self, *args: Any, **options: Any) -> None:
        days = {}
        for name in ("since", "until"):
            try:
                days[name] = parse_day(options[name]) if options[name] else None
            except ValueError as exc:
                raise CommandError(f"--{name}: {exc}") from None
        if days["since"] and days["until"] and days["since"] > days["until"]:
            raise CommandError("--since is after --until")
        rows = leaderboard(**days, arena_only=options["arena"])
        if options["json"]:
            self.stdout.write(json.dumps([r.as_dict() for r in rows], indent=2))
            return
        if not rows:
            self.stdout.write("No votes and no replies in this period.")
            return
        table = [COLUMNS, *(cells(r) for r in rows)]
        widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
        for line in table:
            self.stdout.write(
                "  ".join(
                    cell.ljust(w) if i == 0 else cell.rjust(w)
                    for i, (cell, w) in enumerate(zip(line, widths, strict=True))
                ).rstrip()
            )
