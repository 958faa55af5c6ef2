"""Load and soak: N simulated people chatting over WebSockets; nothing they typed may be lost.

    .venv/bin/python bench/load.py --users 50 --seconds 60 --think 8      # what CI runs
    .venv/bin/python bench/load.py --users 200 --seconds 900 --think 20   # the long run
    .venv/bin/python bench/load.py --backend test ...                     # no model

Production's shape on loopback, started and stopped by this command: 2 daphne web processes,
1 ``manage.py runworker inference``, a redis-server of its own on a free port and a throwaway
PostgreSQL database (tests/e2e/livedaphne.py). ``--users`` accounts are created in bulk with
one ``manage.py shell`` (one password hash for all); each simulated person then logs in through
the real login form, opens a WebSocket on one of the two web processes (alternating) and
chats: send, follow the reply to its ``stream.end``, think (``--think`` seconds, +-50 %
jitter), sometimes start a new conversation, stop mid-reply, reconnect mid-reply (to the other
web process, then ``chat.subscribe``), or (test backend) ask for a failing reply. Nobody sends
after ``--seconds``; replies still running are followed to their end.

``--backend transformers`` (the default) generates with the bundled model (``--max-new-tokens``
per reply), batched as in production. ``--backend test`` answers with ``[[long N]]`` words,
``[[slow MS]]`` apart (``--token-ms``); it costs the worker almost nothing, but it streams ONE
reply at a time (no batching), so a per-word delay that looks like a model's (30 ms) turns 50
people into a queue: keep ``--token-ms`` small there, it measures the pipeline, not a model.
The default per-user limits (30 messages/min, 3 replies at once) stay on: a simulated person
sends one turn at a time, at least ``--think``/2 s apart, so it never reaches them.

Reports users, duration, turns sent, replies by final state, p50/p95 time to first token
(send -> first ``stream.delta``), aggregate tokens/s and replies/s, errors by code (expected:
provoked on purpose; unexpected: everything else, including timeouts and dropped sockets),
LOST TURNS (every acknowledged user turn must be in the database with its text; no assistant
turn may stay ``streaming``; the text a client saw must equal the saved text) and the RSS of
every process (/proc/PID/status) at the end of warm-up (every person has had one reply) and at
the end. The last line printed is a one-line JSON summary. Exit status: 0 when nothing was
lost and no unexpected error happened, 1 otherwise, 2 when the run itself failed.

``--rolling-restart S``: S seconds into the chatting, a deploy's rolling restart, one process
at a time and a new one up before the old one stops: each web process (a new daphne on a new
port takes the old one's place in the list people connect to, as a proxy's upstreams would;
then SIGTERM to the old one, whose sockets close with 1012 and whose people reconnect), then
the worker (a new one, its model loaded; then SIGTERM to the old one, which finishes its
replies and exits). A person whose socket closed with 1012 reconnects to the next web process,
and on again if that one is stopping too (the two web processes stop within a second of each
other), sending again a ``chat.send`` that was not acknowledged, as the page does. Every stopped
process must exit by itself with status 0; reconnections and sends again after 1012 are counted
as expected; everything else (an error frame, a lost turn) fails the run.

Self-stopping: a hard deadline (``--hard-deadline``, SIGALRM) and SIGTERM/Ctrl-C both unwind
through the same cleanup, which stops every process this command started and drops its
database. Only SIGKILL skips it; a caller that may SIGKILL should start this command in its own
process group and kill the group (tests/reliability/test_load.py does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

from tests.e2e import livedaphne, wsclient  # noqa: E402
from tests.e2e.wsclient import LiveSocket  # noqa: E402

SECRET = "load-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
PASSWORD = "load-test-passphrase-0123"
MB = 1024 * 1024
EXPECTED = {"internal"}  # only on turns that asked for ``[[fail]]``
PROMPTS = [
    "Tell me about the moon.", "What is a lighthouse for?", "Describe a rainy city.",
    "Write a line about coffee.", "Why do bees dance?", "Name a friendly dragon.",
    "How do trains work?", "What grows in a garden?", "Tell a story about a clockmaker.",
    "What are the northern lights?",
]  # fmt: skip


class Deadline(KeyboardInterrupt):
    """The hard deadline passed: unwind and stop everything.

    A KeyboardInterrupt so that asyncio lets it out of whichever task it lands in (an
    Exception would only end that task) and the cleanup runs as for Ctrl-C.
    """


def _on_alarm(signum: int, frame: Any) -> None:
    raise Deadline("hard deadline reached")


def _on_term(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # the same unwinding as Ctrl-C


# --- processes ----------------------------------------------------------------------------


def rss(pid: int) -> float | None:
    """Resident memory of a process in bytes, None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) * 1024.0 if match else None


@contextmanager
def own_redis() -> Iterator[tuple[str, livedaphne.Service]]:
    """A redis-server of this run on a free loopback port (no persistence); yields its URL."""
    port = livedaphne.free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    with livedaphne.service("redis", [*args, "--appendonly", "no"], {}) as svc:
        import redis

        client: Any = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or svc.proc.poll() is not None:
                    raise
                time.sleep(0.1)
        client.close()
        yield f"redis://127.0.0.1:{port}/0", svc


