"""Fault injection for the reliability matrix: production's shape (daphne + ``runworker
inference`` + Redis + PostgreSQL) with every part owned by the test, so a test can kill and
restart any of them without harming anyone else on the machine: its own redis-server on a free
port, a throwaway PostgreSQL database, web processes on fixed ports (a restarted one takes its
predecessor's address, as behind a proxy), and inference workers.

Plus the checks every fault row makes against what a person would see and what is stored.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import services
from tests.e2e import livedaphne
from tests.e2e.wsclient import LiveSocket

SECRET = "fault-matrix-secret-0123456789-abcdefghijklmnopqrstuvwxyz"


def app_env(tmp: Any, stream_timeout: int, **extra: str) -> dict[str, str]:
    """A stack's settings: the test backend, a short stream timeout, its own data folder."""
    return {
        "STELLARCHAT_BACKEND": "test",
        "STELLARCHAT_STREAM_TIMEOUT": str(stream_timeout),
        "STELLARCHAT_DATA_DIR": str(tmp),
        **extra,
    }


def whole(stack: Stack, request: Any) -> Iterator[Stack]:
    """A shared stack for one test: whole again whatever an earlier test broke; its
    processes' logs printed if the test fails."""
    stack.ensure()
    failed = request.session.testsfailed
    yield stack
    if request.session.testsfailed > failed:
        print(stack.logs(), file=sys.stderr)


def words(n: int) -> str:
    """The test backend's reply to ``[[long n]]``."""
    return " ".join(f"w{i}" for i in range(n))


def text_of(frames: list[dict[str, Any]]) -> str:
    """The reply text a client assembled from its delta frames, checking they are gapless."""
    text = ""
    for f in frames:
        if f["type"] == "stream.delta":
            assert f["offset"] <= len(text), f  # never a gap; an overlap only on a resubscribe
            text = text[: f["offset"]] + f["delta"]
    return text


