"""Start the real thing: a daphne process serving stellarchat.asgi on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BASE = Path(__file__).resolve().parents[2]


APP_PREFIXES = ("DJANGO_", "STELLARCHAT_")
APP_NAMES = ("DATABASE_URL", "REDIS_URL")


def clean_env(**env: str) -> dict[str, str]:
    """The machine's environment without the test run's app settings, plus ``env``.

    A subprocess must see only what the test gives it, as a fresh `make run` would.
    """
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(APP_PREFIXES) and k not in APP_NAMES
    }
    return {**base, **env}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextmanager
def daphne(env: dict[str, str], *, migrate: bool = True) -> Iterator[str]:
    """Yield the base URL of a freshly started daphne; stop it afterwards."""
    full_env = clean_env(**env)
    python = sys.executable
    if migrate:
        subprocess.run(
            [python, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=BASE,
            env=full_env,
            check=True,
            timeout=120,
        )
    port = free_port()
    # A file, not a pipe: a chatty server must never block on a full pipe.
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [
            python,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "stellarchat.asgi:application",
        ],
        cwd=BASE,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz")
        yield base
    except BaseException:
        log.flush()
        log.seek(0)
        print("--- daphne log ---\n" + log.read().decode(errors="replace"), file=sys.stderr)
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