def create_users(env: dict[str, str], count: int) -> None:
    """``count`` accounts load0..loadN-1 in one transaction, sharing one password hash (a hash
    per account would cost ~0.2 s of CPU each; logging in still checks it, as in real life)."""
    code = (
        "from django.contrib.auth import get_user_model\n"
        "from django.contrib.auth.hashers import make_password\n"
        "User = get_user_model()\n"
        f"hashed = make_password({PASSWORD!r})\n"
        f"User.objects.bulk_create(User(username=f'load{{i}}', password=hashed) "
        f"for i in range({count}))\n"
    )
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=livedaphne.clean_env(**env),
        check=True,
        timeout=300,
    )


def login(base: str, username: str) -> str:
    """Log in through the real form; return the Cookie header of the session."""
    cookie = wsclient.login(base, username, PASSWORD, timeout=60)
    if cookie is None:
        raise RuntimeError(f"login of {username} was refused")
    return cookie


# --- simulated people ---------------------------------------------------------------------


@dataclass
class Turn:
    """One ``chat.send`` and what its person saw of it."""

    client_id: str
    content: str
    plan: str  # "chat", "stop", "reconnect" or "fail"
    sent_at: float
    conversation: str | None = None
    user_message: str | None = None  # acknowledged by ``message.saved``
    reply: str | None = None
    text: str = ""
    ttft: float | None = None
    finish: str | None = None  # finish_reason, "unseen" (ended while away) or None
    tokens: int = 0
    refused: str | None = None  # error code of a refusal (nothing saved)
    server: str = ""  # the web process it was sent to
    seen: list[str] = field(default_factory=list)  # frame types received meanwhile (diagnosis)


@dataclass
class Stats:
    turns: list[Turn] = field(default_factory=list)
    expected: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    first_reply: set[int] = field(default_factory=set)

    def error(self, code: str, turn: Turn | None, detail: str = "") -> None:
        if turn is not None and turn.plan == "fail" and code in EXPECTED:
            self.expected[code] += 1
            return
        self.unexpected[code] += 1
        self.examples.setdefault(code, f"{turn.client_id if turn else '-'}: {detail}"[:1500])


@dataclass
class Plan:
    servers: list[str]
    backend: str
    think: float
    token_ms: int
    new_conversation: float
    stop: float
    reconnect: float
    fail: float
    max_turns: int
    reply_timeout: float
    max_new_tokens: int


