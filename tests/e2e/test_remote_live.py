"""The remote backend for real: StellarChat B serves /v1 with the bundled model; StellarChat A
runs ``STELLARCHAT_BACKEND=openai`` pointed at B, and a WebSocket client chats with A.

Shown: replies stream through (identical to asking B directly, greedy), a stop in A closes
the upstream request (B's reply ends cancelled), killing B mid-stream ends A's reply with
``error``, and A never loads torch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from tests.e2e import livedaphne
from tests.e2e.wsclient import LONG_PROMPT, LiveSocket, signup

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

SECRET = "remote-e2e-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
MODEL = "stellarbyte-mini"
# A reply that outlasts any stop or kill by seconds (LONG_PROMPT, greedy: 700+ tokens). A
# story ends by itself in 30-60 tokens, a fifth of a second on a quick machine: a stop then
# raced the reply's own end and lost in five tries out of five (CI, 2026-12-03).
LONG = {"temperature": 0, "max_new_tokens": 1000}


@dataclass
class Pair:
    upstream: livedaphne.Server
    upstream_env: dict[str, str]
    front: livedaphne.Server
    key: str


def _manage(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=livedaphne.BASE,
        env=livedaphne.clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


BASE_ENV = {
    "DJANGO_SECRET_KEY": SECRET,
    "DJANGO_DEBUG": "1",
    "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
}


@contextmanager
def upstream_with_key(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[livedaphne.Server, dict[str, str], str]]:
    """StellarChat B serving the bundled model, with an API key for the front (its server,
    its environment, the key)."""
    upstream_env = {**BASE_ENV, "STELLARCHAT_DATA_DIR": str(tmp_path_factory.mktemp("upstream"))}
    with livedaphne.daphne(upstream_env) as upstream:
        signup(upstream.url, "frontend")
        key = _manage(upstream_env, "create_api_key", "frontend", "--name", "front")
        yield upstream, upstream_env, key.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base = BASE_ENV
    with upstream_with_key(tmp_path_factory) as (upstream, upstream_env, key):
        front_env = {
            **base,
            "STELLARCHAT_DATA_DIR": str(tmp_path_factory.mktemp("front")),
            "STELLARCHAT_BACKEND": "openai",
            "STELLARCHAT_REMOTE_URL": upstream.url + "/v1",
            "STELLARCHAT_REMOTE_MODEL": MODEL,
            "STELLARCHAT_REMOTE_API_KEY": key,
            "STELLARCHAT_REMOTE_TIMEOUT": "10",
        }
        with livedaphne.daphne(front_env) as front:
            yield Pair(upstream, upstream_env, front, key)


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(f["delta"] for f in frames if f["type"] == "stream.delta")


def upstream_last_reply(pair: Pair) -> dict[str, Any]:
    out = _manage(
        pair.upstream_env,
        "shell",
        "-v",
        "0",
        "-c",
        "import json; from chat.models import Message; "
        "m = Message.objects.filter(role='assistant').order_by('-created_at').first(); "
        "print(json.dumps({'status': m.status, 'content': m.content, "
        "'source': m.conversation.source}))",
    )
    return dict(json.loads(out.strip().splitlines()[-1]))


async def test_replies_stream_through_from_the_upstream(pair: Pair) -> None:
    ws = await LiveSocket.open(pair.front.url, signup(pair.front.url, "alice"))
    await ws.send(
        {
            "type": "chat.send",
            "conversation": None,
            "content": "What can you do?",
            "options": {"temperature": 0, "max_new_tokens": 80},
        }
    )
    frames = await ws.until("stream.end", timeout=120)
    end = frames[-1]
    assert end["finish_reason"] in ("stop", "length"), frames
    deltas = [f for f in frames if f["type"] == "stream.delta"]
    assert len(deltas) >= 2  # streamed, not delivered in one piece
    text = text_of(frames)
    assert text.strip()
    assert end["usage"]["completion_tokens"] > 0 and end["usage"]["prompt_tokens"] > 0

    # The same request straight to the upstream, greedy: the same words.
    direct = OpenAI(base_url=pair.upstream.url + "/v1", api_key=pair.key, max_retries=0)
    answer = direct.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What can you do?"}],
        temperature=0,
        max_tokens=80,
    )
    assert answer.choices[0].message.content == text
    row = upstream_last_reply(pair)
    assert row["source"] == "api"
    await ws.close()

    # The front loads no model: no torch in its process.
    maps = Path(f"/proc/{pair.front.service.pid}/maps")
    if maps.exists():
        assert "libtorch" not in maps.read_text()


async def _long_reply(ws: LiveSocket) -> list[dict[str, Any]]:
    await ws.send(
        {"type": "chat.send", "conversation": None, "content": LONG_PROMPT, "options": LONG}
    )
    return await ws.until("stream.delta", timeout=120)


async def test_stopping_closes_the_upstream_request(pair: Pair) -> None:
    ws = await LiveSocket.open(pair.front.url, signup(pair.front.url, "bob"))
    head = await _long_reply(ws)
    await ws.send({"type": "chat.stop", "conversation": head[-1]["conversation"]})
    rest = await ws.until("stream.end", timeout=30)
    assert rest[-1]["finish_reason"] == "cancelled", rest[-1]
    deadline = time.monotonic() + 10
    while (row := upstream_last_reply(pair))["status"] == "streaming":
        assert time.monotonic() < deadline, row
        time.sleep(0.3)
    # The upstream saw the request close and stopped, seconds before the reply's own end.
    assert row["status"] == "cancelled", row["status"]
    assert len(row["content"]) < 1500  # its 1,000 tokens of numbers would be 4,000+ characters
    await ws.close()


async def test_killing_the_upstream_mid_stream_ends_the_reply_with_error(pair: Pair) -> None:
    ws = await LiveSocket.open(pair.front.url, signup(pair.front.url, "carol"))
    head = await _long_reply(ws)
    os.kill(pair.upstream.service.pid, signal.SIGKILL)
    rest = await ws.until("stream.end", timeout=30)
    end = rest[-1]
    assert end["finish_reason"] == "error", rest
    errors = [f for f in rest if f["type"] == "error"]
    assert errors and errors[0]["code"] == "inference_unavailable"
    assert "model server" in errors[0]["detail"]
    partial = text_of(head + rest)
    assert partial  # the text so far is kept ...
    await ws.send({"type": "chat.send", "conversation": None, "content": "hello?"})
    again = await ws.until("stream.end", timeout=30)  # ... and the next reply fails cleanly
    assert again[-1]["finish_reason"] == "error"
    assert [f["code"] for f in again if f["type"] == "error"] == ["inference_unavailable"]
    await ws.close()
