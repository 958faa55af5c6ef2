"""Abuse resistance: one account floods the chat socket while ten people chat; do they notice?

    .venv/bin/python bench/abuse.py                                # bundled model, 2 x 30 s
    .venv/bin/python bench/abuse.py --backend test --seconds 10    # quick, no model
    .venv/bin/python bench/abuse.py --topology redis --repeats 2   # production's shape, twice

One server, started and stopped by this command (tests/e2e/livedaphne.py): by default the
embedded topology, as `make run` starts it (one daphne, DJANGO_DEBUG=1, SQLite and the
in-memory channel layer in a throwaway STELLARCHAT_DATA_DIR, the bundled model inside);
``--topology redis``: daphne + ``runworker inference`` + Redis (db ``--redis-index``) + a
throwaway PostgreSQL database. The server keeps every limit at its default (messages per minute,
replies at once, and whatever socket limits the checkout has: frames per second, sockets per
person, handshakes per address, send buffer); this command sets none of them.

``--people`` (10) accounts signed up through the real form chat on one socket each: send (a new
conversation each time, the same prompt sequence in every phase, ``temperature`` 0,
``--max-new-tokens``), read to ``stream.end``, think ``--think`` s (+-50 %), and never send
twice within ``--min-interval`` s (60/28: the server's 30 messages a minute is a moving window,
which would otherwise carry one phase's messages into the next; their first sends are spread
over that interval at the start of every phase). The interval also bounds what they ask for, so
aggregate tokens/s only falls when replies take longer than it: per-reply decode tokens/s is
printed beside it. Each person connects from its own loopback address (127.0.0.10, .11, ...: all
of 127.0.0.0/8 is the loopback on Linux), as different people behind different addresses would,
so a per-address handshake limit meant for the flooder never counts them.

Two phases of ``--seconds`` each on the same server, one after the other (``--repeats``:
quiet, flood, quiet, flood, ...), after a warm-up turn per person (the model loads then):

- quiet: only the people chat;
- flood: the people chat exactly the same way while ONE other account (a separate process, so
  its loop never delays the people's clock) does all of this at once:
  1. its own 3 replies: one reading socket from 127.0.0.100 sends ``chat.send`` with a long
     prompt (``LONG_PROMPT``; ``--flood-tokens`` new tokens) in 3 new conversations, and
     ``chat.regenerate`` whenever one ends, so 3 replies stream the whole phase (as far as its
     own limits allow: refusals are counted, they are its business);
  2. frames: a second socket from 127.0.0.100 sends ``--flood-frames`` (100,000)
     ``chat.subscribe`` frames for one of those conversations as fast as the socket takes them,
     while a reader drains and counts what comes back (``rate_limited`` errors, the close code);
  3. handshakes: ``--flood-handshakes`` (1,000) WebSocket handshakes from 127.0.0.200, 20 at a
     time, each closed at once when accepted; counted as accepted, refused by HTTP status (403,
     429), or closed by the server with a code (4429);
  4. never-reading sockets: ``--flood-readers`` (200) sockets from 127.0.1.1-10 (20 each, under
     a per-address handshake limit of 60 a minute, so what limits them is the per-person socket
     limit) send ``chat.subscribe`` for the 3 conversations, read until those are answered, and
     then never read again while the replies stream to them. "Never read" is real TCP
     backpressure: each is a plain socket with SO_RCVBUF 4 KiB (the kernel makes it 8 KiB), set
     before connecting so the window stays small, handed to the ``websockets`` client with
     ``max_queue=1`` (it pauses reading the transport once one frame waits) and no keepalive
     ping (whose unanswered pong would make the client itself close). At the end of the phase
     each is drained: a close code found there (1008: the server's send-buffer limit) was sent
     during the flood. Sockets past the per-person limit (30 by default) are accepted and closed
     with 4429: expected behaviour, counted, not a failure.

``--floods replies,frames`` (any subset) runs only some of the four, to tell which one hurts.

Reports, for quiet vs flood: the people's TTFT p50/p95 (send -> first ``stream.delta``), and
the p95 of the turns sent ``SETTLED_AFTER`` (2) s or more into their phase (past the burst of
sockets and handshakes: what is left is the flooder's replies and what they fan out to),
the p95 of the model process's own part of it (``stream.end`` ``timings.ttft_ms``: from the
job's arrival there to its first token; the rest is the web process, the worker and the wire),
aggregate tokens/s (``stream.end`` usage.completion_tokens of the phase's replies / from the
phase's start to its last reply's end), per-reply decode tokens/s, replies completed and errors
by code, the slowest TTFTs of each phase with when they were sent (seconds into the phase: the
floods of frames and handshakes are over within seconds, the never-reading sockets and the
flooder's replies last the phase), the ratios flood/quiet, what each flood did, and the peak RSS
of every process (/proc/PID/status VmRSS every 0.5 s in a thread: daphne, its children such as
the model process, the worker and its children, this command and the flooder process) in each
phase. Goals (the verdict lines; the bench reports, it does not assert): the people's TTFT p95
within 2x the quiet run's, tokens/s at least 0.8x, no server process past 2x its peak RSS of the
quiet phase before, nothing lost. "Nothing lost": every reply a person started ended with
``stream.end`` ``stop`` or ``length`` (no error frame, no timeout, no dropped socket), every
acknowledged user turn is in the database with its text, every reply's saved text equals what
its person saw, and no assistant message stays ``streaming`` (a ``manage.py shell`` against the
server's own database). The last line printed is a one-line JSON summary.

Every process of the run shares this machine's cores: the server's, the ten people's clients
and the flooder's own, which in a real attack runs elsewhere. ``--clients-nice N`` (0-19,
default 0) runs the bench's clients (this process once the accounts are signed up, and the
flooder process it starts) at that niceness, below the server, as clients on other machines
would be; the flood is the same, though it may take longer to send (the report says how long).

With ``--backend test`` (``[[long N]]`` words ``--token-ms`` apart) replies are generated one at
a time, not batched: the flooder's 3 long replies (which it is entitled to) queue ahead of the
people's, so its TTFT ratio measures that queue more than the socket limits; the bundled model
(default) batches them, as production does.

Exit status: 0 when the run completed and nothing was lost (whether or not the goals were met),
1 when something was lost, 2 when the run itself failed. Self-stopping: a hard deadline
(``--hard-deadline``, SIGALRM), every loop bounded in count and time, only loopback addresses;
SIGTERM/Ctrl-C unwind through the same cleanup, which stops every process this command started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import queue
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import PROMPTS, _on_alarm, _on_term, percentile, rss  # noqa: E402
from tests.e2e import livedaphne  # noqa: E402
from tests.e2e.wsclient import LONG_PROMPT, signup  # noqa: E402

SECRET = "abuse-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
MB = 1024 * 1024
FLOOD_ADDRESS = "127.0.0.100"  # the flooder's reading socket and its frame-flood socket
HANDSHAKE_ADDRESS = "127.0.0.200"  # the handshake flood
READER_ADDRESSES = [f"127.0.1.{i}" for i in range(1, 11)]  # the never-reading sockets
FLOOD_LEAD = 2.0  # s between starting the flooder process and the flood phase
FLOODS = ("replies", "frames", "handshakes", "readers")
CONCURRENCY = 20  # handshakes (and never-reading sockets) opened at once
SETTLED_AFTER = 2.0  # s into a phase: the floods of sockets and handshakes are over by then


def person_address(index: int) -> str:
    return f"127.0.0.{10 + index}"


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def close_code(ws: Any) -> int | None:
    """The code of the close frame the server sent (None: none came, the TCP link just ended)."""
    rcvd = ws.protocol.close_rcvd
    return rcvd.code if rcvd is not None else None


def ws_url(base: str) -> str:
    return base.replace("http", "ws", 1) + "/ws/chat/"


async def open_socket(base: str, cookie: str, address: str, **options: Any) -> Any:
    """A chat socket from ``address`` (a loopback address: the server sees it as the client's)."""
    return await websockets.connect(
        ws_url(base),
        additional_headers={"Cookie": cookie},
        origin=base,  # type: ignore[arg-type]
        local_addr=(address, 0),  # forwarded to loop.create_connection
        open_timeout=10,
        max_size=2**24,
        proxy=None,
        **options,
    )


async def open_unread_socket(base: str, cookie: str, address: str) -> Any:
    """A chat socket that can really stop reading: a tiny receive window, and a client that
    pauses reading the transport as soon as one frame waits (``max_queue=1``)."""
    loop = asyncio.get_running_loop()
    host, port = base.rsplit("//", 1)[1].rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
        sock.bind((address, 0))
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, (host, int(port))), 10)
        return await websockets.connect(
            ws_url(base),
            sock=sock,
            additional_headers={"Cookie": cookie},
            origin=base,  # type: ignore[arg-type]
            open_timeout=10,
            max_size=2**24,
            max_queue=1,
            ping_interval=None,  # an unanswered keepalive would make the client close it
            proxy=None,
        )
    except BaseException:
        sock.close()
        raise


