"""What one account may do to the chat socket's server, so that it cannot slow everyone else.

The per-minute message limits (``chat.limits``) count messages; these count what costs the
server before any message exists (docs/websocket-api.md, "Limits"; every one off at 0):

- ``socket_acquire`` / ``socket_release``: open sockets per person
  (``STELLARCHAT_MAX_SOCKETS_PER_USER``), across web processes when ``REDIS_URL`` is set.
- ``HandshakeThrottle``: handshakes per client address per minute
  (``STELLARCHAT_WS_HANDSHAKES_PER_MINUTE``), before authentication costs anything; refused
  with HTTP 429.

Frames per socket and the bound on a socket's unsent data live with daphne's protocol
(``stellarchat.wsserver``), where a refused frame costs the least.
If Redis is unreachable, sockets and handshakes are let through (with a warning) rather than
refused: people must be able to reconnect while the broker recovers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
import uuid
import weakref
from collections import Counter
from typing import Any

from django.conf import settings
from limits import RateLimitItemPerMinute

from chat.limits import shared_redis_url, window_limiter
from chat.throttle import address_from
from stellarchat import metrics, wsserver
from stellarchat.logs import log_sometimes

logger = logging.getLogger(__name__)

CLOSE_TOO_MANY_SOCKETS = 4429  # close code: the person has too many sockets open already


# --- sockets per person --------------------------------------------------------------------

# Each web process keeps its own sockets per person in memory (the truth for that process) and,
# with Redis, mirrors them into a hash of its own that lives LEASE seconds unless the process
# rewrites it (every LEASE / 3 s). A handshake sums the person's field over the hashes of the
# processes still alive: a process that dies takes its sockets' slots with it within LEASE.
LEASE = 15
PREFIX = "stellarchat-sockets:"
PROCESSES = PREFIX + "processes"

ACQUIRE = """
local total = 0
for _, p in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local n = redis.call('HGET', ARGV[5] .. p, ARGV[1])
  if n then
    total = total + tonumber(n)
  elseif redis.call('EXISTS', ARGV[5] .. p) == 0 then
    redis.call('SREM', KEYS[1], p)
  end
end
if total >= tonumber(ARGV[2]) then return -1 end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[1], ARGV[3])
return total + 1
"""
COUNT = """
local total = 0
for _, p in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  total = total + tonumber(redis.call('HGET', ARGV[2] .. p, ARGV[1]) or '0')
end
return total
"""
RELEASE = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return n
"""

PROCESS_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
_mine: Counter[int] = Counter()  # this process's open sockets per person
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
_heartbeats: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
    weakref.WeakKeyDictionary()
)


PROCESS_PREFIX = PREFIX + "process:"  # + a process's id: its hash of sockets per person


def _process_key() -> str:
    return PROCESS_PREFIX + PROCESS_ID


