"""``manage.py models``: the registry as this deployment reads it (the admin's presets too),
and with ``--check`` each model loaded and asked for a few tokens with its own system prompt
and options, so an operator finds a wrong path, a down server, a missing key or a preset's
bad option before the people do."""

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


def groups(spec: registry.ModelSpec, models: dict[str, registry.ModelSpec]) -> str:
    """Who may use ``spec``: its groups (a preset's within its base's, when restricted)."""
    text = ", ".join(spec.groups) or "everyone"
    base = models.get(spec.base) if spec.base else None
    if base is not None and base.groups:
        text += f" (within {spec.base}'s)"
    return text


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
                    f"preset of {spec.base}" if spec.base else spec.backend,
                    where(spec),
                    groups(spec, models),
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
        tokens = max(1, options["tokens"])
        failed = [spec.name for spec in models.values() if not self._check(spec, tokens)]
        if failed:
            raise CommandError(f"{len(failed)} of {len(models)} failed: {', '.join(failed)}")

    def _check(self, spec: registry.ModelSpec, tokens: int) -> bool:
        """A few greedy tokens from ``spec`` as a reply would ask for them: its options (the
        length and temperature the check's) and its system prompt."""
        from django.conf import settings

        from inference.options import OptionError, parse_options

        name = spec.name
        started = time.monotonic()
        turns = [{"role": "user", "content": "Hello"}]
        if spec.system_prompt:
            turns.insert(0, {"role": "system", "content": spec.system_prompt})
        text, result = "", None
        try:
            options = parse_options(
                {**spec.options, "temperature": 0.0, "max_new_tokens": tokens},
                max_new_tokens_limit=max(tokens, settings.STELLARCHAT_MAX_NEW_TOKENS),
            )
        except OptionError as exc:
            self.stdout.write(f"{name}: FAILED options: {exc}")
            return False
        try:
            for item in registry.backend(name).stream(turns, options, threading.Event()):
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