async def close_quietly(ws: Any, timeout: float = 3.0) -> None:
    with suppress(Exception):
        await asyncio.wait_for(ws.close(), timeout)


# --- memory -------------------------------------------------------------------------------


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def process_label(pid: int) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "child"
    text = b" ".join(args).decode(errors="replace")
    if "inference.model_process" in text:
        return "model"
    if "resource_tracker" in text:
        return "resource tracker"
    return Path(args[0].decode(errors="replace")).name or "child"


class Sampler(threading.Thread):
    """Peak RSS of every process, per phase, sampled every ``interval`` seconds.

    ``roots``: (name, pid, with its children). The server's processes are listed with their
    children (the model process, found anew each time: it starts lazily); this command's own
    process without (daphne is one of its children)."""

    def __init__(self, roots: list[tuple[str, int, bool]], interval: float = 0.5) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.roots = roots
        self.interval = interval
        self.lock = threading.Lock()
        self.phase: str | None = None
        self.extra: list[tuple[str, int, bool]] = []
        self.peaks: dict[str, dict[str, float]] = {}
        self.stopped = threading.Event()

    def set_phase(
        self, phase: str | None, extra: list[tuple[str, int, bool]] | None = None
    ) -> None:
        with self.lock:
            self.phase = phase
            self.extra = extra or []
        if phase is not None:
            self.sample()

    def snapshot(self, roots: list[tuple[str, int, bool]]) -> dict[str, float]:
        found: dict[str, float] = {}
        for name, pid, with_children in roots:
            value = rss(pid)
            if value is None:
                continue
            found[name] = value
            if not with_children:
                continue
            for child in livedaphne.children(pid):
                if cmdline(child) == cmdline(pid):
                    continue  # forked and not yet exec'd: the parent's pages, counted there
                label, k = f"{name} > {process_label(child)}", 2
                while label in found:
                    label, k = f"{name} > {process_label(child)} {k}", k + 1
                child_rss = rss(child)
                if child_rss is not None:
                    found[label] = child_rss
        return found

    def sample(self) -> None:
        with self.lock:
            phase, roots = self.phase, [*self.roots, *self.extra]
        if phase is None:
            return
        snap = self.snapshot(roots)
        with self.lock:
            peaks = self.peaks.setdefault(phase, {})
            for name, value in snap.items():
                peaks[name] = max(peaks.get(name, 0.0), value)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.sample()
            except Exception:  # a process ending mid-read: the next sample has it right
                continue

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


# --- the people ---------------------------------------------------------------------------


@dataclass
class Turn:
    """One ``chat.send`` of a person and what that person saw of it."""

    phase: str
    person: int
    client_id: str
    content: str
    sent: float = 0.0
    conversation: str | None = None
    user_message: str | None = None
    reply: str | None = None
    text: str = ""
    first: float | None = None
    end: float | None = None
    tokens: int = 0
    model_ttft: float | None = None  # ms, the model process's own (stream.end timings)
    finish: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.sent

    @property
    def decode_rate(self) -> float | None:
        if self.first is None or self.end is None or self.tokens < 2 or self.end <= self.first:
            return None
        return (self.tokens - 1) / (self.end - self.first)

    @property
    def ok(self) -> bool:
        return self.finish in ("stop", "length") and not self.errors


