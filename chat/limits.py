"""Per-user limits, shared by the chat WebSocket and the REST API.

- Messages per minute: a moving window from the ``limits`` library (the rate-limiting core of
  Flask-Limiter and SlowAPI), stored in Redis when ``REDIS_URL`` is set, so every web process
  counts against one window; in process memory in the embedded default (one process).
- Concurrent streams and tokens per day: counted in the database, where replies and their
  token counts live, inside the transaction that starts a reply (``check_capacity``), so two
  requests racing for the last slot cannot both win and a refusal saves nothing.

Every limit is off at 0.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from limits.util import WindowStats


class RateLimited(Exception):
    """A limit refused the request. ``retry_after`` is in whole seconds (at least 1)."""

    def __init__(self, limit: str, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.limit = limit  # "rate", "concurrency" or "tokens"
        self.detail = detail
        self.retry_after = max(1, retry_after)


@dataclass(frozen=True)
class RateState:
    limit: int
    remaining: int
    reset_after: int


class MemoryWindows:
    """Moving windows in this process's memory, for the embedded default: ``hit`` and
    ``get_window_stats`` as ``limits``' ``MovingWindowRateLimiter`` has them, the same
    counting (a hit is refused when the window already holds ``limit`` events).

    Why not the library's ``async+memory://`` storage: every hit there starts a sweep of all
    its keys, and the sweep hops to a thread for each key while holding that key's lock. Under
    a flood of handshakes the sweeps ran back to back: 7 % of the event loop's time and most
    of its hops to threads (py-spy, bench/abuse.py), and a person's message could wait for
    its key's lock. Here a key's old events go when the key is hit, and keys nobody hits are
    dropped every ``SWEEP_EVERY`` hits."""

    SWEEP_EVERY = 4096

    def __init__(self, clock: Any = None) -> None:
        self.clock = clock if clock is not None else time.time
        self.events: dict[str, deque[float]] = {}  # key -> event times, oldest first
        self.expiries: dict[str, float] = {}  # key -> its window's length
        self.hits = 0

    def _window(self, key: str, expiry: float, now: float) -> deque[float]:
        events = self.events.get(key)
        if events is None:
            events = self.events[key] = deque()
            self.expiries[key] = expiry
        while events and events[0] < now - expiry:  # an event a whole window old still counts
            events.popleft()
        return events

    async def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        now = self.clock()
        key, expiry = item.key_for(*identifiers), item.get_expiry()
        self.hits += 1
        if self.hits % self.SWEEP_EVERY == 0:
            self._sweep(now)
        events = self._window(key, expiry, now)
        if len(events) + cost > item.amount:
            return False
        events.extend([now] * cost)
        return True

    async def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        now = self.clock()
        events = self._window(item.key_for(*identifiers), item.get_expiry(), now)
        start = events[0] if events else now
        return WindowStats(start + item.get_expiry(), item.amount - len(events))

    def _sweep(self, now: float) -> None:
        """Forget the keys whose windows are empty (an address seen once, long ago)."""
        for key in [k for k, e in self.events.items() if not e or e[-1] < now - self.expiries[k]]:
            del self.events[key]
            del self.expiries[key]


_limiters: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, MovingWindowRateLimiter | MemoryWindows
] = weakref.WeakKeyDictionary()


def shared_redis_url() -> str | None:
    """The same Redis as the channel layer (and cache), however settings name it; None when
    embedded (limits then live in process memory)."""
    host = settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("hosts", [None])[0]
    return host.get("address") if isinstance(host, dict) else host


def window_limiter() -> MovingWindowRateLimiter | MemoryWindows:
    """One limiter per event loop: redis-py's asyncio connections belong to the loop that
    opened them. In Redis when the project has one, else in this process (``MemoryWindows``)."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        redis_url = shared_redis_url()
        if redis_url:
            storage = storage_from_string(
                f"async+{redis_url}", implementation="redispy", key_prefix="stellarchat-limits"
            )
            limiter = MovingWindowRateLimiter(storage)  # type: ignore[arg-type]
        else:
            limiter = MemoryWindows()
        _limiters[loop] = limiter
    return limiter


async def hit_message_rate(user_id: int, *, report: bool = True) -> RateState | None:
    """Count one message against the user's per-minute window; raise ``RateLimited`` when
    the window is full (the refused attempt is not counted). None when the limit is off.

    ``report=False``: the caller has no use for the window's state when the message is
    allowed (the chat socket; the REST API sends it as headers), so it is not read: with
    Redis that is one trip less on every message's way to its first token."""
    per_minute = settings.STELLARCHAT_RATE_LIMIT_PER_MINUTE
    if not per_minute:
        return None
    limiter = window_limiter()
    item = RateLimitItemPerMinute(per_minute)
    allowed = await limiter.hit(item, "messages", str(user_id))
    if allowed and not report:
        return None
    stats = await limiter.get_window_stats(item, "messages", str(user_id))
    reset_after = max(1, math.ceil(stats.reset_time - time.time()))
    if not allowed:
        raise RateLimited(
            "rate",
            f"at most {per_minute} messages per minute; try again in {reset_after} s",
            retry_after=reset_after,
        )
    return RateState(limit=per_minute, remaining=stats.remaining, reset_after=reset_after)


def seconds_to_midnight_utc(now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil((midnight - now).total_seconds()))


def check_capacity(*, owner_id: Any) -> None:
    """Concurrent streams and today's tokens for one user; call inside the transaction that
    starts a reply (it locks the user's row, so concurrent starts are counted one by one)."""
    from django.contrib.auth import get_user_model
    from django.db.models import Sum
    from django.db.models.functions import Coalesce

    from chat.models import Message

    streams = settings.STELLARCHAT_MAX_CONCURRENT_STREAMS
    quota = settings.STELLARCHAT_TOKENS_PER_DAY
    if not streams and not quota:
        return
    get_user_model().objects.select_for_update().filter(pk=owner_id).values_list("pk").get()
    mine = Message.objects.filter(conversation__owner_id=owner_id)
    if streams:
        running = mine.filter(status=Message.Status.STREAMING).count()
        if running >= streams:
            raise RateLimited(
                "concurrency",
                f"at most {streams} replies may stream at once; wait for one to finish",
                retry_after=2,
            )
    if quota:
        day_start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        used = mine.filter(role=Message.Role.ASSISTANT, created_at__gte=day_start).aggregate(
            total=Coalesce(Sum("prompt_tokens"), 0) + Coalesce(Sum("completion_tokens"), 0)
        )["total"]
        if used >= quota:
            raise RateLimited(
                "tokens",
                f"the daily quota of {quota} tokens is used up; it renews at 00:00 UTC",
                retry_after=seconds_to_midnight_utc(),
            )
