"""The embedded default's moving windows (``chat.limits.MemoryWindows``) count exactly as the
``limits`` library's own in-memory storage does, without its background sweep."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from limits import RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from chat.limits import MemoryWindows


@pytest.mark.asyncio
async def test_same_answers_as_the_library_over_a_random_run(monkeypatch: Any) -> None:
    now = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])  # both read time.time()
    ours = MemoryWindows()
    theirs = MovingWindowRateLimiter(storage_from_string("async+memory://"))  # type: ignore[arg-type]
    items = [RateLimitItemPerMinute(5), RateLimitItemPerSecond(3), RateLimitItemPerMinute(1)]
    rng = random.Random(7)
    refused = 0
    for _ in range(1500):
        # (never a whole window apart to the microsecond: there the library's hit and its
        # window's count disagree with each other)
        now[0] += rng.choice([0.0, 0.0, 0.2, 1.0, 7.0, 30.0]) + rng.uniform(0, 1e-3)
        item = rng.choice(items)
        key = rng.choice(["messages", "handshakes"]), rng.choice(["1", "2", "127.0.0.9"])
        cost = rng.choice([1, 1, 1, 2])
        got = await ours.hit(item, *key, cost=cost)
        assert got == await theirs.hit(item, *key, cost=cost)
        refused += not got
        mine, its = (
            await ours.get_window_stats(item, *key),
            await theirs.get_window_stats(item, *key),
        )
        assert mine.remaining == its.remaining
        if its.remaining < item.amount:  # (an empty window: the library's reset time is that
            assert mine.reset_time == its.reset_time  # of an expired event; ours a minute on)
    assert 100 < refused < 1400  # the run met both answers many times


@pytest.mark.asyncio
async def test_a_full_window_says_when_it_frees() -> None:
    now = [50.0]
    windows = MemoryWindows(clock=lambda: now[0])
    item = RateLimitItemPerMinute(2)
    assert await windows.hit(item, "handshakes", "10.0.0.1")
    now[0] += 10
    assert await windows.hit(item, "handshakes", "10.0.0.1")
    assert not await windows.hit(item, "handshakes", "10.0.0.1")  # refused: not counted
    stats = await windows.get_window_stats(item, "handshakes", "10.0.0.1")
    assert (stats.reset_time, stats.remaining) == (110.0, 0)  # the first hit's minute
    assert await windows.hit(item, "handshakes", "10.0.0.2")  # another address: its own
    now[0] = 110.0  # a whole minute after the first: it still counts
    assert not await windows.hit(item, "handshakes", "10.0.0.1")
    now[0] = 110.001
    assert await windows.hit(item, "handshakes", "10.0.0.1")


@pytest.mark.asyncio
async def test_addresses_nobody_hits_any_more_are_forgotten() -> None:
    now = [0.0]
    windows = MemoryWindows(clock=lambda: now[0])
    windows.SWEEP_EVERY = 100
    item = RateLimitItemPerMinute(60)
    for i in range(99):  # a flood from 99 addresses, once each
        await windows.hit(item, "handshakes", f"10.0.{i // 250}.{i % 250}")
    assert len(windows.events) == 99
    now[0] = 61.0
    await windows.hit(item, "handshakes", "10.9.9.9")  # the 100th hit sweeps
    assert list(windows.events) == [item.key_for("handshakes", "10.9.9.9")]
