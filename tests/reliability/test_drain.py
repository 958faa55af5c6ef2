"""Deploys that drop no reply: SIGTERM to a worker drains it, SIGTERM to a web process closes
its sockets with a code the page reconnects on.

Against real processes (``faults.production``: daphne + ``runworker inference`` + the test's
own redis-server + a throwaway PostgreSQL database; the embedded single process for the last
rows), with the test backend streaming ``[[long N]]`` words ``[[slow 30]]`` ms apart.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.e2e import livedaphne
from tests.e2e.wsclient import LiveSocket, signup
from tests.reliability import faults
from tests.reliability.faults import Stack, first, text_of, words

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

DRAIN = 4  # STELLARCHAT_DRAIN_SECONDS here
SHORT = 60  # words of a reply that ends within the drain time (~1.8 s)
LONG = 600  # ... and of one that does not (~18 s)


def env(tmp: Any) -> dict[str, str]:
    return faults.app_env(tmp, 5, STELLARCHAT_DRAIN_SECONDS=str(DRAIN))


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with faults.production(env(tmp_path_factory.mktemp("drain"))) as stack:
        yield stack


@pytest.fixture
def stack(production: Stack, request: pytest.FixtureRequest) -> Iterator[Stack]:
    yield from faults.whole(production, request)


async def reply(url: str, name: str, n: int) -> tuple[str, LiveSocket, list[dict[str, Any]]]:
    """Sign up, ask for ``n`` words, read to the first delta: (cookie, socket, frames)."""
    cookie = await asyncio.to_thread(signup, url, name)
    ws = await LiveSocket.open(url, cookie)
    await ws.send(
        {"type": "chat.send", "conversation": None, "content": f"[[slow 30]] [[long {n}]]"}
    )
    return cookie, ws, await ws.until("stream.delta")


async def exited(svc: livedaphne.Service, timeout: float) -> int:
    """The process's exit status, once it exits by itself within ``timeout``."""
    deadline = time.monotonic() + timeout
    while svc.proc.poll() is None:
        assert time.monotonic() < deadline, f"{svc.name} still running:\n{svc.output()[-3000:]}"
        await asyncio.sleep(0.1)
    return svc.proc.returncode


async def test_a_stopped_worker_finishes_its_replies_and_takes_no_new_one(stack: Stack) -> None:
    """SIGTERM while it streams a reply, with a new worker up: the reply ends whole from the
    old one; a message sent meanwhile is answered whole by the new one; the old one exits 0
    once its reply is done, having said what it did."""
    old = stack.worker
    assert old is not None
    _, ws, head = await reply(stack.url, "drain1", SHORT)
    conversation = head[0]["conversation"]
    stack.start_worker()  # a rolling restart: the new one is up before the old one stops
    new = stack.worker
    old.proc.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    cookie = await asyncio.to_thread(signup, stack.url, "drain1b")
    other = await LiveSocket.open(stack.url, cookie)
    await other.send({"type": "chat.send", "conversation": None, "content": "after the stop"})
    rest = await ws.until("stream.end", timeout=30)
    assert rest[-1]["finish_reason"] == "stop" and not any(f["type"] == "error" for f in rest)
    assert text_of(head + rest) == words(SHORT)
    answer = await other.until("stream.end", timeout=30)
    assert answer[-1]["finish_reason"] == "stop"
    assert text_of(answer) == "You said: after the stop (turn 1)"
    assert await exited(old, DRAIN + 10) == 0
    assert time.monotonic() - stopped < DRAIN + 10
    log = old.output()
    assert "stopping: taking no new job; finishing 1 replies" in log and "stopped" in log
    message = first(answer, "stream.start")["message"]
    assert message not in log  # the new one's, not the stopping one's
    assert new is not None and f"reply {message}: generating" in new.output()
    rows = await stack.settled(conversation)
    assert rows[1] == ("assistant", "complete", words(SHORT))
    assert new.proc.poll() is None
    await ws.close()
    await other.close()


