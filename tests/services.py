"""Where the real services live for tests, and whether they answer."""

from __future__ import annotations

import os
import socket

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
