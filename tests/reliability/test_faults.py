"""The fault matrix: each part of a running deployment fails in the middle of a reply.

Every row runs against real processes (``faults.production``: daphne + ``runworker inference``
+ the test's own redis-server + a throwaway PostgreSQL database; row 6 the embedded single
process) and checks the same four promises:

- the user's turn is never lost (read from the database itself);
- the reply ends ``complete``, ``cancelled`` or ``failed`` with its text so far, never stuck
  ``streaming``;
- the person sees a clear message (the error frame the page shows) or the reply goes on;
- the service recovers by itself: a new message afterwards is answered.

Run with ``-s`` to see the matrix (row, outcome, time to recover).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.e2e.wsclient import LiveSocket, get, signup
from tests.reliability import faults
from tests.reliability.faults import Row, Stack, first, text_of, words

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

TIMEOUT = 3  # STELLARCHAT_STREAM_TIMEOUT of every stack here
SWEEP = 2.0  # the sweeper's interval (chat.replies.sweep_forever)
N = 200  # words of a reply; at 30 ms a word, long enough for the fault to land mid-way
PROMPT = f"[[slow 30]] [[long {N}]]"


def env(tmp: Any, **extra: str) -> dict[str, str]:
    return faults.app_env(tmp, TIMEOUT, **extra)


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Default settings: PostgreSQL through each process's connection pool."""
    with faults.production(env(tmp_path_factory.mktemp("faults"))) as stack:
        yield stack


@pytest.fixture(scope="module")
def persistent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Django's persistent connections instead (an operator's choice): for rows 3 and 3b, a
    cut connection would be reused unless Django notices it."""
    extra = {"DJANGO_CONN_MAX_AGE": "60"}
    with faults.production(env(tmp_path_factory.mktemp("persistent"), **extra)) as stack:
        yield stack


@pytest.fixture
def stack(production: Stack, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The shared deployment, whole again whatever an earlier row broke; logs on failure."""
    yield from faults.whole(production, request)


@pytest.fixture(params=["pool", "persistent"])
def db_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """Rows about database connections run with both ways of keeping them."""
    fixture = request.param.replace("pool", "production")
    yield from faults.whole(request.getfixturevalue(fixture), request)


async def start_reply(stack: Stack, name: str) -> tuple[str, LiveSocket, list[dict[str, Any]]]:
    """Sign up, send PROMPT, wait for the first delta: (cookie, socket, frames so far)."""
    cookie = await asyncio.to_thread(signup, stack.url, name)
    ws = await LiveSocket.open(stack.url, cookie)
    await ws.send({"type": "chat.send", "conversation": None, "content": PROMPT})
    return cookie, ws, await ws.until("stream.delta")


async def answered(ws: LiveSocket, text: str = "still there?", *, echo: bool = True) -> None:
    """The service recovered: a new conversation on this socket gets its whole reply (the
    test backend's echo, or any text of the real model's)."""
    await ws.send({"type": "chat.send", "conversation": None, "content": text})
    frames = await ws.until("stream.end", timeout=120)
    assert frames[-1]["finish_reason"] in (("stop",) if echo else ("stop", "length")), frames[-3:]
    reply = text_of(frames)
    assert reply == f"You said: {text} (turn 1)" if echo else reply.strip()


async def follow(ws: LiveSocket, conversation: str) -> tuple[list[dict[str, Any]], str]:
    """Subscribe (what a reconnected page does) and read until the reply ends, if it is
    still streaming: (frames, the text the socket ends up with)."""
    await ws.send({"type": "chat.subscribe", "conversation": conversation})
    frames = await ws.until("subscribed")
    if frames[-1]["streaming"]:
        frames += await ws.until("stream.end", timeout=30)
    return frames, text_of(frames)


