"""``manage.py export_user USERNAME --out FILE.zip``: the ZIP Settings → Your data gives the
person, for an operator (``--out -`` writes it to standard output)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from portability.export import export_zip


class Command(BaseCommand):
    help = "Write everything one user owns to a ZIP (the format of docs/export-format.md)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--out", required=True, help="the ZIP file to write, or - for standard output"
        )

    def handle(self, *args: Any, username: str, out: str, **options: Any) -> None:
        model = get_user_model()
        user = model._default_manager.filter(**{model.USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        if out == "-":
            for chunk in export_zip(user):
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return
        path = Path(out)
        partial = path.with_name(path.name + ".partial")
        try:
            f = partial.open("wb")
        except OSError as exc:
            raise CommandError(f"cannot write {out}: {exc.strerror}") from None
        try:
            with f:
                for chunk in export_zip(user):
                    f.write(chunk)
            os.replace(partial, path)  # a file at ``out`` is always a whole one
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        size = path.stat().st_size
        self.stderr.write(f"wrote {path} ({size:,} bytes) for {username}")
