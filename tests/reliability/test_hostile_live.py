"""The corpus's big and malformed payloads against a real daphne (tests/e2e/livedaphne.py), so
the real server's limits are what is exercised: 1 MB and 100 MB WebSocket frames and HTTP
bodies, text frames that are not UTF-8, an empty frame, a 1 MB query string.

Each gets a clear refusal (an error frame with a code, a close code, a 4xx), the process's
memory does not grow by the payload (it was not read whole into memory), and afterwards the
same process still serves a normal chat.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.e2e import livedaphne
from tests.e2e.wsclient import LiveSocket, signup
from tests.reliability import hostile

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

MB = hostile.MB
GROWTH_LIMIT = 40 * MB  # a 100 MB payload held in memory would show as ~100 MB or more


@dataclass
class Live:
    url: str
    web: livedaphne.Service
    cookie: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    env = {
        "DJANGO_SECRET_KEY": "hostile-live-secret-0123456789-abcdefghijklmnopqrstuvwxyz",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "STELLARCHAT_BACKEND": "test",
        "STELLARCHAT_DATA_DIR": str(tmp_path_factory.mktemp("hostile-live")),
    }
    with livedaphne.topology("embedded", env, redis_index=15) as (server, _):
        yield Live(server.url, server.service, signup(server.url, "hostile"))


def rss(pid: int) -> int:
    """Resident memory of a process in bytes, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def chats(live: Live) -> None:
    """The same process still serves a normal chat, start to end."""
    ws = await LiveSocket.open(live.url, live.cookie)
    await ws.send({"type": "chat.send", "conversation": None, "content": "still fine?"})
    frames = await ws.until("stream.end", timeout=30)
    text = "".join(f["delta"] for f in frames if f["type"] == "stream.delta")
    assert text == "You said: still fine? (turn 1)"
    await ws.close()
    assert live.web.proc.poll() is None


async def closed_with(ws: LiveSocket) -> int | None:
    """Wait for the server to close the socket; its close code."""
    try:
        while True:
            await asyncio.wait_for(ws.ws.recv(), 30)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else None


def http_request(
    live: Live,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    parts = urllib.parse.urlsplit(live.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    except (ConnectionError, http.client.RemoteDisconnected):
        return 0, b""  # the server hung up: a refusal too, if it stays healthy
    finally:
        conn.close()


async def test_frames_of_1_mb_and_malformed_frames_get_error_frames(live: Live) -> None:
    await chats(live)
    ws = await LiveSocket.open(live.url, live.cookie)
    for name in ("payload-1mb", "nested-arrays-1e5", "malformed-json", "empty-document"):
        await ws.send(hostile.get(name).value)
        frame = await ws.recv(timeout=30)
        assert frame["type"] == "error" and frame["code"] in ("too_long", "invalid_frame"), name
    word = hostile.get("long-word-1mb").value
    await ws.send({"type": "chat.send", "conversation": None, "content": word, "client_id": "w"})
    frame = await ws.recv(timeout=30)
    assert frame["code"] == "too_long"
    for entry in hostile.entries("bytes"):
        await ws.ws.send(entry.value)  # binary frames
        assert (await ws.recv())["code"] == "invalid_frame", entry.name
    await ws.close()
    await chats(live)


async def test_answers_quoting_a_lone_surrogate_reach_the_client(live: Live) -> None:
    """A refused option name with a lone surrogate is quoted in the error: the real server must
    still be able to send that error as UTF-8 (before the fix it could not, and the client
    never heard back)."""
    ws = await LiveSocket.open(live.url, live.cookie)
    frame = '{"type":"chat.send","conversation":null,"content":"hi","options":{"\\ud800":1}}'
    await ws.send(frame)
    answer = await ws.recv(timeout=15)
    assert answer["code"] == "invalid_option" and "\\ud800" in answer["detail"]
    await ws.close()
    await chats(live)


@pytest.mark.parametrize("entry", hostile.entries("bytes"), ids=str)
async def test_text_frames_that_are_not_utf8_close_the_socket_with_1007(
    live: Live, entry: hostile.Hostile
) -> None:
    ws = await LiveSocket.open(live.url, live.cookie)
    await ws.ws.send(entry.value, text=True)  # a text frame holding invalid UTF-8
    # Closed at once: with 1007 ("invalid frame payload data") or by dropping the connection.
    assert await closed_with(ws) in (1007, None)
    await chats(live)


async def test_a_100_mb_frame_is_refused_without_reading_it_into_memory(live: Live) -> None:
    await chats(live)
    before = rss(live.web.pid)
    ws = await LiveSocket.open(live.url, live.cookie)
    payload = hostile.get("payload-100mb").value
    with contextlib.suppress(ConnectionClosed):  # it may close while the frame is still sent
        await ws.ws.send(payload)
    del payload
    assert await closed_with(ws) in (1009, None)  # "message too big", or the connection dropped
    await chats(live)
    grown = rss(live.web.pid) - before
    assert grown < GROWTH_LIMIT, f"daphne grew by {grown / MB:.0f} MB"


def post_100_mb(live: Live, path: str) -> tuple[int, bytes]:
    body = hostile.get("payload-100mb").value.encode()
    return http_request(live, "POST", path, body, {"Content-Type": "application/json"})


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/accounts/login/"])
async def test_a_100_mb_body_is_refused_and_the_server_carries_on(live: Live, path: str) -> None:
    status, answer = await asyncio.to_thread(post_100_mb, live, path)
    assert 400 <= status < 500, (status, answer[:200])
    await chats(live)


async def test_a_1_mb_body_and_query_string_get_clear_errors(live: Live) -> None:
    body = hostile.get("payload-1mb").value.encode()
    status, answer = await asyncio.to_thread(
        http_request,
        live,
        "POST",
        "/v1/chat/completions",
        body,
        {"Content-Type": "application/json", "Authorization": "Bearer sc_nope"},
    )
    assert status == 401 and json.loads(answer)["error"]["code"] == "invalid_api_key"
    query = urllib.parse.urlencode({"q": "a" * MB})
    status, _ = await asyncio.to_thread(http_request, live, "GET", f"/?{query}")
    assert status == 0 or 400 <= status < 500 or status == 302, status
    await chats(live)


async def test_raw_control_bytes_in_headers_do_not_break_the_server(live: Live) -> None:
    for name, value in [
        ("Cookie", "sessionid=abc\x00def; django_language=\x00"),
        ("Accept-Language", "\x00\x1b[31m" + "x" * 5000),
        ("Authorization", "Bearer \x00\x7f\xff"),
        ("Origin", "\x00"),
    ]:
        status, _ = await asyncio.to_thread(
            http_request, live, "GET", "/accounts/login/", None, {name: value}
        )
        assert status == 0 or status < 500, (name, status)
    await chats(live)
