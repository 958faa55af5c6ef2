"""The chat socket against real processes, with a real WebSocket client, in both topologies:

- embedded: one daphne, SQLite, in-memory channel layer, inference inside the web process
  (what `make run` starts);
- redis: daphne + `manage.py runworker inference` + Redis + PostgreSQL (production's shape).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from tests.e2e import livedaphne
from tests.e2e.wsclient import LiveSocket, get, signup

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

SECRET = "e2e-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
_names = itertools.count()


@dataclass
class Live:
    topology: str
    url: str
    env: dict[str, str]
    web: livedaphne.Service
    worker: livedaphne.Service | None = None
    extra: list[Any] = field(default_factory=list)

    def user(self) -> str:
        return signup(self.url, f"{self.topology}{next(_names)}")


@pytest.fixture(scope="module", params=["embedded", "redis"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    env = {
        "DJANGO_SECRET_KEY": SECRET,
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "STELLARCHAT_BACKEND": "test",
        "STELLARCHAT_STREAM_TIMEOUT": "3",
        "STELLARCHAT_DATA_DIR": str(tmp_path_factory.mktemp(request.param)),
    }
    with livedaphne.topology(request.param, env, redis_index=13) as (server, worker):
        yield Live(request.param, server.url, env, server.service, worker)


async def socket(live: Live, cookie: str | None = None) -> LiveSocket:
    return await LiveSocket.open(live.url, cookie or live.user())


def text_of(frames: list[dict[str, Any]]) -> str:
    text = ""
    for f in frames:
        if f["type"] == "stream.delta":
            assert f["offset"] == len(text)
            text += f["delta"]
    return text


def first(frames: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(f for f in frames if f["type"] == kind)


async def test_streaming_persistence_and_multi_turn(live: Live) -> None:
    cookie = live.user()
    ws = await socket(live, cookie)
    await ws.send({"type": "chat.send", "conversation": None, "content": "[[slow 5]] [[long 40]]"})
    frames = await ws.until("stream.end")
    conv = first(frames, "conversation.created")["conversation"]
    deltas = [f for f in frames if f["type"] == "stream.delta"]
    assert len(deltas) > 1  # it streamed, in several steps
    assert text_of(frames) == " ".join(f"w{i}" for i in range(40))
    assert frames[-1]["finish_reason"] == "stop"
    await ws.send({"type": "chat.send", "conversation": conv, "content": "second <b>turn</b>"})
    second = await ws.until("stream.end")
    assert text_of(second) == "You said: second <b>turn</b> (turn 2)"
    await ws.close()
    status, page = get(live.url, f"/c/{conv}/", cookie)  # saved, as a reload would show it
    assert status == 200
    assert "w39" in page and "You said: second &lt;b&gt;turn&lt;/b&gt; (turn 2)" in page


async def test_two_tabs_reload_mid_reply_and_closing_the_tab(live: Live) -> None:
    cookie = live.user()
    tab_a = await socket(live, cookie)
    await tab_a.send(
        {"type": "chat.send", "conversation": None, "content": "[[slow 15]] [[long 80]]"}
    )
    head = await tab_a.until("stream.delta")
    conv = head[0]["conversation"]
    tab_b = await socket(live, cookie)  # a second tab / a reload
    await tab_b.send({"type": "chat.subscribe", "conversation": conv})
    got = await tab_b.until("stream.delta")
    assert got[-3]["streaming"] is True and got[-1]["offset"] == 0
    await tab_a.close()  # the first tab goes away: the reply carries on
    rest = await tab_b.until("stream.end")
    assert text_of([got[-1], *rest]) == " ".join(f"w{i}" for i in range(80))
    assert rest[-1]["finish_reason"] == "stop"
    await tab_b.close()


async def test_stop_regenerate_edit(live: Live) -> None:
    cookie = live.user()
    ws = await socket(live, cookie)
    await ws.send(
        {"type": "chat.send", "conversation": None, "content": "[[slow 30]] [[long 400]]"}
    )
    head = await ws.until("stream.delta")
    conv = head[0]["conversation"]
    user_msg = first(head, "message.saved")["message"]["id"]
    asked = time.monotonic()
    await ws.send({"type": "chat.stop", "conversation": conv})
    rest = await ws.until("stream.end")
    assert time.monotonic() - asked < 1.0
    assert rest[-1]["finish_reason"] == "cancelled"
    partial = text_of(head + rest)
    assert 0 < len(partial.split()) < 400

    await ws.send({"type": "chat.regenerate", "conversation": conv})
    regen = await ws.until("stream.end")
    assert first(regen, "stream.start")["replaces"] == head[2]["message"]
    await ws.send({"type": "chat.stop", "conversation": conv})  # no-op now: nothing streams
    await ws.send(
        {"type": "chat.edit", "conversation": conv, "message": user_msg, "content": "edited"}
    )
    edited = await ws.until("stream.end")
    assert first(edited, "message.saved")["message"]["replaces"] == user_msg
    assert text_of(edited) == "You said: edited (turn 1)"
    await ws.close()
    _, page = get(live.url, f"/c/{conv}/", cookie)
    assert "You said: edited (turn 1)" in page


async def test_busy_and_every_error_code(live: Live) -> None:
    ws = await socket(live)
    await ws.send(
        {"type": "chat.send", "conversation": None, "content": "[[slow 20]] [[long 200]]"}
    )
    conv = (await ws.until("stream.start"))[0]["conversation"]
    await ws.send({"type": "chat.send", "conversation": conv, "content": "hey", "client_id": "b"})
    busy = await ws.until("error")
    assert busy[-1]["code"] == "busy" and busy[-1]["client_id"] == "b"
    await ws.send({"type": "chat.stop", "conversation": conv})
    await ws.until("stream.end")

    cases = [
        ("{nope", "invalid_frame"),
        (
            json.dumps(
                {"type": "chat.subscribe", "conversation": "00000000-0000-0000-0000-000000000000"}
            ),
            "not_found",
        ),
        (
            json.dumps({"type": "chat.send", "conversation": None, "content": "x" * 32001}),
            "too_long",
        ),
        (
            json.dumps(
                {
                    "type": "chat.send",
                    "conversation": None,
                    "content": "x",
                    "options": {"top_k": -1},
                }
            ),
            "invalid_option",
        ),
    ]
    for frame, code in cases:
        await ws.send(frame)
        answer = await ws.until("error")
        assert answer[-1]["code"] == code, (frame[:50], answer[-1])

    await ws.send({"type": "chat.send", "conversation": conv, "content": "[[fail]]"})
    failed = await ws.until("stream.end")
    assert first(failed, "error")["code"] == "internal" and failed[-1]["finish_reason"] == "error"

    await ws.send({"type": "chat.send", "conversation": conv, "content": "[[slow 6000]] stall"})
    stalled = await ws.until("stream.end", timeout=20)
    assert first(stalled, "error")["code"] == "inference_unavailable"
    await ws.close()


async def test_hundred_malformed_frames_then_a_normal_chat(live: Live) -> None:
    ws = await socket(live)
    junk = [
        "",
        "{",
        "[]",
        "{}",
        '{"type":"x"}',
        '{"type":"chat.send"}',
        "\u202e",
        "null",
        "9" * 5000,
    ]
    for i in range(100):
        await ws.send(junk[i % len(junk)] or " ")
        answer = await ws.recv()
        assert answer["type"] == "error" and answer["code"] == "invalid_frame"
    # 100 frames in some 50 ms used the socket's burst: the next waits for the frame limit's
    # refill (a 101st at once is refused: tests/reliability/test_abuse_live.py).
    await asyncio.sleep(0.1)
    await ws.send({"type": "chat.send", "conversation": None, "content": "fine now"})
    frames = await ws.until("stream.end")
    assert text_of(frames) == "You said: fine now (turn 1)"
    await ws.close()


async def test_isolation_between_users(live: Live) -> None:
    owner = await socket(live)
    await owner.send(
        {"type": "chat.send", "conversation": None, "content": "[[slow 20]] [[long 60]]"}
    )
    head = await owner.until("stream.delta")
    conv = head[0]["conversation"]
    intruder = await socket(live)
    for frame in (
        {"type": "chat.subscribe", "conversation": conv},
        {"type": "chat.send", "conversation": conv, "content": "mine"},
        {"type": "chat.stop", "conversation": conv},
        {"type": "chat.regenerate", "conversation": conv},
    ):
        await intruder.send(frame)
        assert (await intruder.recv())["code"] == "not_found"
    assert await intruder.silent(0.5)
    rest = await owner.until("stream.end")
    assert rest[-1]["finish_reason"] == "stop" and text_of(head + rest).count("w") == 60
    await owner.close()
    await intruder.close()


async def test_anonymous_and_cross_origin_handshakes_are_refused(live: Live) -> None:
    cookie = live.user()
    for kwargs in (
        {"cookie": None},
        {"cookie": cookie, "origin": "http://evil.example"},
        {"cookie": cookie, "origin": None},
    ):
        with pytest.raises(InvalidStatus) as info:
            await LiveSocket.open(live.url, **kwargs)
        assert info.value.response.status_code == 403


async def test_the_documented_client_example_runs(live: Live) -> None:
    if live.topology != "embedded":
        pytest.skip("the example logs in with a browser-style cookie jar: DEBUG-only over HTTP")
    doc = (Path(livedaphne.BASE) / "docs" / "websocket-api.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    signup(live.url, "docexample", "doc-example-passphrase-1")
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", code],
        env={
            **os.environ,
            "STELLARCHAT_URL": live.url,
            "STELLARCHAT_USERNAME": "docexample",
            "STELLARCHAT_PASSWORD": "doc-example-passphrase-1",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "You said: Hello! What can you do? (turn 1)" in proc.stdout
    assert "[stop, 9 tokens]" in proc.stdout
