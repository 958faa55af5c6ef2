"""Sockets of one web process coming and going around one that stays, on a channel layer
against a real Redis: shared by tests/deploy/test_redis_layer.py and bench/layer_receive.py;
and reading a channel dry, shared by the layer tests."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

from channels_redis.core import RedisChannelLayer as Stock


async def drain(layer: Any, channel: str, quiet: float = 0.5) -> list[Any]:
    """Everything queued for ``channel``: read until nothing more comes for ``quiet`` s."""
    got = []
    while True:
        try:
            got.append(await asyncio.wait_for(layer.receive(channel), quiet))
        except TimeoutError:
            return got


def make(cls: type, url: str, **config: Any) -> Any:
    return cls(hosts=[{"address": url, "socket_timeout": None}], **config)


async def churn(cls: type, url: str, count: int, seed: int = 7) -> tuple[list[int], int]:
    """One socket receives ``count`` numbered messages (sent by another process) while sockets
    of the same process open and close around it (their receives cancelled at random moments)
    and the event loop is now and then busy, as a loaded web process's is. Returns what it
    got, in order, and how many of the other sockets closed meanwhile."""
    layer, sender = make(cls, url, capacity=100_000), make(Stock, url, capacity=100_000)
    staying = await layer.new_channel()
    got: list[int] = []
    closed = 0
    rng = random.Random(seed)

    async def receive_all() -> None:
        while len(got) < count:
            got.append((await layer.receive(staying))["i"])

    async def come_and_go() -> None:
        nonlocal closed
        while True:
            receiving = asyncio.ensure_future(layer.receive(await layer.new_channel()))
            await asyncio.sleep(rng.random() * 0.003)
            receiving.cancel()
            await asyncio.wait({receiving})  # (a cancellation of this task itself goes through)
            closed += 1

    async def busy() -> None:
        while True:
            time.sleep(0.001)
            await asyncio.sleep(0.001)

    receiver = asyncio.ensure_future(receive_all())
    others = [asyncio.ensure_future(c()) for c in (come_and_go, come_and_go, busy)]
    try:
        for i in range(count):
            await sender.send(staying, {"type": "stream.delta", "i": i})
            await asyncio.sleep(rng.random() * 0.002)
        for task in others:  # the churn stops with the sending
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(receiver), 3)
    finally:
        for task in [receiver, *others]:
            task.cancel()
        await asyncio.gather(receiver, *others, return_exceptions=True)
        await layer.close_pools()
        await sender.close_pools()
    return got, closed