class Person:
    """One simulated user: one socket at a time, one reply at a time, well-behaved."""

    def __init__(self, index: int, plan: Plan, stats: Stats, rng: random.Random) -> None:
        self.index, self.plan, self.stats, self.rng = index, plan, stats, rng
        self.server = index % len(plan.servers)
        self.ws: LiveSocket | None = None
        self.cookie = ""

    async def run(self, until: float, logins: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        async with logins:
            try:
                self.cookie = await asyncio.to_thread(
                    login, self.plan.servers[self.server], f"load{self.index}"
                )
            except Exception as exc:
                self.stats.error("login_failed", None, f"load{self.index}: {exc}")
                self.stats.first_reply.add(self.index)
                return
        conversation: str | None = None
        try:
            await self.connect()
            for k in range(self.plan.max_turns):
                if loop.time() >= until:
                    break
                if conversation is None or self.rng.random() < self.plan.new_conversation:
                    conversation = None
                turn = self.compose(k, conversation)
                self.stats.turns.append(turn)
                await self.converse(turn)
                self.stats.first_reply.add(self.index)
                conversation = turn.conversation or conversation
                if turn.plan == "fail":  # its failed reply leaves the context, so the [[fail]]
                    conversation = None  # would merge into the next turn: start afresh
                pause = self.plan.think * self.rng.uniform(0.5, 1.5)
                await asyncio.sleep(max(0.0, min(pause, until - loop.time())))
        except Exception as exc:  # a person who cannot go on is an unexpected error
            self.stats.error(f"client_{type(exc).__name__}", None, str(exc))
        finally:
            self.stats.first_reply.add(self.index)
            if self.ws is not None:
                await self.ws.close()

    def compose(self, k: int, conversation: str | None) -> Turn:
        roll = self.rng.random()
        p = self.plan
        plan = "chat"
        if roll < p.stop:
            plan = "stop"
        elif roll < p.stop + p.reconnect:
            plan = "reconnect"
        elif roll < p.stop + p.reconnect + p.fail and p.backend == "test":
            plan = "fail"
        tag = f"u{self.index}t{k}"
        if p.backend == "test":
            words = 200 if plan in ("stop", "reconnect") else self.rng.choice((0, 20, 40, 60))
            content = f"[[slow {p.token_ms}]] {tag} " + self.rng.choice(PROMPTS)
            if words:
                content += f" [[long {words}]]"
            if plan == "fail":
                content += " [[fail]]"
        else:
            content = f"{self.rng.choice(PROMPTS)} ({tag})"
        now = asyncio.get_running_loop().time()
        return Turn(
            client_id=tag, content=content, plan=plan, sent_at=now, conversation=conversation
        )

    async def connect(self) -> None:
        """A socket to this person's web process, retried (as the page does) while none
        answers: one stopping for a restart refuses connections until its successor is in
        the list (the bench plays the proxy)."""
        # Each person from an address of their own (all of 127.0.0.0/8 is this machine), as
        # people are: the server counts handshakes per client address.
        address = f"127.1.{self.index // 250}.{self.index % 250 + 1}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:
            try:
                self.ws = await LiveSocket.open(
                    self.plan.servers[self.server], self.cookie, local_addr=(address, 0)
                )
                return
            except (OSError, TimeoutError, InvalidStatus):
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(self.rng.uniform(0.2, 0.6))

    def restarted(self, code: int | None) -> bool:
        """Whether a close is a web process stopping for a restart (1012): expected, and the
        person reconnects, as the page does."""
        if code == 1012:
            self.stats.expected["reconnected_after_1012"] += 1
            return True
        return False

    async def hop(
        self, turn: Turn, *, follow: bool = True, frame: dict[str, Any] | None = None
    ) -> None:
        """Reconnect to the other web process, then (``follow``) the conversation from there
        and (``frame``) send that frame again. In a rolling restart the process it lands on
        may be stopping too, and close with 1012 before it takes them: then on to the next,
        as the page does."""
        tries = 3 * len(self.plan.servers)
        for attempt in range(tries):
            if self.ws is not None:
                await self.ws.close()
            self.server = (self.server + 1) % len(self.plan.servers)
            await self.connect()
            assert self.ws is not None
            try:
                if follow and turn.conversation is not None:
                    await self.ws.send(
                        {"type": "chat.subscribe", "conversation": turn.conversation}
                    )
                if frame is not None:
                    await self.ws.send(frame)
                return
            except ConnectionClosed:
                if attempt == tries - 1 or not self.restarted(self.ws.close_code):
                    raise

    async def converse(self, turn: Turn) -> None:
        assert self.ws is not None
        if self.ws.close_code is not None:  # closed while this person was thinking
            if not self.restarted(self.ws.close_code):
                self.stats.error("socket_closed", turn, f"closed {self.ws.close_code} meanwhile")
            await self.connect()
            assert self.ws is not None
        loop = asyncio.get_running_loop()
        frame: dict[str, Any] = {
            "type": "chat.send",
            "conversation": turn.conversation,
            "content": turn.content,
            "client_id": turn.client_id,
        }
        if self.plan.backend != "test":
            frame["options"] = {
                "max_new_tokens": self.plan.max_new_tokens,
                "temperature": 0.8,
                "seed": self.index,
            }
        turn.sent_at = loop.time()
        turn.server = self.plan.servers[self.server]
        try:
            await self.ws.send(frame)
        except ConnectionClosed:  # closed (1012) between the check above and this send
            if not self.restarted(self.ws.close_code):
                raise
            await self.hop(turn, follow=False, frame=frame)
            self.stats.expected["resent_after_1012"] += 1
        deadline = turn.sent_at + self.plan.reply_timeout
        acted = False
        while True:
            left = deadline - loop.time()
            if left <= 0:
                self.stats.error(
                    "reply_timeout",
                    turn,
                    f"no stream.end in {self.plan.reply_timeout} s ({turn.plan}, on "
                    f"{turn.server}; saw {turn.seen})",
                )
                return
            try:
                got = await self.ws.recv(timeout=left)
            except TimeoutError:
                continue
            except Exception as exc:  # the socket dropped: come back and follow the reply
                restart = self.restarted(self.ws.close_code)
                if not restart:
                    self.stats.error("socket_closed", turn, repr(exc))
                if restart and turn.user_message is None:
                    # A stopping web process acknowledges every frame it took before it
                    # closes (docs/websocket-api.md, 1012): this one it did not take. No
                    # subscribe first: its "nothing streaming" would end the turn early.
                    await self.hop(turn, follow=False, frame=frame)
                    self.stats.expected["resent_after_1012"] += 1
                    continue
                if turn.conversation is None:
                    return
                await self.hop(turn)
                continue
            kind = got.get("type")
            if len(turn.seen) < 20:
                turn.seen.append(f"{kind}:{got.get('client_id') or got.get('message', '')}"[:60])
            if kind == "message.saved" and got.get("client_id") == turn.client_id:
                turn.user_message = got["message"]["id"]
                turn.conversation = got["conversation"]
            elif kind == "error":
                self.stats.error(got["code"], turn, got.get("detail", ""))
                if got.get("client_id") == turn.client_id:
                    turn.refused = got["code"]
                    return
            elif kind == "subscribed" and got["conversation"] == turn.conversation:
                if not got["streaming"]:
                    turn.finish = turn.finish or "unseen"  # it ended while we were away
                    return
            elif kind == "stream.start" and got["conversation"] == turn.conversation:
                if turn.reply is None or turn.reply == got["message"]:
                    turn.reply = got["message"]
                    turn.text = ""  # a catch-up after subscribing starts again at 0
            elif kind == "stream.delta" and got["message"] == turn.reply:
                if got["offset"] != len(turn.text):
                    self.stats.error(
                        "offset_mismatch", turn, f"offset {got['offset']}, had {len(turn.text)}"
                    )
                turn.text = turn.text[: got["offset"]] + got["delta"]
                if turn.ttft is None:
                    turn.ttft = loop.time() - turn.sent_at
                if not acted and turn.plan == "stop":
                    acted = True
                    with contextlib.suppress(ConnectionClosed):  # then the next recv says why
                        await self.ws.send({"type": "chat.stop", "conversation": turn.conversation})
                elif not acted and turn.plan == "reconnect":
                    acted = True
                    await self.hop(turn)
            elif kind == "stream.end" and got["message"] == turn.reply:
                turn.finish = got["finish_reason"]
                turn.tokens = int(got.get("usage", {}).get("completion_tokens") or 0)
                if turn.finish == "error" and turn.plan != "fail":
                    self.stats.error("reply_failed", turn, json.dumps(got)[:200])
                return


# --- the database's word ------------------------------------------------------------------


@dataclass
class Audit:
    lost: list[str]
    unacknowledged: list[str]
    text_mismatches: list[str]
    assistant_states: dict[str, int]
    streaming_left: int


def audit(db_url: str, turns: list[Turn], settle: float) -> Audit:
    """Compare what the clients were told with what the database holds."""
    import psycopg

    url = db_url.replace("postgres://", "postgresql://", 1)
    acked = {t.user_message: t for t in turns if t.user_message}
    seen = {t.reply: t for t in turns if t.reply and t.finish not in (None, "unseen")}
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + settle  # a reply nobody waited for may still be ending
        while True:
            rows = conn.execute(
                "SELECT status, count(*) FROM chat_message WHERE role = 'assistant' GROUP BY status"
            ).fetchall()
            states: dict[str, int] = dict(rows)
            if not states.get("streaming") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        stored = dict(
            conn.execute(
                "SELECT id::text, content FROM chat_message "
                "WHERE role = 'user' AND id = ANY(%s::uuid[])",
                (list(acked),),
            ).fetchall()
        )
        replies = {
            rid: (content, status)
            for rid, content, status in conn.execute(
                "SELECT id::text, content, status FROM chat_message WHERE id = ANY(%s::uuid[])",
                (list(seen),),
            ).fetchall()
        }
    lost = [t.client_id for uid, t in acked.items() if stored.get(uid) != t.content]
    mismatches = [
        f"{t.client_id} ({t.plan}, ended {t.finish}, saved {status}: client {len(t.text)} "
        f"chars, saved {len(content)}; client ...{t.text[-40:]!r}, saved ...{content[-40:]!r})"
        for rid, t in seen.items()
        for content, status in [replies.get(rid, ("", "missing"))]
        if content != t.text
    ]
    unacked = [t for t in turns if not t.user_message and not t.refused]
    with psycopg.connect(url, autocommit=True) as conn:
        unacked_notes = [
            f"{t.client_id} ({t.plan}, to {t.server}, conversation {t.conversation}, saved: "
            f"{bool(conn.execute(q, (t.content,)).fetchone())}, seen {t.seen})"
            for t in unacked
            for q in ["SELECT 1 FROM chat_message WHERE role = 'user' AND content = %s"]
        ]
    return Audit(lost, unacked_notes, mismatches, states, states.get("streaming", 0))


def postgres_backends(db_name: str) -> list[int]:
    """Server processes serving this run's database (one per connection)."""
    import psycopg

    from tests.services import POSTGRES_URL

    admin = POSTGRES_URL.replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (db_name,))
        return [pid for (pid,) in rows.fetchall()]