async def drain(ws: LiveSocket, seconds: float) -> list[dict[str, Any]]:
    """The frames that arrive within ``seconds`` (or until the reply's stream.end)."""
    got: list[dict[str, Any]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (got and got[-1]["type"] == "stream.end"):
        try:
            got.append(await ws.recv(timeout=max(0.05, end - time.monotonic())))
        except TimeoutError:
            break
    return got


def user_turn_kept(rows: list[tuple[str, str, str]]) -> None:
    assert rows[0] == ("user", "complete", PROMPT), rows


async def worker_killed(stack: Stack, ws: LiveSocket, head: list[dict[str, Any]], row: Row) -> None:
    """Kill -9 the worker now; check the reply ends failed with its text so far, within the
    stream timeout, and that a restarted worker serves again."""
    conversation = head[0]["conversation"]
    prompt = (await asyncio.to_thread(stack.messages, conversation))[0][2]
    stack.kill(stack.worker)
    killed = time.monotonic()
    rest = await ws.until("stream.end", timeout=TIMEOUT + SWEEP + 15)
    row.settled_s = time.monotonic() - killed
    assert row.settled_s < TIMEOUT + SWEEP + 3  # the stream timeout and one sweep, plus slack
    error = first(rest, "error")
    assert error["code"] == "inference_unavailable" and "kept" in error["detail"]
    assert rest[-1]["finish_reason"] == "error"
    seen = text_of(head + rest)
    rows = await stack.settled(conversation)
    assert rows[0] == ("user", "complete", prompt)
    assert rows[1][:2] == ("assistant", "failed")
    assert seen.strip() and rows[1][2] == seen  # the text so far, shown and kept
    stack.start_worker()  # a supervisor restarts it; the web process needs nothing
    back = time.monotonic()
    await answered(ws, echo=stack.env["STELLARCHAT_BACKEND"] == "test")
    row.back_s = time.monotonic() - back
    row.outcome = f"failed (inference_unavailable), {len(seen.split())} words kept"


async def test_1_worker_killed_mid_reply(stack: Stack) -> None:
    row = Row("1 worker kill -9")
    _, ws, head = await start_reply(stack, "row1")
    while len(text_of(head).split()) < 40:  # well into the reply
        head.append(await ws.recv())
    await worker_killed(stack, ws, head, row)
    assert words(N).startswith(text_of(head))
    row.report()
    await ws.close()


async def test_1_worker_killed_mid_reply_of_the_bundled_model(tmp_path: Any) -> None:
    row = Row("1b worker kill -9, bundled model")
    settings = env(tmp_path, STELLARCHAT_BACKEND="transformers", HF_HUB_OFFLINE="1")
    with faults.production(settings) as stack:
        await faults.wait_ready(stack.url, 200, 120)  # the worker has its model loaded
        cookie = await asyncio.to_thread(signup, stack.url, "row1b")
        ws = await LiveSocket.open(stack.url, cookie)
        content = "Tell me a long story about the sea."
        options = {"max_new_tokens": 1024}
        await ws.send(
            {"type": "chat.send", "conversation": None, "content": content, "options": options}
        )
        head = await ws.until("stream.delta", timeout=120)
        while len(text_of(head).split()) < 8:  # a few words in, then the worker dies
            head.append(await ws.recv(timeout=30))
            assert head[-1]["type"] != "stream.end", "the model ended before the fault"
        await worker_killed(stack, ws, head, row)
        row.report()
        await ws.close()


async def test_2_redis_restarted_mid_reply(stack: Stack) -> None:
    row = Row("2 Redis stop + restart")
    cookie, ws, head = await start_reply(stack, "row2")
    conversation = head[0]["conversation"]
    stack.stop_redis()
    stopped = time.monotonic()
    body = await faults.wait_ready(stack.url, 503, 15)
    assert "channel_layer" in body["missing"]  # a clear answer while it is gone
    status, _ = await asyncio.to_thread(get, stack.url, f"/c/{conversation}/", cookie)
    assert status == 200  # pages that need only the database still work
    # The socket's own channel lives in Redis: it is closed with 1011, which the page shows
    # as "offline" and retries (static/js/chat.js). A frame that still got through would be
    # answered with a clear error instead.
    try:
        await ws.send({"type": "chat.send", "conversation": None, "content": "anyone?"})
        frames = await ws.until("error", timeout=15)
        assert frames[-1]["code"] == "inference_unavailable", frames[-1]
        assert "try again" in frames[-1]["detail"]
        seen_by_person = "an inference_unavailable error"
    except ConnectionClosed as exc:
        assert exc.rcvd is not None and exc.rcvd.code == 1011, exc
        seen_by_person = "socket closed 1011, page reconnects"
    await asyncio.sleep(max(0.0, TIMEOUT + SWEEP - (time.monotonic() - stopped)))  # outlast both

    stack.start_redis()  # back on the same address, empty
    back = time.monotonic()
    await faults.wait_ready(stack.url, 200, 30)  # recovered, nothing restarted
    ws = await faults.reconnect(stack.url, cookie)
    _, seen = await follow(ws, conversation)
    rows = await stack.settled(conversation)
    row.settled_s = time.monotonic() - stopped
    user_turn_kept(rows)
    # The worker carried on through the outage (the database was there): the whole reply,
    # not ended by a sweeper that found the heartbeat gone with Redis's keys.
    assert rows[1] == ("assistant", "complete", words(N)), rows[1][:2]
    assert words(N).startswith(seen)
    await answered(ws)
    row.back_s = time.monotonic() - back
    row.outcome = f"complete, whole reply; {seen_by_person}"
    row.report()
    await ws.close()


async def test_3_database_connections_cut_mid_reply(db_stack: Stack) -> None:
    stack = db_stack
    row = Row(f"3 PostgreSQL backends terminated ({stack.label})")
    _, ws, head = await start_reply(stack, "row3")
    conversation = head[0]["conversation"]
    cut = 0
    deadline = time.monotonic() + 30
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1]["type"] != "stream.end":  # cut again every 0.5 s
        cut += await asyncio.to_thread(stack.terminate_db_backends)
        frames += await drain(ws, 0.5)
        assert time.monotonic() < deadline, "the reply never ended"
    assert cut > 0  # the app's connections were there to cut
    rows = await stack.settled(conversation)
    user_turn_kept(rows)
    assert rows[1][2] == text_of(head + frames)  # what was shown is what was saved
    assert frames[-1]["finish_reason"] == "stop", [f for f in frames if f["type"] == "error"]
    assert rows[1] == ("assistant", "complete", words(N))
    cut += await asyncio.to_thread(stack.terminate_db_backends)  # the web's, idle, too
    back = time.monotonic()
    await answered(ws)
    row.back_s = time.monotonic() - back
    row.outcome = f"complete, no interruption ({cut} connections cut)"
    row.report()
    await ws.close()