class Person:
    """One simulated person: one socket, one reply at a time, paced under the server's limits."""

    def __init__(self, index: int, base: str, cookie: str, args: argparse.Namespace) -> None:
        self.index, self.base, self.cookie, self.args = index, base, cookie, args
        self.address = person_address(index)
        self.ws: Any = None
        self.next_send = 0.0
        self.rng = random.Random(args.seed * 1000 + index)
        self.connects = 0

    async def connect(self) -> None:
        self.connects += 1
        self.ws = await open_socket(self.base, self.cookie, self.address)

    async def run(self, phase: str, until: float, turns: list[Turn], max_turns: int) -> None:
        loop = asyncio.get_running_loop()
        for k in range(max_turns):
            wait = max(0.0, self.next_send - loop.time())
            if loop.time() + wait >= until:
                break
            await asyncio.sleep(wait)
            turn = self.compose(phase, k)
            turns.append(turn)
            await self.converse(turn)
            think = self.args.think * self.rng.uniform(0.5, 1.5)
            await asyncio.sleep(max(0.0, min(think, until - loop.time())))

    def compose(self, phase: str, k: int) -> Turn:
        prompt = PROMPTS[(self.index + k) % len(PROMPTS)]  # the same sequence in every phase
        if self.args.backend == "test":
            prompt = f"[[slow {self.args.token_ms}]] [[long {self.args.max_new_tokens}]] {prompt}"
        tag = f"p{self.index}-{phase.replace(' ', '')}-t{k}"
        return Turn(phase=phase, person=self.index, client_id=tag, content=prompt)

    async def converse(self, turn: Turn) -> None:
        loop = asyncio.get_running_loop()
        if self.ws is None:
            try:
                await self.connect()
            except Exception as exc:
                turn.errors.append(f"connect_failed ({describe(exc)})")
                self.next_send = loop.time() + self.args.min_interval
                return
        frame: dict[str, Any] = {
            "type": "chat.send",
            "conversation": None,
            "content": turn.content,
            "client_id": turn.client_id,
            "options": {"max_new_tokens": self.args.max_new_tokens},
        }
        if self.args.backend != "test":
            frame["options"]["temperature"] = 0
        turn.sent = loop.time()
        self.next_send = turn.sent + self.args.min_interval
        try:
            await self.ws.send(json.dumps(frame))
        except ConnectionClosed as exc:
            turn.errors.append(f"socket_closed_{exc.rcvd.code if exc.rcvd else 'abnormal'}")
            self.ws = None
            return
        deadline = turn.sent + self.args.reply_timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                turn.errors.append("reply_timeout")
                return
            try:
                raw = await asyncio.wait_for(self.ws.recv(), left)
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                turn.errors.append(f"socket_closed_{exc.rcvd.code if exc.rcvd else 'abnormal'}")
                self.ws = None
                return
            got = json.loads(raw)
            kind = got.get("type")
            if kind in ("conversation.created", "message.saved"):
                if got.get("client_id") == turn.client_id:
                    turn.conversation = got["conversation"]
                    if kind == "message.saved":
                        turn.user_message = got["message"]["id"]
            elif kind == "error":
                turn.errors.append(str(got.get("code")))
                if got.get("client_id") == turn.client_id:
                    return  # refused: nothing of it was saved, no stream will come
            elif kind == "stream.start":
                if turn.reply is None and got.get("conversation") == turn.conversation:
                    turn.reply = got["message"]
            elif kind == "stream.delta" and got.get("message") == turn.reply:
                if got["offset"] != len(turn.text):
                    turn.errors.append("offset_mismatch")
                turn.text = turn.text[: got["offset"]] + got["delta"]
                if turn.first is None:
                    turn.first = loop.time()
            elif kind == "stream.end" and got.get("message") == turn.reply:
                turn.end = loop.time()
                turn.finish = got.get("finish_reason")
                turn.tokens = int((got.get("usage") or {}).get("completion_tokens") or 0)
                turn.model_ttft = (got.get("timings") or {}).get("ttft_ms")
                return

    async def close(self) -> None:
        if self.ws is not None:
            await close_quietly(self.ws)
            self.ws = None


# --- the flooder (its own process) --------------------------------------------------------


def flood_report() -> dict[str, Any]:
    return {
        "late_s": 0.0,
        "control": {
            "error": None,
            "conversations": 0,
            "replies_started": 0,
            "regenerates": 0,
            "ended": Counter(),
            "errors": Counter(),
            "close_code": None,
        },
        "frames": {
            "error": None,
            "planned": 0,
            "sent": 0,
            "seconds": 0.0,
            "received": 0,
            "rate_limited": 0,
            "retry_after_max": None,
            "errors": Counter(),
            "closed_by_server": None,
            "close_reason": "",
            "stopped_at_phase_end": False,
        },
        "handshakes": {
            "planned": 0,
            "attempted": 0,
            "accepted": 0,
            "refused": Counter(),
            "closed": Counter(),
            "errors": Counter(),
            "seconds": 0.0,
        },
        "readers": {
            "planned": 0,
            "attempted": 0,
            "open": 0,
            "unconfirmed": 0,
            "refused": Counter(),
            "closed_at_open": Counter(),
            "errors": Counter(),
            "closed_during_flood": Counter(),
            "open_at_end": 0,
            "drained_kb": 0.0,
            "seconds": 0.0,
        },
    }