def memory(procs: dict[str, int], db_name: str) -> dict[str, float | None]:
    """RSS of every process this run started (and its own), plus the number of PostgreSQL
    connections open to its database: the server is the machine's, shared, and its backends
    come and go with connections (``DJANGO_CONN_MAX_AGE`` 0), so a leak shows as a count."""
    found: dict[str, float | None] = {}
    for name, pid in procs.items():
        found[name] = rss(pid)
        for child in livedaphne.children(pid):  # the worker's model process (the model's memory)
            found[f"{name} model"] = rss(child)
    found["load generator"] = rss(os.getpid())
    found["postgres connections"] = float(len(postgres_backends(db_name)))
    return found


KV_LINE = re.compile(r"model memory: rss ([\d.]+) MB, kv cache ([\d.]+) MB")


def sample_memory(
    every: float,
    procs: dict[str, int],
    db_name: str,
    stats: Stats,
    samples: list[dict[str, Any]],
    stop: threading.Event,
    workers: list[livedaphne.Service] | None = None,
) -> None:
    """Every ``every`` seconds until ``stop``: each process's RSS (MB) and the load since the
    last sample (replies finished a minute), for the soak's chart."""
    began = time.monotonic()
    replies = 0
    while not stop.wait(every):
        done = sum(1 for t in stats.turns if t.finish)
        try:
            mem = memory(dict(procs), db_name)
        except Exception as exc:  # a process between restarts, the database busy: next time
            print(f"memory sample skipped: {exc!r}", file=sys.stderr, flush=True)
            continue
        log = workers[0].output() if workers else ""  # its last report, however chatty the log
        kv = KV_LINE.findall(log[log.rfind("model memory:") :]) if "model memory:" in log else []
        samples.append(
            {
                "kv_mb": float(kv[-1][1]) if kv else None,  # the model process's last report
                "model_rss_mb": float(kv[-1][0]) if kv else None,
                "t_s": round(time.monotonic() - began, 1),
                "replies_per_min": round((done - replies) * 60 / every, 1),
                "rss_mb": {
                    k: round(v / MB, 1) for k, v in mem.items() if v and k != "postgres connections"
                },
                "postgres_connections": mem.get("postgres connections"),
            }
        )
        replies = done