async def test_past_the_drain_time_a_reply_ends_with_its_text_kept(stack: Stack) -> None:
    """A reply longer than STELLARCHAT_DRAIN_SECONDS: at the deadline it ends with an error
    saying the server restarted, the text streamed so far shown and saved; the worker exits
    then, not at the stream timeout's sweep."""
    old = stack.worker
    assert old is not None
    _, ws, head = await reply(stack.url, "drain2", LONG)
    conversation = head[0]["conversation"]
    stack.start_worker()
    old.proc.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    rest = await ws.until("stream.end", timeout=DRAIN + 20)
    ended = time.monotonic() - stopped
    assert DRAIN - 0.5 < ended < DRAIN + 5, ended
    error = first(rest, "error")
    assert error["code"] == "inference_unavailable" and "restarted" in error["detail"]
    assert "kept" in error["detail"]
    assert rest[-1]["finish_reason"] == "error"
    seen = text_of(head + rest)
    assert seen and words(LONG).startswith(seen) and seen != words(LONG)
    assert await exited(old, 15) == 0
    rows = await stack.settled(conversation)
    assert rows[1] == ("assistant", "failed", seen)
    await ws.close()


async def test_a_stopped_web_process_closes_sockets_with_1012_and_the_reply_goes_on(
    stack: Stack,
) -> None:
    """SIGTERM to the web process (production: its worker goes on): its sockets close with
    1012 (service restart: the page reconnects), the process exits 0, and a reconnected page
    that subscribes gets the whole reply."""
    cookie, ws, head = await reply(stack.url, "drain3", SHORT)
    conversation = head[0]["conversation"]
    web = stack.web
    assert web is not None
    web.proc.send_signal(signal.SIGTERM)
    with pytest.raises(ConnectionClosed) as closed:
        await ws.until("stream.end", timeout=15)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    assert await exited(web, 15) == 0
    stack.start_web()
    fresh = await faults.reconnect(stack.url, cookie)
    await fresh.send({"type": "chat.subscribe", "conversation": conversation})
    frames = await fresh.until("subscribed")
    if frames[-1]["streaming"]:
        frames += await fresh.until("stream.end", timeout=30)
    rows = await stack.settled(conversation)
    assert rows[1] == ("assistant", "complete", words(SHORT))
    await fresh.close()


async def test_make_run_s_process_finishes_its_replies_then_closes_with_1012(
    tmp_path: Any,
) -> None:
    """The embedded process (``make run``) on SIGTERM: the reply streaming in it ends whole
    on its open socket, then the socket closes with 1012 and the process exits 0."""
    with faults.embedded(env(tmp_path)) as stack:
        _, ws, head = await reply(stack.url, "drain4", SHORT)
        conversation = head[0]["conversation"]
        web = stack.web
        assert web is not None
        web.proc.send_signal(signal.SIGTERM)
        rest = await ws.until("stream.end", timeout=30)
        assert rest[-1]["finish_reason"] == "stop"
        assert text_of(head + rest) == words(SHORT)
        with pytest.raises(ConnectionClosed) as closed:
            while True:  # (a title may still come)
                await ws.recv(timeout=15)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        assert await exited(web, 15) == 0
        assert stack.messages(conversation)[1] == ("assistant", "complete", words(SHORT))


async def test_a_stopping_web_process_acknowledges_every_message_it_took(stack: Stack) -> None:
    """Twenty sockets send a message as the web process gets SIGTERM: each message is either
    acknowledged (``message.saved``) before its socket closes with 1012, or not saved at all,
    so a client can send again exactly what was not acknowledged (the page does) and nothing
    is lost or doubled."""
    import psycopg

    cookie = await asyncio.to_thread(signup, stack.url, "drain5")
    sockets = [await LiveSocket.open(stack.url, cookie) for _ in range(20)]
    web = stack.web
    assert web is not None
    web.proc.send_signal(signal.SIGTERM)
    for i, ws in enumerate(sockets):
        frame = {"type": "chat.send", "conversation": None, "content": f"race {i}"}
        await ws.send({**frame, "client_id": f"r{i}"})
        await asyncio.sleep(0.01)  # spread over the stop's first moments
    acked: set[int] = set()
    for i, ws in enumerate(sockets):
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frame = await ws.recv(timeout=15)
                if frame["type"] == "message.saved" and frame["client_id"] == f"r{i}":
                    acked.add(i)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    assert await exited(web, 15) == 0
    url = stack.env["DATABASE_URL"].replace("postgres://", "postgresql://", 1)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT content FROM chat_message WHERE role = 'user' AND content LIKE 'race %%'"
        ).fetchall()
    saved = {int(content.split()[1]) for (content,) in rows}
    assert saved == acked, (sorted(saved), sorted(acked))
    assert len(rows) == len(saved)  # none twice