class Flood:
    """One account doing everything at once (see the module docstring); never raises."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.c = config
        self.base, self.cookie = config["base"], config["cookie"]
        self.report = flood_report()
        self.conversations: list[str] = []
        self.ready = asyncio.Event()
        self.stop = asyncio.Event()

    async def run(self) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, self.c["start_at"] - time.monotonic()))
        self.report["late_s"] = round(max(0.0, time.monotonic() - self.c["start_at"]), 3)
        enabled = self.c["floods"]
        self.report["floods"] = enabled
        control = None
        if "replies" in enabled:
            control = asyncio.create_task(self.control())
            with suppress(TimeoutError):
                await asyncio.wait_for(self.ready.wait(), 20)
        tasks = {
            name: asyncio.create_task(start())
            for name, start in (
                ("frames", self.frames),
                ("handshakes", self.handshakes),
                ("readers", self.open_readers),
            )
            if name in enabled
        }
        self.report["started_at_s"] = round(time.monotonic() - self.c["start_at"], 2)
        await asyncio.sleep(max(0.0, self.c["until"] - time.monotonic()))
        self.stop.set()
        for task in tasks.values():
            try:
                await asyncio.wait_for(asyncio.shield(task), 20)
            except (TimeoutError, Exception):
                task.cancel()
        if control is not None:
            try:
                await asyncio.wait_for(control, 30)  # it stops its replies, waits for their end
            except (TimeoutError, Exception):
                control.cancel()
        readers = tasks.get("readers")
        if readers is not None and readers.done() and not readers.cancelled():
            if readers.exception() is None:
                await self.drain_readers(readers.result())
            else:
                self.report["readers"]["errors"][describe(readers.exception())] += 1
        return self.report

    # 1. its own three replies, kept streaming -------------------------------------------

    def send_frame(self, k: int) -> dict[str, Any]:
        tokens = self.c["flood_tokens"]
        if self.c["backend"] == "test":
            content = f"[[slow {self.c['token_ms']}]] [[long {tokens}]] {LONG_PROMPT[:60]}"
            options: dict[str, Any] = {"max_new_tokens": tokens}
        else:
            content = LONG_PROMPT
            options = {"temperature": 0, "max_new_tokens": tokens}
        return {
            "type": "chat.send",
            "conversation": None,
            "content": content,
            "client_id": f"flood-send-{k}",
            "options": options,
        }

    async def control(self) -> None:
        rep = self.report["control"]
        try:
            ws = await open_socket(self.base, self.cookie, FLOOD_ADDRESS, ping_interval=None)
        except Exception as exc:
            rep["error"] = describe(exc)
            self.ready.set()
            return
        streaming: set[str] = set()
        due: dict[str, float] = {}  # conversation -> when to regenerate
        stop_sent_at: float | None = None
        started = time.monotonic()
        try:
            for k in range(3):
                await ws.send(json.dumps(self.send_frame(k)))
            while True:
                now = time.monotonic()
                if self.stop.is_set():
                    if stop_sent_at is None:
                        stop_sent_at = now
                        for conversation in self.conversations:
                            await ws.send(
                                json.dumps({"type": "chat.stop", "conversation": conversation})
                            )
                    if not streaming or now - stop_sent_at > 25:
                        break
                else:
                    for conversation, when in list(due.items()):
                        if when <= now:
                            del due[conversation]
                            rep["regenerates"] += 1
                            await ws.send(
                                json.dumps(
                                    {
                                        "type": "chat.regenerate",
                                        "conversation": conversation,
                                        "client_id": f"flood-regen-{conversation}",
                                    }
                                )
                            )
                if not self.ready.is_set() and now - started > 15:
                    self.ready.set()
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.25)
                except TimeoutError:
                    continue
                got = json.loads(raw)
                kind = got.get("type")
                if kind == "conversation.created" and str(got.get("client_id", "")).startswith(
                    "flood-send-"
                ):
                    if got["conversation"] not in self.conversations:
                        self.conversations.append(got["conversation"])
                        rep["conversations"] = len(self.conversations)
                    if len(self.conversations) >= 3:
                        self.ready.set()
                elif kind == "stream.start" and got.get("conversation") in self.conversations:
                    streaming.add(got["conversation"])
                    rep["replies_started"] += 1
                elif kind == "stream.end" and got.get("conversation") in self.conversations:
                    streaming.discard(got["conversation"])
                    rep["ended"][str(got.get("finish_reason"))] += 1
                    if not self.stop.is_set():
                        due[got["conversation"]] = time.monotonic()
                elif kind == "error":
                    code = str(got.get("code"))
                    rep["errors"][code] += 1
                    client_id = str(got.get("client_id") or "")
                    if client_id.startswith("flood-regen-") and not self.stop.is_set():
                        retry = float(got.get("retry_after") or 2)
                        due[client_id.removeprefix("flood-regen-")] = time.monotonic() + retry
                    elif client_id.startswith("flood-send-"):
                        self.ready.set()  # refused: go on with what there is
        except ConnectionClosed as exc:
            rep["close_code"] = exc.rcvd.code if exc.rcvd else "abnormal"
        except Exception as exc:
            rep["error"] = describe(exc)
        finally:
            self.ready.set()
            await close_quietly(ws)

    # 2. frames as fast as the socket takes them -----------------------------------------

    async def frames(self) -> None:
        rep = self.report["frames"]
        rep["planned"] = count = self.c["flood_frames"]
        try:
            ws = await open_socket(self.base, self.cookie, FLOOD_ADDRESS, ping_interval=None)
        except InvalidStatus as exc:
            rep["error"] = f"handshake refused: HTTP {exc.response.status_code}"
            return
        except Exception as exc:
            rep["error"] = describe(exc)
            return
        conversation = self.conversations[0] if self.conversations else str(uuid.uuid4())
        frame = json.dumps({"type": "chat.subscribe", "conversation": conversation})

        async def read() -> None:
            try:
                async for raw in ws:
                    rep["received"] += 1
                    if '"type":"error"' in raw or '"type": "error"' in raw:
                        got = json.loads(raw)
                        rep["errors"][str(got.get("code"))] += 1
                        if got.get("code") == "rate_limited":
                            rep["rate_limited"] += 1
                            retry = got.get("retry_after")
                            if isinstance(retry, int | float):
                                rep["retry_after_max"] = max(rep["retry_after_max"] or 0, retry)
            except ConnectionClosed:
                pass
            rcvd = ws.protocol.close_rcvd
            if rcvd is not None and not self.stop.is_set():
                rep["closed_by_server"] = rcvd.code
                rep["close_reason"] = rcvd.reason[:200]

        async def send() -> None:
            started = time.monotonic()
            try:
                for i in range(count):
                    await ws.send(frame)
                    rep["sent"] += 1
                    if i % 500 == 499:
                        await asyncio.sleep(0)  # let the reader run
            except ConnectionClosed:
                pass
            finally:
                rep["seconds"] = round(time.monotonic() - started, 2)

        reader = asyncio.create_task(read())
        sender = asyncio.create_task(send())
        stop = asyncio.create_task(self.stop.wait())
        await asyncio.wait([sender, stop], return_when=asyncio.FIRST_COMPLETED)
        if not sender.done():
            rep["stopped_at_phase_end"] = True
            sender.cancel()
        await asyncio.wait([reader, stop], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        await close_quietly(ws)
        reader.cancel()

    # 3. handshakes ----------------------------------------------------------------------

    async def handshakes(self) -> None:
        rep = self.report["handshakes"]
        rep["planned"] = total = self.c["flood_handshakes"]
        numbers = iter(range(total))
        started = time.monotonic()

        async def lane() -> None:
            for _ in numbers:  # shared by the lanes: ``total`` handshakes in all
                if self.stop.is_set():
                    return
                rep["attempted"] += 1
                try:
                    ws = await open_socket(
                        self.base, self.cookie, HANDSHAKE_ADDRESS, ping_interval=None
                    )
                except InvalidStatus as exc:
                    rep["refused"][str(exc.response.status_code)] += 1
                    continue
                except Exception as exc:
                    rep["errors"][type(exc).__name__] += 1
                    continue
                code: int | str | None = None
                try:
                    await asyncio.wait_for(ws.recv(), 0.05)  # a close right after the accept?
                except ConnectionClosed:
                    code = close_code(ws) or "abnormal"
                except TimeoutError:
                    pass
                if code is None:
                    rep["accepted"] += 1
                else:
                    rep["closed"][str(code)] += 1
                await close_quietly(ws)

        try:
            await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))
        finally:
            rep["seconds"] = round(time.monotonic() - started, 2)

    # 4. sockets that never read ---------------------------------------------------------

    async def open_readers(self) -> list[Any]:
        rep = self.report["readers"]
        rep["planned"] = total = self.c["flood_readers"]
        gate = asyncio.Semaphore(CONCURRENCY)
        subscribes = [
            json.dumps({"type": "chat.subscribe", "conversation": c}) for c in self.conversations
        ]

        async def one(i: int) -> Any:
            async with gate:
                if self.stop.is_set():
                    return None
                rep["attempted"] += 1
                address = READER_ADDRESSES[i % len(READER_ADDRESSES)]
                try:
                    ws = await open_unread_socket(self.base, self.cookie, address)
                except InvalidStatus as exc:
                    rep["refused"][str(exc.response.status_code)] += 1
                    return None
                except Exception as exc:
                    rep["errors"][type(exc).__name__] += 1
                    return None
                try:
                    for frame in subscribes:
                        await ws.send(frame)
                    answered, deadline = 0, time.monotonic() + 10
                    while answered < len(subscribes):
                        left = deadline - time.monotonic()
                        if left <= 0:
                            rep["unconfirmed"] += 1
                            break
                        raw = await asyncio.wait_for(ws.recv(), left)
                        if '"type":"subscribed"' in raw or '"type": "subscribed"' in raw:
                            answered += 1
                    if not subscribes:  # no conversations: wait a moment for a 4429
                        await asyncio.wait_for(ws.recv(), 0.2)
                except TimeoutError:
                    if subscribes:
                        rep["unconfirmed"] += 1
                except ConnectionClosed:
                    rep["closed_at_open"][str(close_code(ws) or "abnormal")] += 1
                    return None
                except Exception as exc:
                    rep["errors"][type(exc).__name__] += 1
                    await close_quietly(ws, 1)
                    return None
                rep["open"] += 1
                return ws  # from here on, nobody reads it until the phase ends

        started = time.monotonic()
        opened = await asyncio.gather(*(one(i) for i in range(total)))
        rep["seconds"] = round(time.monotonic() - started, 2)
        return [ws for ws in opened if ws is not None]

    async def drain_readers(self, sockets: list[Any]) -> None:
        """After the phase: what each never-reading socket holds, down to a close frame (sent
        by the server during the flood) or 1 s of silence (still open)."""
        rep = self.report["readers"]

        async def drain(ws: Any) -> None:
            size = 0
            try:
                while True:
                    size += len(await asyncio.wait_for(ws.recv(), 1.0))
            except ConnectionClosed:
                rep["closed_during_flood"][str(close_code(ws) or "abnormal")] += 1
            except TimeoutError:
                rep["open_at_end"] += 1
            except Exception as exc:
                rep["errors"][f"drain {type(exc).__name__}"] += 1
            rep["drained_kb"] += size / 1024
            await close_quietly(ws, 2)

        try:
            await asyncio.wait_for(asyncio.gather(*(drain(ws) for ws in sockets)), 40)
        except TimeoutError:
            rep["errors"]["drain_timeout"] += 1
        rep["drained_kb"] = round(rep["drained_kb"], 1)


def flooder_main(config: dict[str, Any], results: Any) -> None:
    """The flooder process: run the flood, put its report (plain JSON types) on ``results``."""
    signal.alarm(max(1, int(config["until"] - time.monotonic() + 150)))  # default action: exit
    try:
        report: dict[str, Any] = asyncio.run(Flood(config).run())
    except BaseException as exc:
        report = {"failed": describe(exc)}
    results.put(json.loads(json.dumps(report)))


@dataclass
class FlooderProcess:
    proc: Any
    results: Any

    async def report(self, until: float) -> dict[str, Any]:
        """Its report, or why there is none (it must end within ``until`` + 120 s)."""
        limit = until + 120
        while True:
            try:
                return dict(self.results.get_nowait())
            except queue.Empty:
                pass
            if not self.proc.is_alive():
                try:
                    return dict(self.results.get(timeout=2))
                except queue.Empty:
                    return {"failed": f"the flooder process ended ({self.proc.exitcode}) silently"}
            if time.monotonic() > limit:
                self.stop()
                return {"failed": "the flooder process did not finish in time"}
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


def start_flooder(config: dict[str, Any]) -> FlooderProcess:
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads forked
    results = context.Queue()
    proc = context.Process(target=flooder_main, args=(config, results), name="abuse-flooder")
    proc.daemon = True
    proc.start()
    return FlooderProcess(proc, results)


# --- the run ------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    kind: str  # "quiet" or "flood"
    start: float
    until: float
    turns: list[Turn]
    flood: dict[str, Any] | None = None

    @property
    def span(self) -> float:
        ends = [t.end for t in self.turns if t.end is not None]
        return max(max(ends, default=self.until), self.until) - self.start


async def run_phase(
    name: str,
    kind: str,
    people: list[Person],
    args: argparse.Namespace,
    base: str,
    flooder_cookie: str,
    sampler: Sampler,
    flooders: list[FlooderProcess],
) -> Phase:
    loop = asyncio.get_running_loop()
    flooder = None
    start = loop.time()
    if kind == "flood":
        start += FLOOD_LEAD  # the flooder's interpreter starts meanwhile
        config = {
            "base": base,
            "cookie": flooder_cookie,
            "start_at": start,  # loop.time() is time.monotonic(): one clock for both processes
            "until": start + args.seconds,
            "backend": args.backend,
            "token_ms": args.token_ms,
            "flood_tokens": args.flood_tokens,
            "flood_frames": args.flood_frames,
            "flood_handshakes": args.flood_handshakes,
            "flood_readers": args.flood_readers,
            "floods": args.floods,
        }
        flooder = start_flooder(config)
        flooders.append(flooder)
        await asyncio.sleep(max(0.0, start - loop.time()))
    until = start + args.seconds
    for p in people:  # each phase starts spread out, not with everyone sending at once
        p.next_send = max(p.next_send, start + p.rng.uniform(0, args.min_interval))
    extra = [("bench (flooder)", flooder.proc.pid, False)] if flooder else []
    sampler.set_phase(name, extra)
    print(f"{name}: {args.seconds:.0f} s ...", flush=True)
    turns: list[Turn] = []
    await asyncio.gather(*(p.run(name, until, turns, args.max_turns) for p in people))
    report = await flooder.report(until) if flooder else None
    if flooder:
        flooder.stop()
    sampler.set_phase(None)
    return Phase(name, kind, start, until, turns, report)


async def session(
    args: argparse.Namespace,
    base: str,
    cookies: list[str],
    flooder_cookie: str,
    sampler: Sampler,
    flooders: list[FlooderProcess],
) -> tuple[list[Turn], list[Phase]]:
    loop = asyncio.get_running_loop()
    people = [Person(i, base, cookie, args) for i, cookie in enumerate(cookies)]
    try:
        await asyncio.gather(*(p.connect() for p in people))
        for p in people:  # spread their sends over the interval rather than all at once
            p.next_send = loop.time() + p.rng.uniform(0, args.min_interval)
        sampler.set_phase("warm-up")
        warm: list[Turn] = []
        horizon = loop.time() + args.reply_timeout + 30
        await asyncio.gather(*(p.run("warm-up", horizon, warm, 1) for p in people))
        sampler.set_phase(None)
        bad = [t.client_id for t in warm if not t.ok]
        print(f"warm-up: {len(warm) - len(bad)}/{len(warm)} replies ok {bad or ''}", flush=True)
        phases: list[Phase] = []
        for r in range(1, args.repeats + 1):
            for kind in ("quiet", "flood"):
                phases.append(
                    await run_phase(
                        f"{kind} {r}", kind, people, args, base, flooder_cookie, sampler, flooders
                    )
                )
        return warm, phases
    finally:
        await asyncio.gather(*(p.close() for p in people))


AUDIT_CODE = """
import json, os, time
from django.db.models import Count
from chat.models import Message
data = json.load(open(os.environ["ABUSE_AUDIT_FILE"]))
deadline = time.monotonic() + data["settle"]
while Message.objects.filter(status="streaming").exists() and time.monotonic() < deadline:
    time.sleep(0.5)