def growth_after(samples: list[dict[str, Any]], start_s: float) -> dict[str, dict[str, float]]:
    """Per process: RSS at the first sample from ``start_s`` on, the highest after it, and
    that growth in percent (the soak's goal: under 5 % after the first 10 minutes); and the
    trend, which a process whose memory follows its load (the model process's KV cache)
    reads better: the median of the last ten samples against the median of the ten from
    ``start_s`` on."""
    later = [s for s in samples if s["t_s"] >= start_s] or samples[-1:]
    out: dict[str, dict[str, float]] = {}
    for name, first in later[0]["rss_mb"].items():
        series = [s["rss_mb"][name] for s in later if name in s["rss_mb"]]
        peak = max(series)
        early, late = statistics.median(series[:10]), statistics.median(series[-10:])
        out[name] = {
            "from_mb": first,
            "peak_mb": peak,
            "growth_pct": round(100 * (peak - first) / first, 1) if first else 0.0,
            "median_early_mb": early,
            "median_late_mb": late,
            "trend_pct": round(100 * (late - early) / early, 1) if early else 0.0,
        }
    return out


def draw(samples: list[dict[str, Any]], path: Path, title: str) -> None:
    """Every process's RSS against time, the load (replies a minute) beneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s["t_s"] / 60 for s in samples]
    names = sorted({n for s in samples for n in s["rss_mb"]})
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, height_ratios=[3, 1])
    for name in names:
        top.plot(minutes, [s["rss_mb"].get(name) for s in samples], marker=".", label=name)
    if any(s.get("kv_mb") for s in samples):  # what the model process holds as its KV cache
        kv = [s.get("kv_mb") for s in samples]
        top.plot(minutes, kv, linestyle="--", color="black", label="worker model: KV cache")
    top.set_ylabel("RSS (MB)")
    top.set_title(f"bench/load.py: memory of every process ({title})")
    top.legend(fontsize=8, loc="upper left")
    top.grid(alpha=0.3)
    step = minutes[1] - minutes[0] if len(minutes) > 1 else 1.0  # each bar: the interval before
    bottom.bar(
        [m - step / 2 for m in minutes],
        [s["replies_per_min"] for s in samples],
        width=0.8 * step,
        color="grey",
    )
    bottom.set_ylabel("replies / min")
    bottom.set_xlabel("minutes into the run")
    bottom.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def healthy(
    servers: list[livedaphne.Server], others: dict[str, livedaphne.Service]
) -> dict[str, bool]:
    import urllib.request

    state = {}
    for server in servers:
        try:
            with urllib.request.urlopen(server.url + "/healthz", timeout=10) as response:
                ok = response.status == 200
        except OSError:
            ok = False
        state[server.service.name] = ok and server.service.proc.poll() is None
    for name, svc in others.items():
        state[name] = svc.proc.poll() is None
    return state


async def probe(servers: list[str], cookie: str, backend: str) -> dict[str, str]:
    """After the load: a fresh turn through every web process must get a complete reply."""
    results = {}
    for base in servers:
        try:
            ws = await LiveSocket.open(base, cookie)
            content = "[[long 5]] probe" if backend == "test" else "Say hello."
            await ws.send({"type": "chat.send", "conversation": None, "content": content})
            frames = await ws.until("stream.end", timeout=60)
            await ws.close()
            results[base] = frames[-1]["finish_reason"]
        except Exception as exc:
            results[base] = f"failed: {exc!r}"[:200]
    return results


# --- the run ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def simulate(
    args: argparse.Namespace, plan: Plan, stats: Stats, warm: Any, restart: Any = None
) -> dict[str, float]:
    """Run every person; call ``warm()`` once each has had a reply (the end of warm-up), and
    ``restart()`` (on a thread) ``--rolling-restart`` seconds into the chatting."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    until = started + args.seconds
    rng = random.Random(args.seed)
    people = [Person(i, plan, stats, random.Random(rng.random())) for i in range(args.users)]
    logins = asyncio.Semaphore(args.login_concurrency)
    tasks = [asyncio.create_task(p.run(until, logins)) for p in people]
    if restart is not None:

        async def later() -> None:
            await asyncio.sleep(args.rolling_restart)
            await asyncio.to_thread(restart)

        tasks.append(asyncio.create_task(later()))
    warm_at = None
    while not all(t.done() for t in tasks):
        if warm_at is None and len(stats.first_reply) >= args.users:
            warm_at = loop.time()
            warm()
        await asyncio.wait(tasks, timeout=0.5)
    if warm_at is None:
        warm_at = loop.time()
        warm()
    return {"started": started, "warm": warm_at - started, "ended": loop.time() - started}


