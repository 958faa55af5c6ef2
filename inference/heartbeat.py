"""Inference workers announce themselves in the shared cache, so any web process can tell
whether a worker is alive and has its model loaded (``/readyz``)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from django.core.cache import cache

logger = logging.getLogger(__name__)

ALIVE_KEY = "stellarchat:worker:alive"
READY_KEY = "stellarchat:worker:model-ready"
INTERVAL = 2.0
FRESH = 10.0  # a beat older than this means no worker is there


async def beat(backend: Any) -> None:
    """One beat: "a worker is alive", and "its model is loaded" if it is. Also called the
    moment the model has loaded, so /readyz says so at once rather than on the next beat."""
    try:
        now = time.time()
        await cache.aset(ALIVE_KEY, now, int(FRESH * 3))
        if getattr(backend, "ready", True):
            await cache.aset(READY_KEY, now, int(FRESH * 3))
    except Exception as exc:  # the cache (Redis) may be down: keep trying
        logger.warning("worker heartbeat failed: %s", exc)


async def beat_forever(backend: Any, *, stop: asyncio.Event | None = None) -> None:
    """Every INTERVAL seconds, until ``stop`` is set (a draining worker takes no new job, so
    it no longer says it is there)."""
    while stop is None or not stop.is_set():
        await beat(backend)
        await asyncio.sleep(INTERVAL)


async def status() -> dict[str, bool]:
    """Whether a worker beat recently, and whether one with a loaded model did."""
    now = time.time()
    alive, ready = await cache.aget(ALIVE_KEY), await cache.aget(READY_KEY)

    def fresh(value: Any) -> bool:
        return isinstance(value, int | float) and now - value <= FRESH

    return {"worker": fresh(alive), "model": fresh(ready)}