assistant = Message.objects.filter(role="assistant")
states = {r["status"]: r["n"] for r in
    assistant.values("status").annotate(n=Count("id")).order_by()}
users = {str(i): c for i, c in Message.objects.filter(id__in=list(data["users"])).values_list(
    "id", "content")}
replies = {str(i): [c, s] for i, c, s in Message.objects.filter(id__in=list(data["replies"]))
    .values_list("id", "content", "status")}
print("ABUSE-AUDIT " + json.dumps({"states": states, "users": users, "replies": replies}))
"""


def audit(env: dict[str, str], turns: list[Turn], settle: float) -> dict[str, Any]:
    """What the database holds against what the people were told and saw (``manage.py shell``
    against the server's own database: SQLite or PostgreSQL alike)."""
    users = {t.user_message: t.content for t in turns if t.user_message}
    replies = {t.reply: t.text for t in turns if t.reply and t.finish in ("stop", "length")}
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="abuse-audit-") as f:
        json.dump({"settle": settle, "users": list(users), "replies": list(replies)}, f)
        f.flush()
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", AUDIT_CODE],
            cwd=ROOT,
            env=livedaphne.clean_env(**env, ABUSE_AUDIT_FILE=f.name),
            capture_output=True,
            text=True,
            timeout=settle + 120,
        )
    line = next((x for x in done.stdout.splitlines() if x.startswith("ABUSE-AUDIT ")), None)
    if line is None:
        raise RuntimeError(f"the database audit failed: {done.stderr[-2000:]}")
    found = json.loads(line.removeprefix("ABUSE-AUDIT "))
    lost = [uid for uid, content in users.items() if found["users"].get(uid) != content]
    mismatched = [
        rid
        for rid, text in replies.items()
        if found["replies"].get(rid, ["", "missing"]) != [text, "complete"]
    ]
    return {
        "assistant_states": found["states"],
        "streaming_left": int(found["states"].get("streaming", 0)),
        "user_turns_checked": len(users),
        "user_turns_lost": lost[:10],
        "replies_checked": len(replies),
        "replies_mismatched": mismatched[:10],
        "ok": not lost and not mismatched and not found["states"].get("streaming"),
    }