def first(frames: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(f for f in frames if f["type"] == kind)


@contextmanager
def redis_server(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A redis-server of the test's own on ``port``; nothing persisted, so a restart loses
    every key, group and queued message, as a real Redis restart without persistence does."""
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
        + ["--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], capture_output=True
            ).stdout.strip()
            != b"PONG"
        ):
            assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=10)


def readiness(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def wait_ready(url: str, want: int, timeout: float) -> dict[str, Any]:
    """Poll /readyz until it answers ``want``; return its body."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            status, body = await asyncio.to_thread(readiness, url)
        except OSError:  # the web process is not listening (yet)
            status = 0
        if status == want:
            return body
        await asyncio.sleep(0.3)
    raise AssertionError(f"/readyz never answered {want}: {body}")


async def reconnect(url: str, cookie: str, timeout: float = 30) -> LiveSocket:
    """What the page's script does after losing its socket: retry until a server answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await LiveSocket.open(url, cookie)
        except (TimeoutError, OSError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"no server took the socket back: {exc}") from exc
            await asyncio.sleep(0.3)


def abort(ws: LiveSocket) -> None:
    """Drop the connection at the TCP level: no closing handshake, as a lost network does."""
    ws.ws.transport.abort()


class Stack:
    """One deployment's processes; each can be killed and started again where it was."""

    def __init__(self, env: dict[str, str], exits: ExitStack, *, embedded: bool = False) -> None:
        self.env = env
        self.exits = exits
        self.embedded = embedded
        self.web_port = livedaphne.free_port()
        self.redis_port = livedaphne.free_port()
        self.redis: subprocess.Popen[bytes] | None = None
        self.web: livedaphne.Service | None = None
        self.worker: livedaphne.Service | None = None
        self.services: list[livedaphne.Service] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def label(self) -> str:
        """How its processes keep PostgreSQL connections (for the matrix's rows)."""
        return "persistent connections" if self.env.get("DJANGO_CONN_MAX_AGE") else "pooled"

    # --- processes ---------------------------------------------------------------------

    def start_redis(self) -> None:
        self.redis = self.exits.enter_context(redis_server(self.redis_port))

    def stop_redis(self) -> None:
        assert self.redis is not None
        self.redis.terminate()
        self.redis.wait(timeout=10)

    def start_web(self) -> None:
        server = self.exits.enter_context(
            livedaphne.daphne(self.env, run_migrations=False, port=self.web_port)
        )
        self.web = server.service
        self.services.append(self.web)

    def start_worker(self) -> None:
        self.worker = self.exits.enter_context(livedaphne.worker(self.env))
        self.services.append(self.worker)

    @staticmethod
    def kill(svc: livedaphne.Service | None, sig: int = signal.SIGKILL) -> None:
        assert svc is not None and svc.proc.poll() is None, "it was not running"
        svc.stop(sig)

    def ensure(self) -> None:
        """Start again whatever an earlier row left dead."""
        if not self.embedded and (self.redis is None or self.redis.poll() is not None):
            self.start_redis()
        if self.web is None or self.web.proc.poll() is not None:
            self.start_web()
        if not self.embedded and (self.worker is None or self.worker.proc.poll() is not None):
            self.start_worker()

    def logs(self) -> str:
        return "\n".join(
            f"--- {s.name} (pid {s.pid}) ---\n{s.output()[-6000:]}" for s in self.services
        )

    # --- what is stored --------------------------------------------------------------------

    def messages(self, conversation: str) -> list[tuple[str, str, str]]:
        """(role, status, content) of every message of a conversation, read from the database
        itself (not through the app): what a reload would show."""
        sql = (
            "SELECT role, status, content FROM chat_message WHERE conversation_id = {p} "
            "ORDER BY position"
        )
        if self.embedded:
            path = Path(self.env["STELLARCHAT_DATA_DIR"]) / "db.sqlite3"
            with sqlite3.connect(path) as conn:
                rows = conn.execute(sql.format(p="?"), (conversation.replace("-", ""),))
                return [tuple(r) for r in rows]  # type: ignore[misc]
        import psycopg

        with psycopg.connect(
            self.env["DATABASE_URL"].replace("postgres://", "postgresql://", 1)
        ) as c:
            return [tuple(r) for r in c.execute(sql.format(p="%s"), (conversation,))]  # type: ignore[misc]

    def terminate_db_backends(self) -> int:
        """Cut every PostgreSQL connection of the app, as a database restart or failover does."""
        import psycopg

        name = self.env["DATABASE_URL"].rsplit("/", 1)[1]
        admin = services.POSTGRES_URL.replace("postgres://", "postgresql://", 1)
        with psycopg.connect(admin, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            ).fetchall()
        return len(rows)

    def _app_db(self) -> Any:
        import psycopg

        return psycopg.connect(self.env["DATABASE_URL"].replace("postgres://", "postgresql://", 1))

    @contextmanager
    def message_locked(self, message: str) -> Iterator[None]:
        """Hold a row lock on one message, so the app's next write to it waits in PostgreSQL
        (where a test can cut it mid-query)."""
        conn = self._app_db()
        try:
            conn.execute("SELECT 1 FROM chat_message WHERE id = %s FOR UPDATE", (message,))
            yield
        finally:
            with suppress(Exception):  # cut by the test itself
                conn.close()

    def lock_waiters(self) -> int:
        """How many of the app's queries are waiting on a lock right now."""
        name = self.env["DATABASE_URL"].rsplit("/", 1)[1]
        with self._app_db() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND wait_event_type = 'Lock'",
                (name,),
            ).fetchone()
        return int(row[0]) if row else 0

    async def settled(self, conversation: str, timeout: float = 30) -> list[tuple[str, str, str]]:
        """The conversation's messages once no reply of it is streaming any more."""
        deadline = time.monotonic() + timeout
        while True:
            rows = await asyncio.to_thread(self.messages, conversation)
            if rows and all(status != "streaming" for _, status, _ in rows):
                return rows
            assert time.monotonic() < deadline, f"a reply stayed streaming: {rows}"
            await asyncio.sleep(0.3)


@contextmanager
def production(env: dict[str, str]) -> Iterator[Stack]:
    """daphne + runworker + the test's own redis-server + a throwaway PostgreSQL database."""
    services.require("PostgreSQL", services.postgres_available())
    services.require("redis-server binary", shutil.which("redis-server") is not None)
    env = {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": SECRET,
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "STELLARCHAT_MAX_CONCURRENT_STREAMS": "0",
        "STELLARCHAT_RATE_LIMIT_PER_MINUTE": "0",
        **env,
    }
    with ExitStack() as exits:
        stack = Stack(env, exits)
        env["DATABASE_URL"] = exits.enter_context(livedaphne.postgres_database())
        env["REDIS_URL"] = f"redis://127.0.0.1:{stack.redis_port}/0"
        livedaphne.migrate(env)
        stack.ensure()
        yield stack


@contextmanager
def embedded(env: dict[str, str]) -> Iterator[Stack]:
    """One daphne exactly as `make run` starts it: SQLite, in-memory layer, inference inside."""
    env = {"DJANGO_DEBUG": "1", "DJANGO_SECRET_KEY": SECRET, **env}
    with ExitStack() as exits:
        stack = Stack(env, exits, embedded=True)
        livedaphne.migrate(env)
        stack.ensure()
        yield stack


@dataclass
class Row:
    """One line of the fault matrix, printed when the row passes (run pytest with -s).

    ``settled_s``: from the fault until the person's page shows the reply in a final state
    (its end, or the reconnected socket caught up). ``back_s``: from the broken part being
    back (restarted, reconnected) until a new message was answered in full; where the reply
    went on (rows 4 and 5), the new message is sent once it has ended.
    """

    name: str
    outcome: str = ""
    settled_s: float | None = None
    back_s: float | None = None

    def report(self) -> None:
        def fmt(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f} s"

        print(
            f"\nFAULT-MATRIX | {self.name} | {self.outcome} | settled {fmt(self.settled_s)} "
            f"| answering again {fmt(self.back_s)}"
        )