def run(args: argparse.Namespace) -> dict[str, Any]:
    env = {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": SECRET,
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_LOG_LEVEL": "warning",
        "STELLARCHAT_BACKEND": args.backend,
        "HF_HUB_OFFLINE": "1",
    }
    load_start = os.getloadavg()
    stats = Stats()
    with ExitStack() as stack:
        env["STELLARCHAT_DATA_DIR"] = stack.enter_context(
            tempfile.TemporaryDirectory(prefix="stellarchat-load-")
        )
        env["DATABASE_URL"] = db_url = stack.enter_context(livedaphne.postgres_database())
        env["REDIS_URL"], redis_svc = stack.enter_context(own_redis())
        livedaphne.migrate(env)
        create_users(env, args.users)
        servers = [
            stack.enter_context(livedaphne.daphne(env, run_migrations=False)) for _ in range(2)
        ]
        # The worker at info: its model process reports its memory and KV cache each minute.
        workers = [stack.enter_context(livedaphne.worker({**env, "DJANGO_LOG_LEVEL": "info"}))]
        inference = workers[0]
        procs = {s.service.name: s.service.pid for s in servers}
        procs.update({"worker": inference.pid, "redis": redis_svc.pid})
        db_name = db_url.rsplit("/", 1)[1]
        plan = Plan(
            servers=[s.url for s in servers],
            backend=args.backend,
            think=args.think,
            token_ms=args.token_ms,
            new_conversation=args.new_conversation,
            stop=args.stop,
            reconnect=args.reconnect,
            fail=args.fail,
            max_turns=args.max_turns,
            reply_timeout=args.reply_timeout,
            max_new_tokens=args.max_new_tokens,
        )
        print(
            f"started {len(servers)} web processes ({', '.join(plan.servers)}), worker pid "
            f"{inference.pid}, redis pid {redis_svc.pid}, database {db_name}; "
            f"{args.users} users, {args.seconds:.0f} s",
            flush=True,
        )
        mem_warm: dict[str, float | None] = {}

        def warm() -> None:
            mem_warm.update(memory(procs, db_name))
            print(f"warm-up over ({len(stats.turns)} turns sent so far)", flush=True)

        restarts: list[str] = []

        def restart() -> None:
            rolling_restart(args, env, stack, plan, servers, workers, procs, stats, restarts)

        plan_restart = restart if args.rolling_restart else None
        samples: list[dict[str, Any]] = []
        sampling = threading.Event()
        sampler = threading.Thread(
            target=sample_memory,
            args=(args.sample_every, procs, db_name, stats, samples, sampling, workers),
            daemon=True,
        )
        if args.sample_every:
            sampler.start()
        try:
            times = asyncio.run(simulate(args, plan, stats, warm, plan_restart))
        finally:
            sampling.set()
        if sampler.is_alive():
            sampler.join(timeout=30)
        inference = workers[0]
        mem_end = memory(procs, db_name)
        checked = audit(db_url, stats.turns, settle=args.reply_timeout)
        cookie = login(plan.servers[0], "load0")
        probes = asyncio.run(probe(plan.servers, cookie, args.backend))
        health = healthy(servers, {"worker": inference, "redis": redis_svc})
        summary = report(args, stats, times, checked, mem_warm, mem_end, probes, health, load_start)
        summary["restarts"] = restarts
        summary["samples"] = samples
        if samples:
            summary["memory_after_10_min"] = growth_after(samples, 600.0)
        if args.plot and samples:
            draw(samples, Path(args.plot), f"{args.users} people, {args.backend} backend")
            print(f"plot: {args.plot}", flush=True)
        if not summary["ok"]:  # the servers' side of what went wrong
            for svc in [*(s.service for s in servers), inference]:
                notable = [
                    line
                    for line in svc.output().splitlines()
                    if re.search(r"WARNING|ERROR|CRITICAL|Traceback|Error|^\s", line)
                ]
                print(
                    f"--- {svc.name} log (warnings) ---", *notable[-80:], sep="\n", file=sys.stderr
                )
    return summary