def healthy(server: livedaphne.Server, worker: livedaphne.Service | None) -> bool:
    try:
        with urllib.request.urlopen(server.url + "/healthz", timeout=10) as response:
            ok = response.status == 200
    except OSError:
        ok = False
    alive = server.service.proc.poll() is None and (worker is None or worker.proc.poll() is None)
    return ok and alive


def sign_up_all(base: str, count: int) -> tuple[list[str], str]:
    names = [f"abuse-person{i}" for i in range(count)] + ["abuse-flooder"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        cookies = list(pool.map(lambda name: signup(base, name), names))
    return cookies[:-1], cookies[-1]


def run(args: argparse.Namespace) -> dict[str, Any]:
    env = {
        "DJANGO_SECRET_KEY": SECRET,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_LOG_LEVEL": "warning",
        "STELLARCHAT_BACKEND": args.backend,
        "HF_HUB_OFFLINE": "1",
    }
    load_start = os.getloadavg()
    flooders: list[FlooderProcess] = []
    with ExitStack() as stack:
        env["STELLARCHAT_DATA_DIR"] = stack.enter_context(
            tempfile.TemporaryDirectory(prefix="stellarchat-abuse-")
        )
        server, worker = stack.enter_context(
            livedaphne.topology(args.topology, env, redis_index=args.redis_index)
        )
        stack.callback(lambda: [f.stop() for f in flooders])
        cookies, flooder_cookie = sign_up_all(server.url, args.people)
        if args.clients_nice:  # from here on: this process, and the flooder it starts later
            os.nice(args.clients_nice)
        roots = [("web (daphne)", server.service.pid, True)]
        if worker is not None:
            roots.append(("worker", worker.pid, True))
        roots.append(("bench (people)", os.getpid(), False))
        sampler = Sampler(roots)
        sampler.start()
        stack.callback(sampler.stop)
        print(
            f"server {server.url} ({args.topology}, {args.backend} backend, pid "
            f"{server.service.pid}{f', worker pid {worker.pid}' if worker else ''}); "
            f"{args.people} people from 127.0.0.{10}-{9 + args.people}, flooder from "
            f"{FLOOD_ADDRESS} (sockets), {HANDSHAKE_ADDRESS} (handshakes), "
            f"{READER_ADDRESSES[0]}-{READER_ADDRESSES[-1].rsplit('.', 1)[1]} (never-readers)",
            flush=True,
        )
        warm, phases = asyncio.run(
            session(args, server.url, cookies, flooder_cookie, sampler, flooders)
        )
        sampler.set_phase(None)
        turns = warm + [t for p in phases for t in p.turns]
        checked = audit(env, turns, settle=args.reply_timeout)
        health = healthy(server, worker)
        summary = summarize(args, phases, sampler.peaks, checked, health, load_start)
        if not summary["nothing_lost"] or not health:
            for svc in [server.service, *([worker] if worker else [])]:
                notable = [
                    line
                    for line in svc.output().splitlines()
                    if re.search(r"WARNING|ERROR|CRITICAL|Traceback|Error", line)
                ]
                print(f"--- {svc.name} log ---", *notable[-60:], sep="\n", file=sys.stderr)
    return summary


# --- the report ---------------------------------------------------------------------------


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def people_stats(phases: list[Phase]) -> dict[str, Any]:
    turns = [t for p in phases for t in p.turns]
    ttfts = [t.ttft * 1000 for t in turns if t.ttft is not None]
    settled = [  # sent once the flood's first seconds are over (and the same in a quiet phase)
        t.ttft * 1000
        for p in phases
        for t in p.turns
        if t.ttft is not None and t.sent - p.start >= SETTLED_AFTER
    ]
    rates = [r for t in turns if (r := t.decode_rate) is not None]
    span = sum(p.span for p in phases)
    errors: Counter[str] = Counter(e for t in turns for e in t.errors)
    return {
        "sent": len(turns),
        "completed": sum(1 for t in turns if t.ok),
        "not_completed": [t.client_id for t in turns if not t.ok][:10],
        "ttft_p50_ms": rounded(percentile(ttfts, 0.5)),
        "ttft_p95_ms": rounded(percentile(ttfts, 0.95)),
        "ttft_p95_settled_ms": rounded(percentile(settled, 0.95)),
        # the model process's part: from the job's arrival there to its first token
        "model_ttft_p95_ms": rounded(
            percentile([t.model_ttft for t in turns if t.model_ttft is not None], 0.95)
        ),
        "tokens": sum(t.tokens for t in turns),
        "tokens_per_s": rounded(sum(t.tokens for t in turns) / span if span > 0 else None),
        "decode_tok_s_p50": rounded(statistics.median(rates) if rates else None),
        "errors": dict(errors),
        "slowest_ttft": [  # [ms, s into its phase]: when the others felt it
            [round(t.ttft * 1000), round(t.sent - p.start, 1)]
            for p, t in sorted(
                ((p, t) for p in phases for t in p.turns if t.ttft is not None),
                key=lambda pt: -(pt[1].ttft or 0),
            )[:5]
        ],
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 2)


def summarize(
    args: argparse.Namespace,
    phases: list[Phase],
    peaks: dict[str, dict[str, float]],
    checked: dict[str, Any],
    health: bool,
    load_start: tuple[float, float, float],
) -> dict[str, Any]:
    quiet = people_stats([p for p in phases if p.kind == "quiet"])
    flood = people_stats([p for p in phases if p.kind == "flood"])
    memory: dict[str, dict[str, float | None]] = {}
    for phase in ["warm-up", *(p.name for p in phases)]:
        for name, value in peaks.get(phase, {}).items():
            memory.setdefault(name, {})[phase] = round(value / MB, 1)
    memory = {n: memory[n] for n in sorted(memory, key=lambda n: (n.startswith("bench"), n))}
    rss_ratios: dict[str, float | None] = {}  # each server process: flood r / quiet r, worst r
    for name, row in memory.items():
        if name.startswith("bench"):
            continue
        pairs = [
            ratio(row.get(f"flood {r}"), row.get(f"quiet {r}")) for r in range(1, args.repeats + 1)
        ]
        known = [x for x in pairs if x is not None]
        rss_ratios[name] = max(known) if known else None
    ttft_ratio = ratio(flood["ttft_p95_ms"], quiet["ttft_p95_ms"])
    tokens_ratio = ratio(flood["tokens_per_s"], quiet["tokens_per_s"])
    people_ok = all(t.ok for p in phases for t in p.turns)
    nothing_lost = people_ok and checked["ok"]
    worst_rss = max((x for x in rss_ratios.values() if x is not None), default=None)
    goals = {
        "ttft_p95_within_2x": ttft_ratio is not None and ttft_ratio <= 2.0,
        "tokens_per_s_at_least_0.8x": tokens_ratio is not None and tokens_ratio >= 0.8,
        "rss_within_2x": worst_rss is not None and worst_rss <= 2.0,
        "nothing_lost": nothing_lost,
    }
    return {
        "topology": args.topology,
        "backend": args.backend,
        "people": args.people,
        "seconds": args.seconds,
        "clients_nice": args.clients_nice,
        "repeats": args.repeats,
        "phases": [
            {"name": p.name, **people_stats([p]), "span_s": round(p.span, 1)} for p in phases
        ],
        "quiet": quiet,
        "flood": flood,
        "ttft_p95_ratio": ttft_ratio,
        "tokens_per_s_ratio": tokens_ratio,
        "floods": {p.name: p.flood for p in phases if p.flood is not None},
        "memory_mb": memory,
        "rss_ratio": rss_ratios,
        "audit": checked,
        "healthy": health,
        "nothing_lost": nothing_lost,
        "goals": goals,
        "goals_met": all(goals.values()),
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }


def fmt(value: Any) -> str:
    return "-" if value is None else str(value)


def counts(value: dict[str, int] | None) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted((value or {}).items())) or "none"