async def test_3b_database_connection_cut_during_the_final_save(db_stack: Stack) -> None:
    """The cut lands exactly on the reply's final save (held on a row lock until then)."""
    stack = db_stack
    row = Row(f"3b PostgreSQL backend cut during the final save ({stack.label})")
    cookie = await asyncio.to_thread(signup, stack.url, "row3b")
    ws = await LiveSocket.open(stack.url, cookie)
    short = 60  # words; ends before the first save of the text so far (every 2 s)
    prompt = f"[[slow 20]] [[long {short}]]"
    await ws.send({"type": "chat.send", "conversation": None, "content": prompt})
    frames = await ws.until("stream.start")
    conversation, message = frames[-1]["conversation"], frames[-1]["message"]
    with stack.message_locked(message):
        while text_of(frames) != words(short):  # generated and shown; now it is being saved
            frames.append(await ws.recv())
            assert frames[-1]["type"] != "stream.end", frames[-1]
        deadline = time.monotonic() + 15
        while not await asyncio.to_thread(stack.lock_waiters):
            assert time.monotonic() < deadline, "the final save never reached the database"
            await asyncio.sleep(0.05)
        cut = await asyncio.to_thread(stack.terminate_db_backends)  # the lock's holder too
    cut_at = time.monotonic()
    frames += await ws.until("stream.end", timeout=30)
    row.settled_s = time.monotonic() - cut_at
    assert not [f for f in frames if f["type"] == "error"]
    assert frames[-1]["finish_reason"] == "stop"
    rows = await stack.settled(conversation)
    assert rows[0] == ("user", "complete", prompt)
    assert rows[1] == ("assistant", "complete", words(short))  # saved on a new connection
    back = time.monotonic()
    await answered(ws)
    row.back_s = time.monotonic() - back
    row.outcome = f"complete ({cut} connections cut, the save retried)"
    row.report()
    await ws.close()


async def test_3c_database_restart_between_messages(db_stack: Stack) -> None:
    """Every connection cut once while idle (a restart or failover): the next message is
    answered, and how soon is reported (the pool must not sit on its dead connections)."""
    stack = db_stack
    row = Row(f"3c PostgreSQL restart between messages ({stack.label})")
    cookie = await asyncio.to_thread(signup, stack.url, "row3c")
    ws = await LiveSocket.open(stack.url, cookie)
    await answered(ws, "before")
    cut = await asyncio.to_thread(stack.terminate_db_backends)
    assert cut > 0
    back = time.monotonic()
    await answered(ws, "after")
    row.back_s = time.monotonic() - back
    row.outcome = f"answered ({cut} connections cut)"
    row.report()
    await ws.close()


