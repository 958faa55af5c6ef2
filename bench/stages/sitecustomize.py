"""Stage stamps for ``bench/stream_efficiency.py --stages``: where a message's first token spends
its time, in every server process (daphne, the inference worker, the model process).

The bench puts this folder on the servers' PYTHONPATH, so Python imports this file at start-up
in each of them; with ``STELLARCHAT_STAGES_FILE`` set it wraps a few functions of the app as
their modules load (no change to the app's code) and appends ``<perf_counter> <stage>`` lines
to that file. ``time.perf_counter`` is CLOCK_MONOTONIC on Linux: one clock for every process
on the machine, so the bench lines the stamps up against its own send. Each stamp is one
``write`` of a line-buffered file (some microseconds); B1's decode rate is not for reading
from a ``--stages`` run.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import inspect
import os
import sys
import time
from collections.abc import Callable
from typing import Any

OUT = os.environ.get("STELLARCHAT_STAGES_FILE")
_file: Any = None


def stamp(stage: str) -> None:
    global _file
    if _file is None:
        _file = open(OUT, "a", buffering=1)  # noqa: SIM115 - open for the process's life
    _file.write(f"{time.perf_counter():.6f} {stage}\n")


def around(func: Callable[..., Any], enter: str | None, leave: str | None) -> Callable[..., Any]:
    """``func`` stamping ``enter`` when called and ``leave`` when it returns; for a function
    that returns an awaitable (a coroutine function, ``database_sync_to_async``), when that
    is done."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if enter:
            stamp(enter)
        result = func(*args, **kwargs)
        if not leave:
            return result
        if not inspect.isawaitable(result):
            stamp(leave)
            return result

        async def finish() -> Any:
            value = await result
            stamp(leave)
            return value

        return finish()

    return wrapper


def popped(func: Callable[..., Any]) -> Callable[..., Any]:
    """The Redis layer's pop, stamped with what it popped."""

    @functools.wraps(func)
    async def receive_single(self: Any, channel: str) -> Any:
        result = await func(self, channel)
        stamp(f"redis: popped {result[1].get('type')} ({'web' if '!' in channel else 'worker'})")
        return result

    return receive_single


def first_words(func: Callable[..., Any]) -> Callable[..., Any]:
    """The model process's request: read, then its first words out of a step."""

    @functools.wraps(func)
    def _submit(self: Any, turns: Any, options: Any, cancel: Any, emit: Any, **kw: Any) -> Any:
        stamp("model: request read")
        first = True

        def stamped(item: Any) -> None:
            nonlocal first
            if first and isinstance(item, str):
                first = False
                stamp("model: first words picked")
            emit(item)

        return func(self, turns, options, cancel, stamped, **kw)

    return _submit


# module -> [(attribute path, wrap)]
PATCHES: dict[str, list[tuple[str, Callable[[Any], Any]]]] = {
    "chat.consumers": [
        ("ChatConsumer.receive", lambda f: around(f, "web: frame received", None)),
        ("ChatConsumer.stream_start", lambda f: around(f, "web: stream.start to socket", None)),
        ("ChatConsumer.stream_delta", lambda f: around(f, "web: delta to socket", None)),
    ],
    "chat.limits": [("hit_message_rate", lambda f: around(f, None, "web: rate checked"))],
    "chat.actions": [
        ("_start_conversation", lambda f: around(f, None, "web: conversation saved")),
        ("start_reply", lambda f: around(f, "web: start_reply entered", "web: job queued")),
    ],
    "inference.worker": [
        ("InferenceConsumer.inference_generate", lambda f: around(f, "worker: job read", None)),
    ],
    "inference.runner": [("astream", lambda f: around(f, "worker: model called", None))],
    "chat.replies": [("_ReplyState.add", lambda f: around(f, "worker: first words back", None))],
    "inference.backends.hf": [("TransformersBackend._submit", first_words)],
    "stellarchat.redis_layer": [("RedisChannelLayer.receive_single", popped)],
}


def patch(module: Any, patches: list[tuple[str, Callable[[Any], Any]]]) -> None:
    for path, wrap in patches:
        *owners, name = path.split(".")
        owner = module
        for part in owners:
            owner = getattr(owner, part)
        setattr(owner, name, wrap(owner.__dict__[name] if owners else getattr(owner, name)))


class Patcher(importlib.abc.MetaPathFinder):
    """Wraps the listed modules' functions right after each module runs."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in PATCHES:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            patch(module, PATCHES[name])

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if OUT:
    sys.meta_path.insert(0, Patcher())