def rolling_restart(
    args: argparse.Namespace,
    env: dict[str, str],
    stack: ExitStack,
    plan: Plan,
    servers: list[livedaphne.Server],
    workers: list[livedaphne.Service],
    procs: dict[str, int],
    stats: Stats,
    done: list[str],
) -> None:
    """Each web process, then the worker, in turn: a new one up beside it, then SIGTERM to the
    old one, which must exit by itself (a worker once its replies are done, within the drain
    time). The bench plays the proxy: a new web process replaces the old one's place in the
    list people connect to before the old one stops."""

    def stop(svc: livedaphne.Service, limit: float) -> str:
        began = time.monotonic()
        svc.proc.send_signal(signal.SIGTERM)
        try:
            code = svc.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            svc.proc.kill()
            svc.proc.wait(timeout=10)
            stats.error("restart_stuck", None, f"{svc.name} did not exit within {limit} s")
            return "killed"
        if code != 0:
            stats.error("restart_exit", None, f"{svc.name} exited {code}: {svc.output()[-500:]}")
        return f"exited {code} after {time.monotonic() - began:.1f} s"

    for i, old in enumerate(list(servers)):
        new = stack.enter_context(livedaphne.daphne(env, run_migrations=False))
        servers[i], plan.servers[i] = new, new.url
        procs.pop(old.service.name, None)
        procs[new.service.name] = new.service.pid
        done.append(f"web {old.url} -> {new.url}: old {stop(old.service, 30)}")
        print(done[-1], flush=True)
    old_worker = workers[0]
    new_worker = stack.enter_context(livedaphne.worker({**env, "DJANGO_LOG_LEVEL": "info"}))
    if args.backend == "transformers":  # up once its model is loaded (warm-up, at start)
        livedaphne.wait_log(new_worker, " loaded ", timeout=180)
    workers[0] = new_worker
    procs["worker"] = new_worker.pid
    drain = float(env.get("STELLARCHAT_DRAIN_SECONDS", 30))
    done.append(f"worker {old_worker.pid} -> {new_worker.pid}: old {stop(old_worker, drain + 30)}")
    print(done[-1], flush=True)


