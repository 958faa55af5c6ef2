"""Log-in throttling: failed log-ins are counted per username and per client address, and
once either is over its limit the login page answers 429 until the window moves on.

The windows are moving windows from the ``limits`` library (as for message rates in
``chat.limits``), kept in the shared Redis when ``REDIS_URL`` is set, so every web process
counts the same failures; in process memory in the embedded default. Three tiers make the
delay grow: ``N`` failures per ``M`` minutes, ``2N`` per ``4M``, ``4N`` per ``16M`` (defaults:
5 per 15 min, 10 per hour, 20 per 4 hours per username; four times that per address, which
several people behind one NAT may share). Only failures count: a refused attempt checks no
password and counts nothing, so a lock always ends by itself. A success clears the
username's count (not the address's: one valid account must not reset a guessing spree).

If Redis is unreachable, log-ins go on unthrottled (with a warning) rather than failing:
people must be able to log in while the broker recovers.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from django.http import HttpRequest
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from chat.limits import shared_redis_url

logger = logging.getLogger(__name__)

PER_ADDRESS_FACTOR = 4  # an address may be many people (NAT, an office): a looser limit
TIERS = ((1, 1), (2, 4), (4, 16))  # (failures x N, window x M): the delay grows


@cache
def _limiter(redis_url: str | None) -> MovingWindowRateLimiter:
    """One limiter per process and storage (cached by URL, so tests can switch settings)."""
    if redis_url:
        if redis_url.startswith("unix://"):  # what REDIS_URL accepts; limits' name for it
            redis_url = "redis+" + redis_url
        # Import it whole first: limits reads redis.__version__ from sys.modules without
        # importing, so a thread racing another one's import saw "0.0.0" and raised
        # ConfigurationError (concurrent first log-ins of a fresh web process answered 500).
        import redis  # noqa: F401

        storage = storage_from_string(
            redis_url,
            key_prefix="stellarchat-login",
            wrap_exceptions=True,
            socket_timeout=2,
            socket_connect_timeout=2,
        )
    else:
        storage = storage_from_string("memory://", wrap_exceptions=True)
    return MovingWindowRateLimiter(storage)


def reset() -> None:
    """Forget every count of this process's memory storage (tests; Redis keys expire)."""
    _limiter(None).storage.reset()


def client_address(request: HttpRequest) -> str:
    """The client's IP address of an HTTP request (see ``address_from``)."""
    return address_from(
        request.META.get("REMOTE_ADDR") or "", request.META.get("HTTP_X_FORWARDED_FOR", "")
    )


def address_from(peer: str, forwarded_for: str) -> str:
    """The client's IP address from the socket's peer and ``X-Forwarded-For`` (HTTP requests
    and WebSocket handshakes alike). The header is trusted only when
    ``STELLARCHAT_TRUSTED_PROXIES`` says how many proxies in front of us append to it: the
    entry that many places from the right was written by our outermost proxy; anything to its
    left the client could have made up. With 0 (the default), only the socket's peer counts."""
    peer = peer or "unknown"
    hops = settings.STELLARCHAT_TRUSTED_PROXIES
    if not hops:
        return peer
    chain = [part.strip() for part in forwarded_for.split(",")]
    chain = [part for part in chain if part]
    return chain[-hops] if len(chain) >= hops else peer


@dataclass(frozen=True)
class LoginAttempt:
    """The two counters one log-in attempt is charged to."""

    username: str
    address: str

    @classmethod
    def from_request(cls, request: HttpRequest) -> LoginAttempt:
        username = str(request.POST.get("username", ""))
        return cls(username=username, address=client_address(request))

    def _keys(self) -> list[tuple[RateLimitItem, str, str]]:
        limit = settings.STELLARCHAT_LOGIN_FAILURE_LIMIT
        minutes = settings.STELLARCHAT_LOGIN_LOCKOUT_MINUTES
        # Hashed: a username is any text the client sends, of any length.
        name = hashlib.sha256(self.username.casefold().encode("utf-8", "replace")).hexdigest()
        keys = []
        for count, span in TIERS:
            keys.append((RateLimitItemPerMinute(limit * count, span * minutes), "user", name))
            keys.append(
                (
                    RateLimitItemPerMinute(limit * count * PER_ADDRESS_FACTOR, span * minutes),
                    "addr",
                    self.address,
                )
            )
        return keys

    def locked_for(self) -> int:
        """Seconds until another attempt is allowed; 0 when it is allowed now."""
        if not settings.STELLARCHAT_LOGIN_FAILURE_LIMIT:
            return 0
        limiter = _limiter(shared_redis_url())
        wait = 0.0
        try:
            for item, kind, ident in self._keys():
                if not limiter.test(item, "login", kind, ident):
                    stats = limiter.get_window_stats(item, "login", kind, ident)
                    wait = max(wait, stats.reset_time - time.time())
        except StorageError as exc:
            logger.warning("log-in throttling is off: its storage is unreachable: %s", exc)
            return 0
        return max(1, math.ceil(wait)) if wait > 0 else 0

    def failed(self) -> None:
        """Count one failed log-in against the username and the address."""
        if not settings.STELLARCHAT_LOGIN_FAILURE_LIMIT:
            return
        limiter = _limiter(shared_redis_url())
        try:
            for item, kind, ident in self._keys():
                limiter.hit(item, "login", kind, ident)
        except StorageError as exc:
            logger.warning("log-in throttling is off: its storage is unreachable: %s", exc)
        logger.info("failed log-in from %s", self.address)

    def succeeded(self) -> None:
        """Clear the username's failures: its owner has just proved who they are."""
        if not settings.STELLARCHAT_LOGIN_FAILURE_LIMIT:
            return
        limiter = _limiter(shared_redis_url())
        try:
            for item, kind, ident in self._keys():
                if kind == "user":
                    limiter.clear(item, "login", kind, ident)
        except StorageError as exc:
            logger.warning("log-in throttling is off: its storage is unreachable: %s", exc)
