"""Database reads that one account can multiply, on threads of their own.

Channels runs every ``database_sync_to_async`` call of a web process on one thread, in the
order they come. That thread also saves people's messages, so whatever queues there is waited
for by every time to first token. A flood queues reads: each handshake reads its session and
user, each subscribe its conversation and the replies streaming in it. In production's shape
(PostgreSQL) one account's 1,000 handshakes, 200 sockets and a frame flood kept that thread
busy for 1.7 s, and a person's message waited 76 ms on average for it (217 at most) at each of
its steps there; with these reads on their own threads, 3.6 ms (``bench/abuse.py --topology
redis`` and a trace of the pools' jobs: bench/README.md, where what still slows those first
tokens, the two cores, is measured too).

``reading`` runs such a read on a small pool of its own instead. A read must only read: the
write thread's ordering (a message saved before the next frame of its socket is handled) is
not kept here. Django's connections are per thread, so each reading thread has its own (from
the pool in production; ``close_old_connections`` around each call, as Channels does).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from channels.auth import AuthMiddleware
from channels.db import DatabaseSyncToAsync

P = ParamSpec("P")
R = TypeVar("R")

# Two: one can wait on the database while the other runs Python (the GIL lets no more run).
READERS = 2
_pool = ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="db-reads")


def reading(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """``func`` (a read) as an awaitable that runs on the reading threads."""
    call: Any = DatabaseSyncToAsync(func, thread_sensitive=False, executor=_pool)
    return call  # type: ignore[no-any-return]


def _get_user(scope: dict[str, Any]) -> Any:
    """Channels' own ``get_user`` (its session read, user read and session check), undecorated.
    On a session whose check fails it also flushes the session: that person's own write."""
    from channels.auth import get_user

    return get_user.func(scope)  # type: ignore[attr-defined]


class ReadingAuthMiddleware(AuthMiddleware):
    """Channels' ``AuthMiddleware``, with a handshake's session and user read on the reading
    threads rather than on the thread that saves messages."""

    async def resolve_scope(self, scope: dict[str, Any]) -> None:
        scope["user"]._wrapped = await reading(_get_user)(scope)


def close_connections() -> None:
    """Close each reading thread's database connections (a test database is dropped after
    its tests only once nothing holds it)."""
    from django.db import connections

    barrier = threading.Barrier(READERS)

    def close() -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=5)  # one call per thread: each waits for the other
        connections.close_all()

    for future in [_pool.submit(close) for _ in range(READERS)]:
        future.result()