def report(
    args: argparse.Namespace,
    stats: Stats,
    times: dict[str, float],
    checked: Audit,
    mem_warm: dict[str, float | None],
    mem_end: dict[str, float | None],
    probes: dict[str, str],
    health: dict[str, bool],
    load_start: tuple[float, float, float],
) -> dict[str, Any]:
    turns = stats.turns
    if checked.unacknowledged:
        stats.unexpected["unacknowledged"] += len(checked.unacknowledged)
        stats.examples.setdefault("unacknowledged", " | ".join(checked.unacknowledged[:3]))
    if checked.text_mismatches:
        stats.unexpected["text_mismatch"] += len(checked.text_mismatches)
        stats.examples.setdefault("text_mismatch", " | ".join(checked.text_mismatches[:3]))
    ttfts = [t.ttft * 1000 for t in turns if t.ttft is not None]
    warm_at = times["started"] + times["warm"]  # after warm-up: no log-in hashing around
    steady = [t.ttft * 1000 for t in turns if t.ttft is not None and t.sent_at >= warm_at]
    finishes = Counter(t.finish or ("refused" if t.refused else "unknown") for t in turns)
    elapsed = max(1e-9, times["ended"])
    connections = {
        when: int(mem.pop("postgres connections") or 0) if mem else None
        for when, mem in (("warm", mem_warm), ("end", mem_end))
    }
    growth = {
        name: {
            "warm_mb": round(mem_warm[name] / MB, 1) if mem_warm.get(name) else None,
            "end_mb": round(mem_end[name] / MB, 1) if mem_end.get(name) else None,
        }
        for name in mem_end
    }
    for row in growth.values():
        if row["warm_mb"] is not None and row["end_mb"] is not None:
            row["growth_mb"] = round(row["end_mb"] - row["warm_mb"], 1)
    probes_ok = all(v in ("stop", "length") for v in probes.values())
    summary: dict[str, Any] = {
        "users": args.users,
        "seconds": args.seconds,
        "backend": args.backend,
        "elapsed_s": round(elapsed, 1),
        "warmup_s": round(times["warm"], 1),
        "turns_sent": len(turns),
        "turns_acknowledged": sum(1 for t in turns if t.user_message),
        "plans": dict(Counter(t.plan for t in turns)),
        "replies": dict(finishes),
        "db_assistant": checked.assistant_states,
        "ttft_ms": {
            "p50": round(percentile(ttfts, 0.5) or 0, 1),
            "p95": round(percentile(ttfts, 0.95) or 0, 1),
            "n": len(ttfts),
        },
        "ttft_after_warmup_ms": {
            "p50": round(percentile(steady, 0.5) or 0, 1),
            "p95": round(percentile(steady, 0.95) or 0, 1),
            "n": len(steady),
        },
        "tokens_per_s": round(sum(t.tokens for t in turns) / elapsed, 1),
        "replies_per_s": round(sum(1 for t in turns if t.finish) / elapsed, 2),
        "errors_expected": dict(stats.expected),
        "errors_unexpected": dict(stats.unexpected),
        "error_examples": stats.examples,
        "lost_turns": len(checked.lost),
        "lost_examples": checked.lost[:10],
        "streaming_left": checked.streaming_left,
        "memory": growth,
        "postgres_connections": connections,
        "healthy": health,
        "probes": probes,
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    summary["ok"] = (
        not checked.lost
        and not stats.unexpected
        and not checked.streaming_left
        and all(health.values())
        and probes_ok
    )
    return summary


def show(summary: dict[str, Any]) -> None:
    s = summary
    print(
        f"\nload: {s['users']} users, {s['elapsed_s']} s ({s['backend']} backend), "
        f"warm-up {s['warmup_s']} s; load average {s['loadavg_start']} -> {s['loadavg_end']}"
    )
    print(
        f"turns sent {s['turns_sent']}, acknowledged {s['turns_acknowledged']}; "
        f"planned: {s['plans']}"
    )
    print(f"replies by final state (clients): {s['replies']}")
    print(f"assistant turns by state (database): {s['db_assistant']}")
    print(
        f"time to first token: p50 {s['ttft_ms']['p50']} ms, p95 {s['ttft_ms']['p95']} ms "
        f"({s['ttft_ms']['n']} replies)"
    )
    steady = s["ttft_after_warmup_ms"]
    print(
        f"  after warm-up: p50 {steady['p50']} ms, p95 {steady['p95']} ms ({steady['n']} replies)"
    )
    print(f"throughput: {s['tokens_per_s']} tokens/s, {s['replies_per_s']} replies/s")
    print(f"errors, expected: {s['errors_expected'] or 'none'}")
    print(f"errors, UNEXPECTED: {s['errors_unexpected'] or 'none'}")
    for code, example in s["error_examples"].items():
        print(f"  e.g. {code}: {example}")
    print(f"LOST TURNS: {s['lost_turns']} {s['lost_examples'] or ''}")
    print(f"assistant turns left streaming: {s['streaming_left']}")
    print("memory (RSS, MB)       warm-up end      end   growth")
    for name, row in s["memory"].items():
        print(
            f"  {name:<20} {row['warm_mb']!s:>12} {row['end_mb']!s:>8} {row.get('growth_mb')!s:>8}"
        )
    print(f"PostgreSQL connections open: {s['postgres_connections']}")
    print(f"healthy at the end: {s['healthy']}; probe replies: {s['probes']}")
    if s.get("memory_after_10_min"):
        print(
            "memory from 10 min on (MB): first sample, peak, growth; median of the first ten"
            " samples, of the last ten, trend"
        )
        for name, row in s["memory_after_10_min"].items():
            print(
                f"  {name:<20} {row['from_mb']:>8} {row['peak_mb']:>8} {row['growth_pct']:>6} %"
                f" {row['median_early_mb']:>8} {row['median_late_mb']:>8} {row['trend_pct']:>6} %"
            )
    if s.get("restarts"):
        print("rolling restart:", *s["restarts"], sep="\n  ")
    print(f"verdict: {'OK' if s['ok'] else 'FAILED'}")
    print(json.dumps(summary, separators=(",", ":")), flush=True)  # last line: for programs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0, help="chatting time")
    parser.add_argument("--backend", choices=("test", "transformers"), default="transformers")
    parser.add_argument("--think", type=float, default=10.0, help="mean think time, s (+-50%%)")
    parser.add_argument("--token-ms", type=int, default=2, help="test backend: ms per word")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="transformers: per reply")
    parser.add_argument("--new-conversation", type=float, default=0.2, help="probability")
    parser.add_argument("--stop", type=float, default=0.08, help="probability of a stop")
    parser.add_argument("--reconnect", type=float, default=0.05, help="probability")
    parser.add_argument("--fail", type=float, default=0.02, help="test backend: [[fail]] share")
    parser.add_argument("--max-turns", type=int, default=1000, help="per user")
    parser.add_argument("--reply-timeout", type=float, default=60.0, help="s per reply")
    parser.add_argument("--login-concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--hard-deadline", type=float, default=None, help="s; default seconds * 1.5 + 240"
    )
    parser.add_argument(
        "--sample-every", type=float, default=60.0, help="s between memory samples (0: none)"
    )
    parser.add_argument("--plot", default="", help="PNG of the memory samples and the load")
    parser.add_argument(
        "--rolling-restart",
        type=float,
        default=0.0,
        help="s into the chatting: restart each web process, then the worker (0: never)",
    )
    args = parser.parse_args()
    hard = args.hard_deadline or args.seconds * 1.5 + 240
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(max(1, int(hard)))
    try:
        summary = run(args)
    except (Exception, KeyboardInterrupt) as exc:
        print(f"load run failed: {exc!r}", file=sys.stderr)
        print(json.dumps({"ok": False, "failed": repr(exc)[:500]}), flush=True)
        sys.exit(2)
    finally:
        signal.alarm(0)
    show(summary)
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