def _redis(url: str) -> Any:
    """One client per event loop (redis-py's asyncio connections belong to their loop), and
    the heartbeat that keeps this process's hash alive."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        _clients[loop] = client
        _heartbeats[loop] = loop.create_task(_heartbeat(client))
    return client


async def _rewrite(client: Any) -> None:
    """Put this process's counts in its hash as they are in memory and renew its lease (so a
    count that drifted, or a Redis that restarted empty, is right again within LEASE / 3)."""
    key = _process_key()
    counts = {str(user): n for user, n in _mine.items() if n > 0}
    async with client.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        if counts:
            pipe.hset(key, mapping=counts)
            pipe.expire(key, LEASE)
            pipe.sadd(PROCESSES, PROCESS_ID)
        await pipe.execute()


async def _heartbeat(client: Any) -> None:
    while True:
        await asyncio.sleep(LEASE / 3)
        try:
            await _rewrite(client)
        except Exception as exc:  # Redis away: the next beat tries again
            logger.warning("socket counts not renewed: Redis unreachable: %s", exc)


async def socket_acquire(*, user_id: int) -> bool:
    """Count one more socket of the person; False (and nothing counted) when they have the
    most they may have open already."""
    limit = settings.STELLARCHAT_MAX_SOCKETS_PER_USER
    _mine[user_id] += 1  # first, so a heartbeat in between writes it rather than loses it
    if not limit:
        return True
    url = shared_redis_url()
    if not url:
        if _mine[user_id] <= limit:
            return True
    else:
        try:
            total = await _redis(url).eval(
                ACQUIRE,
                2,
                PROCESSES,
                _process_key(),
                user_id,
                limit,
                PROCESS_ID,
                LEASE,
                PROCESS_PREFIX,
            )
        except Exception as exc:
            logger.warning("socket limit not applied: Redis unreachable: %s", exc)
            return True
        if int(total) >= 0:
            return True
    _forget(user_id)
    metrics.websocket_refused("sockets")
    log_sometimes(
        logger, f"sockets {user_id}", "refused a socket of user %s: %d open already", user_id, limit
    )
    return False


async def socket_release(*, user_id: int) -> None:
    """The person closed a socket that ``socket_acquire`` counted."""
    _forget(user_id)
    url = shared_redis_url()
    if url and settings.STELLARCHAT_MAX_SOCKETS_PER_USER:
        try:
            await _redis(url).eval(RELEASE, 1, _process_key(), user_id)
        except Exception as exc:  # the heartbeat writes the right count when Redis is back
            logger.warning("socket count not released: Redis unreachable: %s", exc)


async def socket_full(*, user_id: int) -> bool:
    """Whether the person has the most sockets they may have open (counting nothing)."""
    limit = settings.STELLARCHAT_MAX_SOCKETS_PER_USER
    if not limit:
        return False
    url = shared_redis_url()
    if not url:
        return _mine[user_id] >= limit
    try:
        total = await _redis(url).eval(COUNT, 1, PROCESSES, user_id, PROCESS_PREFIX)
    except Exception:
        return False  # the full check (socket_acquire) says why
    return int(total) >= limit


def _forget(user_id: int) -> None:
    _mine[user_id] -= 1
    if _mine[user_id] <= 0:
        del _mine[user_id]


# A person at their limit who keeps opening sockets (a script, hundreds of tabs) is known by
# their session cookie the second time: refused without the session and user look-ups and the
# consumer (about 3 ms of the web process's CPU each, measured, against well under 1 ms).
_full_sessions: dict[str, int] = {}  # session key -> its user, last refused for being full


def remember_full(session_key: str | None, user_id: int) -> None:
    if not session_key:
        return
    if len(_full_sessions) > 10_000:  # very many: start over rather than grow
        _full_sessions.clear()
    _full_sessions[session_key] = user_id


class FullPersonGate:
    """ASGI middleware between the cookie and session middlewares: a handshake whose session
    was last refused for too many sockets, while its person still has them all open, is
    refused at once the same way (accepted, closed with 4429). Nothing is granted without
    authentication: a stale entry can only refuse, and only while that person is full."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        key = scope.get("cookies", {}).get(settings.SESSION_COOKIE_NAME)
        user_id = _full_sessions.get(key) if key else None
        if user_id is not None:
            if await socket_full(user_id=user_id):
                metrics.websocket_refused("sockets")
                await receive()  # websocket.connect
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": CLOSE_TOO_MANY_SOCKETS})
                return None
            _full_sessions.pop(key, None)
        return await self.app(scope, receive, send)


def reset() -> None:
    """Forget this process's counts (tests: one process, many sockets left open on purpose)."""
    _mine.clear()
    _full_sessions.clear()


# --- handshakes per client address ---------------------------------------------------------


def handshake_address(scope: dict[str, Any]) -> str:
    """The client's address of a WebSocket handshake, as for HTTP (``X-Forwarded-For`` only
    as far as ``STELLARCHAT_TRUSTED_PROXIES`` says)."""
    client = scope.get("client") or [""]
    forwarded = b",".join(
        value for name, value in scope.get("headers", []) if name.lower() == b"x-forwarded-for"
    )
    return address_from(str(client[0] or ""), forwarded.decode("latin-1"))


async def handshake_allowed(address: str) -> tuple[bool, int]:
    """Count one handshake from ``address``; (allowed, seconds until the next may come)."""
    per_minute = settings.STELLARCHAT_WS_HANDSHAKES_PER_MINUTE
    if not per_minute:
        return True, 0
    item = RateLimitItemPerMinute(per_minute)
    try:
        limiter = window_limiter()
        if await limiter.hit(item, "handshakes", address):
            return True, 0
        stats = await limiter.get_window_stats(item, "handshakes", address)
    except Exception as exc:
        logger.warning("handshake limit not applied: its storage is unreachable: %s", exc)
        return True, 0
    return False, max(1, math.ceil(stats.reset_time - time.time()))


class HandshakeThrottle:
    """ASGI middleware in front of the chat socket: too many handshakes from one address get
    HTTP 429 before any session or key is looked up (403 where the server cannot say 429)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        address = handshake_address(scope)
        allowed, retry_after = await handshake_allowed(address)
        if allowed:
            return await self.app(scope, receive, send)
        metrics.websocket_refused("handshakes")
        peer = str((scope.get("client") or [""])[0] or "")
        wsserver.handshake_refused(address, peer, retry_after)  # the next cost daphne alone
        log_sometimes(
            logger, address, "refusing WebSocket handshakes from %s: too many a minute", address
        )
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            headers = [(b"retry-after", str(retry_after).encode())]
            await send({"type": "websocket.http.response.start", "status": 429, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": b""})
        else:
            await send({"type": "websocket.close"})
