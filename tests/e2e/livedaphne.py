"""Start the real thing: daphne and inference-worker processes on this machine, plus the
throwaway PostgreSQL database and Redis keyspace they share."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

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
    return {**base, "PYTHONUNBUFFERED": "1", **env}


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


@dataclass
class Service:
    """A started process and its log (a file, not a pipe: a chatty server never blocks)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@contextmanager
def service(
    name: str, args: list[str], env: dict[str, str], *, root: Path = BASE
) -> Iterator[Service]:
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        args, cwd=root, env=clean_env(**env), stdout=log, stderr=subprocess.STDOUT
    )
    svc = Service(name, proc, log)
    try:
        yield svc
    except BaseException:
        print(f"--- {name} log ---\n{svc.output()[-20000:]}", file=sys.stderr)
        raise
    finally:
        svc.stop()
        log.close()


def migrate(env: dict[str, str], *, root: Path = BASE) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=root,
        env=clean_env(**env),
        check=True,
        timeout=300,
    )


@dataclass
class Server:
    url: str
    service: Service


@contextmanager
def daphne(
    env: dict[str, str],
    *,
    run_migrations: bool = True,
    port: int | None = None,
    root: Path = BASE,
) -> Iterator[Server]:
    """A freshly started daphne serving stellarchat.asgi on a loopback port (a free one, or
    ``port``: a restarted web process takes its predecessor's address). ``root``: another
    checkout of the project (benchmarks compare against an earlier commit)."""
    if run_migrations:
        migrate(env, root=root)
    port = port or free_port()
    args = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    with service(f"daphne:{port}", [*args, "stellarchat.asgi:application"], env, root=root) as svc:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/healthz")
        yield Server(url, svc)


@contextmanager
def worker(env: dict[str, str]) -> Iterator[Service]:
    """``manage.py runworker inference``: a separate inference process."""
    args = [sys.executable, "manage.py", "runworker", "inference"]
    with service("worker", args, env) as svc:
        if env.get("DJANGO_LOG_LEVEL", "info").lower() in ("debug", "info"):  # it says so at info
            wait_log(svc, "listening on channel 'inference")  # (.<model>...)
        yield svc


def wait_log(svc: Service, text: str, timeout: float = 60.0) -> None:
    """Until ``text`` is in the service's log: a worker takes jobs only once it says so (two
    workers started back to back would otherwise race the first jobs)."""
    deadline = time.monotonic() + timeout
    while text not in svc.output():
        if svc.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{svc.name} never logged {text!r}:\n{svc.output()[-5000:]}")
        time.sleep(0.05)


@contextmanager
def topology(
    name: str, env: dict[str, str], *, redis_index: int
) -> Iterator[tuple[Server, Service | None]]:
    """The app in one of its two shapes; yields (web server, worker or None).

    ``embedded``: one daphne exactly as `make run` starts it (debug on, SQLite, in-memory
    layer, inference inside). ``redis``: production's shape, daphne + ``runworker inference``
    + Redis (database ``redis_index``) + a throwaway PostgreSQL. ``env`` is completed in
    place, so a test can run ``manage.py`` against the same databases.
    """
    if name == "embedded":
        env["DJANGO_DEBUG"] = "1"
        with daphne(env) as server:
            yield server, None
        return
    from tests import services

    services.require("PostgreSQL", services.postgres_available())
    services.require("Redis", services.redis_available())
    env["DJANGO_DEBUG"] = "0"
    with postgres_database() as db_url, redis_db(redis_index) as redis_url:
        env.update(DATABASE_URL=db_url, REDIS_URL=redis_url)
        with daphne(env) as server, worker(env) as inference:
            yield server, inference


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (a worker's model process, say). A thread or a child can
    end between listing and reading: it is skipped."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.extend(int(c) for c in task.read_text().split())
        except OSError:
            continue
    return found


@contextmanager
def postgres_database() -> Iterator[str]:
    """A throwaway database on the local PostgreSQL; yields its URL."""
    import psycopg

    from tests.services import POSTGRES_URL

    admin_url = POSTGRES_URL.replace("postgres://", "postgresql://", 1)
    name = f"stellarchat_e2e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def redis_db(index: int = 13) -> Iterator[str]:
    """A Redis database index of the local server, emptied before and after."""
    import redis

    from tests.services import REDIS_URL

    url = REDIS_URL.rsplit("/", 1)[0] + f"/{index}"
    client: Any = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()