async def test_4_client_connection_dropped_mid_reply(stack: Stack) -> None:
    row = Row("4 client TCP drop + reconnect")
    cookie, ws, head = await start_reply(stack, "row4")
    conversation = head[0]["conversation"]
    faults.abort(ws)
    dropped = time.monotonic()
    await asyncio.sleep(1.0)  # the network is gone a moment; the page retries after 0.5-2 s
    fresh = await faults.reconnect(stack.url, cookie)
    await fresh.send({"type": "chat.subscribe", "conversation": conversation})
    frames = await fresh.until("stream.delta")  # subscribed, stream.start, the text so far
    row.settled_s = time.monotonic() - dropped
    assert frames[0]["type"] == "subscribed" and frames[0]["streaming"] is True
    assert len(frames[-1]["delta"]) > len(text_of(head))  # it went on while nobody listened
    frames += await fresh.until("stream.end", timeout=30)
    assert frames[-1]["finish_reason"] == "stop"
    assert text_of(frames) == words(N)  # the text so far, then the rest: once, in order
    rows = await stack.settled(conversation)
    user_turn_kept(rows)
    assert rows[1] == ("assistant", "complete", words(N))
    back = time.monotonic()  # nothing else to recover: the connection is back
    await answered(fresh)
    row.back_s = time.monotonic() - back
    row.outcome = "complete; the new socket got the text so far + the rest"
    row.report()
    await fresh.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_5_web_process_restarted_mid_reply(stack: Stack, sig: int) -> None:
    row = Row(f"5 web process {signal.Signals(sig).name} + restart")
    cookie, ws, head = await start_reply(stack, f"row5{sig}")
    conversation = head[0]["conversation"]
    stopped = time.monotonic()
    await asyncio.to_thread(stack.kill, stack.web, sig)
    with pytest.raises(ConnectionClosed):  # the page learns its socket is gone
        await ws.until("stream.end", timeout=15)
    stack.start_web()  # same port, as a supervisor (or the proxy's next upstream) does
    back = time.monotonic()
    fresh = await faults.reconnect(stack.url, cookie)
    await fresh.send({"type": "chat.subscribe", "conversation": conversation})
    frames = await fresh.until("subscribed")
    row.settled_s = time.monotonic() - stopped
    if frames[-1]["streaming"]:
        frames += await fresh.until("stream.end", timeout=30)
        assert frames[-1]["finish_reason"] == "stop"
        assert text_of(frames) == words(N)
    rows = await stack.settled(conversation)
    user_turn_kept(rows)
    assert rows[1] == ("assistant", "complete", words(N))  # the worker never noticed
    await answered(fresh)
    row.back_s = time.monotonic() - back
    row.outcome = "complete; the new socket got the text so far + the rest"
    row.report()
    await fresh.close()


async def test_6_embedded_process_killed_mid_reply(tmp_path: Any) -> None:
    row = Row("6 embedded daphne kill -9 + restart")
    with faults.embedded(env(tmp_path)) as stack:
        cookie, ws, frames = await start_reply(stack, "row6")
        conversation = frames[0]["conversation"]
        while len(text_of(frames).split()) < 100:  # past the first save of the text so far
            frames.append(await ws.recv())
        stack.kill(stack.web)
        killed = time.monotonic()
        seen = text_of(frames)
        stack.start_web()
        back = time.monotonic()
        fresh = await faults.reconnect(stack.url, cookie)
        after, _ = await follow(fresh, conversation)
        row.settled_s = time.monotonic() - killed
        assert after[0]["streaming"] is True  # left streaming by the dead process...
        error = first(after, "error")  # ...and ended by the new one's sweeper
        assert error["code"] == "inference_unavailable" and "kept" in error["detail"]
        assert after[-1]["finish_reason"] == "error"
        rows = await stack.settled(conversation)
        user_turn_kept(rows)
        assert rows[1][1] == "failed"
        assert rows[1][2] and seen.startswith(rows[1][2])  # the text as last saved
        assert text_of(after) == rows[1][2]
        await answered(fresh)
        row.back_s = time.monotonic() - back
        row.outcome = f"failed, {len(rows[1][2].split())}/{len(seen.split())} seen words saved"
        row.report()
        await fresh.close()
