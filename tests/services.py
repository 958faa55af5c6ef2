"""Where the real services live for tests, and whether they answer."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

POSTGRES_URL = os.environ.get(
    "STELLARCHAT_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("STELLARCHAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(
            POSTGRES_URL.replace("postgres://", "postgresql://", 1), connect_timeout=2
        ):
            return True
    except Exception:
        return False


def redis_available() -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(REDIS_URL)
    return _port_open(parts.hostname or "127.0.0.1", parts.port or 6379)


def require(name: str, available: bool) -> None:
    """Skip loudly without the service; under CI its absence is a failure."""
    if available:
        return
    message = f"{name} is not reachable on this machine"
    if in_ci():
        pytest.fail(f"{message}, and CI is set: tests that need it must run")
    pytest.skip(f"!!! {message}: skipping a test that needs it !!!")


def redis_channel_layer(settings: Any, index: int) -> Iterator[Any]:
    """Point ``settings`` at a Redis channel layer on database ``index`` of the local Redis,
    emptied before and after; yields a client of that database (use with ``yield from`` in a
    fixture). Code that shares the layer's Redis (limits, socket counts) then uses it too."""
    import redis

    require("Redis", redis_available())
    url = REDIS_URL.rsplit("/", 1)[0] + f"/{index}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": url, "socket_timeout": None}]},
        }
    }
    yield client
    client.flushdb()
    client.close()
