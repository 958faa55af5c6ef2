"""A models file for tests that chat with real local models through the embedded worker: the
file read as start-up reads it, its backends kept for a whole module (a model process each,
started on first use), and what a model answers when asked directly, to compare with."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inference import models_file, registry
from inference.backends.base import Result
from inference.options import parse_options

ROOT = Path(__file__).resolve().parents[2]
GREEDY = {"temperature": 0, "max_new_tokens": 12}
TOKENS_LIMIT = 64


def backends_of(text: str) -> Iterator[dict[str, Any]]:
    """The parsed file and the backends made for it (closed at the end): for a module-scoped
    fixture to yield from."""
    spec = models_file.parse(
        tomllib.loads(text),
        where="models.toml",
        env={},
        folders=(ROOT,),
        max_new_tokens_limit=TOKENS_LIMIT,
    )
    instances: dict[str, Any] = {}
    yield {"file": spec, "instances": instances}
    for backend in instances.values():
        if hasattr(backend, "close"):
            backend.close()


def use(backends: dict[str, Any], settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve ``backends`` (from ``backends_of``) for one test."""
    settings.STELLARCHAT_MODELS = backends["file"]
    settings.STELLARCHAT_MAX_NEW_TOKENS = TOKENS_LIMIT
    monkeypatch.setattr(registry, "_instances", backends["instances"])


def alone(name: str, turns: list[dict[str, str]]) -> str:
    """What model ``name`` answers to ``turns`` with GREEDY, asked directly."""
    options = parse_options(GREEDY, max_new_tokens_limit=TOKENS_LIMIT)
    items = list(registry.backend(name).stream(turns, options))
    assert isinstance(items[-1], Result) and items[-1].finish_reason in ("stop", "length")
    return "".join(items[:-1])