def show_flood(name: str, f: dict[str, Any]) -> None:
    if f.get("failed"):
        print(f"  {name}: the flooder FAILED: {f['failed']}")
        return
    c, fr, h, r = f["control"], f["frames"], f["handshakes"], f["readers"]
    on = f.get("floods", FLOODS)
    print(
        f"  {name} (flooder started {f['late_s']} s late, its floods "
        f"{f.get('started_at_s', '-')} s into the phase):"
    )
    failure = f", FAILED: {c['error']}" if c["error"] else ""
    if "replies" not in on:
        print("    own replies:   off")
    else:
        print(
            f"    own replies:   {c['conversations']} conversations, {c['replies_started']} "
            f"replies started ({c['regenerates']} regenerates), ended {{{counts(c['ended'])}}}, "
            f"refusals {{{counts(c['errors'])}}}{failure}"
        )
    if "frames" not in on:
        print("    frames:        off")
    elif fr["error"]:
        print(f"    frames:        could not open its socket: {fr['error']}")
    else:
        rate = round(fr["sent"] / fr["seconds"]) if fr["seconds"] else "-"
        closed = (
            f"closed by the server with {fr['closed_by_server']} {fr['close_reason']!r}"
            if fr["closed_by_server"] is not None
            else "not closed by the server"
        )
        print(
            f"    frames:        sent {fr['sent']}/{fr['planned']} in {fr['seconds']} s "
            f"({rate}/s{', cut at the phase end' if fr['stopped_at_phase_end'] else ''}); "
            f"{fr['received']} frames back, rate_limited {fr['rate_limited']} (max retry_after "
            f"{fmt(fr['retry_after_max'])}), errors {{{counts(fr['errors'])}}}; {closed}"
        )
    if "handshakes" not in on:
        print("    handshakes:    off")
    else:
        print(
            f"    handshakes:    {h['attempted']}/{h['planned']} in {h['seconds']} s: accepted "
            f"{h['accepted']}, refused HTTP {{{counts(h['refused'])}}}, closed by the server "
            f"{{{counts(h['closed'])}}}, failed {{{counts(h['errors'])}}}"
        )
    if "readers" not in on:
        print("    never-readers: off")
    else:
        print(
            f"    never-readers: {r['attempted']}/{r['planned']} in {r.get('seconds', '-')} s: "
            f"held open {r['open']} ({r['unconfirmed']} subscriptions unanswered), closed at "
            f"once {{{counts(r['closed_at_open'])}}}, refused HTTP {{{counts(r['refused'])}}}, "
            f"failed {{{counts(r['errors'])}}}; at the end: closed by the server during the "
            f"flood {{{counts(r['closed_during_flood'])}}}, still open {r['open_at_end']}, "
            f"{r['drained_kb']} KB waiting in them"
        )


