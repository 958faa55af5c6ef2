"""Inference workers announce themselves in the shared cache, so any web process can tell
whether a worker is alive and has its model loaded (``/readyz``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from django.core.cache import cache

logger = logging.getLogger(__name__)

ALIVE_KEY = "stellarchat:worker:alive"
READY_KEY = "stellarchat:worker:model-ready"
INTERVAL = 2.0
FRESH = 10.0  # a beat older than this means no worker is there


def model_key(name: str) -> str:
    """The key a worker beats under while it has model ``name`` loaded."""
    return f"{READY_KEY}:{name}"


async def beat(backends: Mapping[str, Any]) -> None:
    """One beat: "a worker is alive", and for each of ``backends`` (model name: backend)
    whose model is loaded, "this model is loaded" (and "a model is loaded", for /readyz).
    Also called the moment a model has loaded, so /readyz says so at once rather than on the
    next beat."""
    try:
        now = time.time()
        await cache.aset(ALIVE_KEY, now, int(FRESH * 3))
        ready = {name: now for name, b in backends.items() if getattr(b, "ready", True)}
        if ready:
            await cache.aset(READY_KEY, now, int(FRESH * 3))
            await cache.aset_many({model_key(n): t for n, t in ready.items()}, int(FRESH * 3))
    except Exception as exc:  # the cache (Redis) may be down: keep trying
        logger.warning("worker heartbeat failed: %s", exc)


async def beat_forever(
    backends: Callable[[], Mapping[str, Any]], *, stop: asyncio.Event | None = None
) -> None:
    """Every INTERVAL seconds, until ``stop`` is set (a draining worker takes no new job, so
    it no longer says it is there)."""
    while stop is None or not stop.is_set():
        await beat(backends())
        await asyncio.sleep(INTERVAL)


def fresh(value: Any, now: float | None = None) -> bool:
    """Whether a beat's time is recent enough to count."""
    now = time.time() if now is None else now
    return isinstance(value, int | float) and now - value <= FRESH


def models_loaded(names: list[str]) -> set[str]:
    """Which of ``names`` some worker has loaded now (by their recent beats)."""
    beats = cache.get_many([model_key(n) for n in names])
    now = time.time()
    return {n for n in names if fresh(beats.get(model_key(n)), now)}


async def status() -> dict[str, bool]:
    """Whether a worker beat recently, and whether one with a loaded model did."""
    now = time.time()
    alive, ready = await cache.aget(ALIVE_KEY), await cache.aget(READY_KEY)

    return {"worker": fresh(alive, now), "model": fresh(ready, now)}