def show(s: dict[str, Any]) -> None:
    print(
        f"\nabuse: {s['people']} people, {s['repeats']} x (quiet {s['seconds']:.0f} s, flood "
        f"{s['seconds']:.0f} s), {s['topology']} topology, {s['backend']} backend, clients at "
        f"nice {s['clients_nice']}; load average "
        f"{s['loadavg_start']} -> {s['loadavg_end']}"
    )
    print("\nphase      sent  done  TTFT p50 ms  TTFT p95 ms  tokens/s  decode tok/s  errors")
    for p in s["phases"]:
        print(
            f"{p['name']:<10} {p['sent']:>4} {p['completed']:>5} {fmt(p['ttft_p50_ms']):>12} "
            f"{fmt(p['ttft_p95_ms']):>12} {fmt(p['tokens_per_s']):>9} "
            f"{fmt(p['decode_tok_s_p50']):>13}  {counts(p['errors'])}"
        )
    print("slowest TTFTs, ms @ s into the phase:")
    for p in s["phases"]:
        print(f"  {p['name']:<8} " + ", ".join(f"{ms} @ {at}" for ms, at in p["slowest_ttft"]))
    q, f = s["quiet"], s["flood"]
    print("\nthe people             quiet      flood   flood/quiet   goal")
    decode_ratio = ratio(f["decode_tok_s_p50"], q["decode_tok_s_p50"])
    rows = [
        (
            "TTFT p50 ms",
            q["ttft_p50_ms"],
            f["ttft_p50_ms"],
            ratio(f["ttft_p50_ms"], q["ttft_p50_ms"]),
            "",
        ),
        ("TTFT p95 ms", q["ttft_p95_ms"], f["ttft_p95_ms"], s["ttft_p95_ratio"], "<= 2x"),
        (
            f"... sent {SETTLED_AFTER:.0f} s+ in",
            q["ttft_p95_settled_ms"],
            f["ttft_p95_settled_ms"],
            ratio(f["ttft_p95_settled_ms"], q["ttft_p95_settled_ms"]),
            "",
        ),
        (
            "... in the model",
            q["model_ttft_p95_ms"],
            f["model_ttft_p95_ms"],
            ratio(f["model_ttft_p95_ms"], q["model_ttft_p95_ms"]),
            "",
        ),
        ("tokens/s", q["tokens_per_s"], f["tokens_per_s"], s["tokens_per_s_ratio"], ">= 0.8x"),
        ("decode tok/s p50", q["decode_tok_s_p50"], f["decode_tok_s_p50"], decode_ratio, ""),
        ("replies sent", q["sent"], f["sent"], None, ""),
        ("replies completed", q["completed"], f["completed"], None, "all"),
    ]
    for label, a, b, r, goal in rows:
        print(f"{label:<20} {fmt(a):>8} {fmt(b):>10} {fmt(r):>13}   {goal}")
    print(f"errors by code, quiet: {counts(q['errors'])}; flood: {counts(f['errors'])}")
    print("\nwhat the flooder did (one account)")
    for name, flood in s["floods"].items():
        show_flood(name, flood)
    columns = ["warm-up", *(p["name"] for p in s["phases"])]
    phases = [c for c in columns if any(c in row for row in s["memory_mb"].values())]
    print("\npeak RSS (MB)".ljust(29) + "".join(f"{c:>10}" for c in phases) + "  flood/quiet")
    for name, row in s["memory_mb"].items():
        cells = "".join(f"{fmt(row.get(c)):>10}" for c in phases)
        print(f"{name:<28}{cells}  {fmt(s['rss_ratio'].get(name, ''))}")
    a = s["audit"]
    print(
        f"\ndatabase: assistant turns by state {a['assistant_states']}; {a['user_turns_checked']} "
        f"user turns and {a['replies_checked']} replies checked: lost {a['user_turns_lost']}, "
        f"text differs {a['replies_mismatched']}, left streaming {a['streaming_left']}"
    )
    print(f"server healthy at the end: {s['healthy']}")
    g = s["goals"]
    worst = max((x for x in s["rss_ratio"].values() if x is not None), default=None)
    print(
        f"\ngoal: others' TTFT p95 within 2x of quiet: {fmt(s['ttft_p95_ratio'])}x "
        f"{'MET' if g['ttft_p95_within_2x'] else 'NOT MET'}"
    )
    print(
        f"goal: others' tokens/s >= 0.8x of quiet: {fmt(s['tokens_per_s_ratio'])}x "
        f"{'MET' if g['tokens_per_s_at_least_0.8x'] else 'NOT MET'}"
    )
    print(
        f"goal: no server process past 2x its quiet peak RSS: worst {fmt(worst)}x "
        f"{'MET' if g['rss_within_2x'] else 'NOT MET'}"
    )
    not_done = q["not_completed"] + f["not_completed"]
    print(
        f"goal: nothing lost: {'MET' if g['nothing_lost'] else 'NOT MET'}"
        f"{'' if not not_done else f' (not completed: {not_done})'}"
    )
    print(f"verdict: {'all goals met' if s['goals_met'] else 'goals NOT all met'}")
    print(json.dumps(s, separators=(",", ":")), flush=True)  # last line: for programs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", choices=("embedded", "redis"), default="embedded")
    parser.add_argument("--backend", choices=("transformers", "test"), default="transformers")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    parser.add_argument("--repeats", type=int, default=1, help="quiet/flood pairs, alternating")
    parser.add_argument("--people", type=int, default=10, help="people chatting (at most 80)")
    parser.add_argument("--think", type=float, default=1.0, help="mean think time, s (+-50%%)")
    parser.add_argument(
        "--min-interval", type=float, default=60 / 28, help="s between one person's sends"
    )
    parser.add_argument("--max-new-tokens", type=int, default=48, help="per person's reply")
    parser.add_argument("--token-ms", type=int, default=2, help="test backend: ms per word")
    parser.add_argument("--max-turns", type=int, default=1000, help="per person and phase")
    parser.add_argument("--reply-timeout", type=float, default=60.0, help="s per reply")
    parser.add_argument("--flood-tokens", type=int, default=400, help="the flooder's replies")
    parser.add_argument("--flood-frames", type=int, default=100_000)
    parser.add_argument("--flood-handshakes", type=int, default=1_000)
    parser.add_argument("--flood-readers", type=int, default=200, help="never-reading sockets")
    parser.add_argument(
        "--floods",
        default=",".join(FLOODS),
        help=f"which floods the flooder runs (comma-separated, default all: {','.join(FLOODS)})",
    )
    parser.add_argument("--redis-index", type=int, default=5, help="--topology redis: Redis db")
    parser.add_argument(
        "--clients-nice",
        type=int,
        default=0,
        choices=range(20),
        metavar="N",
        help="run the people's and the flooder's clients at this CPU niceness (0-19), below the "
        "server, as clients on other machines would be (default 0: all on equal terms)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--hard-deadline", type=float, default=None, help="s; default seconds*4*repeats + 300"
    )
    args = parser.parse_args()
    if not 1 <= args.people <= 80 or args.repeats < 1 or args.seconds <= 0:
        parser.error("--people must be 1..80, --repeats >= 1, --seconds > 0")
    args.floods = [f.strip() for f in args.floods.split(",") if f.strip()]
    if set(args.floods) - set(FLOODS):
        parser.error(f"--floods: choose among {', '.join(FLOODS)}")
    hard = args.hard_deadline or args.seconds * 4 * args.repeats + 300
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(max(1, int(hard)))
    try:
        summary = run(args)
        show(summary)
    except (Exception, KeyboardInterrupt) as exc:
        traceback.print_exc()
        print(f"abuse run failed: {exc!r}", file=sys.stderr)
        print(json.dumps({"ok": False, "failed": repr(exc)[:500]}), flush=True)
        sys.exit(2)
    finally:
        signal.alarm(0)
    sys.exit(0 if summary["nothing_lost"] else 1)


if __name__ == "__main__":
    main()
