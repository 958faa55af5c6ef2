"""The REST and WebSocket APIs against real processes, with the clients people use: the
official ``openai`` package, ``websockets``, curl, and the examples of docs/api.md as written.

Both topologies: embedded (one daphne, SQLite, in-memory layer) and production's shape
(daphne + ``runworker inference`` + Redis + PostgreSQL).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e import livedaphne
from tests.e2e.wsclient import LiveSocket, signup

pytestmark = [pytest.mark.slow]

SECRET = "api-e2e-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
PER_MINUTE = 8
MODEL = "stellarchat-test"
_names = itertools.count()


@dataclass
class Live:
    topology: str
    url: str
    env: dict[str, str]
    web: livedaphne.Service
    worker: livedaphne.Service | None = None

    def manage(self, *args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=livedaphne.BASE,
            env=livedaphne.clean_env(**self.env),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def user_with_key(self, *extra: str) -> tuple[str, str, str]:
        """Sign up through the form, then make a key with the documented command."""
        name = f"api{self.topology}{next(_names)}"
        cookie = signup(self.url, name)
        out = self.manage("create_api_key", name, "--name", "e2e", *extra)
        return name, cookie, out.strip().splitlines()[-1]

    def shell(self, code: str) -> str:
        return self.manage("shell", "-v", "0", "-c", code)

    def client(self, key: str, **kwargs: Any) -> OpenAI:
        return OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, **kwargs)


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
        "STELLARCHAT_RATE_LIMIT_PER_MINUTE": str(PER_MINUTE),
        "STELLARCHAT_DATA_DIR": str(tmp_path_factory.mktemp(request.param)),
    }
    with livedaphne.topology(request.param, env, redis_index=7) as (server, worker):
        yield Live(request.param, server.url, env, server.service, worker)


def test_models_and_completions_with_the_official_client(live: Live) -> None:
    _, _, key = live.user_with_key()
    client = live.client(key)
    assert [m.id for m in client.models.list().data] == [MODEL]

    reply = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "Hello <b>there</b> 👋"},
        ],
        temperature=0,
        max_tokens=50,
    )
    assert reply.object == "chat.completion"
    assert reply.model == MODEL and reply.id.startswith("chatcmpl-")
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "You said: Hello <b>there</b> 👋 (turn 2)"
    assert choice.finish_reason == "stop"
    usage = reply.usage
    assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    pieces: list[str] = []
    finish: list[str] = []
    usage_chunks = []
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stream me [[slow 20]]"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage:
            usage_chunks.append(chunk.usage)
        for c in chunk.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason:
                finish.append(c.finish_reason)
    assert "".join(pieces) == "You said: stream me [[slow 20]] (turn 1)"
    assert len(pieces) > 3  # token by token, not one lump
    assert finish == ["stop"]
    assert len(usage_chunks) == 1 and usage_chunks[0].completion_tokens >= len(pieces)

    length = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "[[long 50]]"}], max_tokens=5
    )
    assert length.choices[0].finish_reason == "length"
    assert length.choices[0].message.content == "w0 w1 w2 w3 w4 "


def test_every_error_status(live: Live) -> None:
    _, _, key = live.user_with_key()
    client = live.client(key)
    hello = [{"role": "user", "content": "hi"}]

    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=hello, temperature=5)
    assert bad.value.status_code == 400 and bad.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as role:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}],  # type: ignore[list-item]
        )
    assert role.value.body["param"] == "messages[0].role"
    raw = httpx.post(
        live.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        content=b'{"model": "stellarchat-test", "messages": [',
    )
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_json"

    with pytest.raises(openai.AuthenticationError) as unauthorized:
        live.client(key[:-1] + ("A" if key[-1] != "A" else "B")).models.list()
    assert unauthorized.value.status_code == 401
    assert unauthorized.value.body["code"] == "invalid_api_key"

    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=hello)
    assert missing.value.body["code"] == "model_not_found"

    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "[[fail]]"}]
        )
    assert failed.value.status_code == 500

    # A failure after text has streamed: an error event, raised by the client mid-iteration.
    got: list[str] = []
    with pytest.raises(openai.APIError, match="failed on purpose"):
        for chunk in client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "[[slow 30]] [[fail]]"}], stream=True
        ):
            got.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(got) == "You said: "

    # The limit: PER_MINUTE messages in the window, then 429 with Retry-After.
    _, _, fresh = live.user_with_key()
    limited = live.client(fresh)
    for _ in range(PER_MINUTE):
        limited.chat.completions.create(model=MODEL, messages=hello)
    with pytest.raises(openai.RateLimitError) as too_many:
        limited.chat.completions.create(model=MODEL, messages=hello)
    retry_after = int(too_many.value.response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert too_many.value.body["type"] == "rate_limit_error"


def test_no_worker_is_503(live: Live) -> None:
    if live.worker is None:
        pytest.skip("the embedded topology has no separate worker to lose")
    _, _, key = live.user_with_key()
    os.kill(live.worker.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as unavailable:
            live.client(key, timeout=30).chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "anyone there?"}]
            )
        assert unavailable.value.status_code == 503
        assert unavailable.value.body["code"] == "inference_unavailable"
        assert time.monotonic() - started < 3 + 2 + 5 + 5  # stall + sweep + feed poll + slack
    finally:
        os.kill(live.worker.pid, signal.SIGCONT)


def _status_of_last_reply(live: Live, username: str) -> dict[str, Any]:
    out = live.shell(
        "import json; from chat.models import Message; "
        f"m = Message.objects.filter(conversation__owner__username={username!r}, "
        "role='assistant').order_by('-created_at').first(); "
        "c = m.conversation; print(json.dumps({'status': m.status, 'content': m.content, "
        "'source': c.source, 'key': c.api_key.name if c.api_key else None, "
        "'tokens': m.completion_tokens, 'texts': [x.content for x in c.messages.all()], "
        "'system': c.system_prompt}))"
    )
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_closing_the_stream_stops_the_reply_and_api_traffic_is_stored(live: Live) -> None:
    username, _, key = live.user_with_key()
    with httpx.stream(
        "POST",
        live.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": MODEL,
            "stream": True,
            "messages": [{"role": "user", "content": "[[slow 50]] [[long 400]]"}],
        },
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
    deadline = time.monotonic() + 5
    while (row := _status_of_last_reply(live, username))["status"] == "streaming":
        assert time.monotonic() < deadline, row
        time.sleep(0.3)
    assert row["status"] == "cancelled"
    assert row["source"] == "api" and row["key"] == "e2e"
    assert row["content"].startswith("w0 w1")


def test_a_key_that_does_not_store_keeps_no_text(live: Live) -> None:
    username, _, key = live.user_with_key("--no-store")
    reply = live.client(key).chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "secret instructions"},
            {"role": "user", "content": "my secret question"},
        ],
    )
    assert reply.choices[0].message.content == "You said: my secret question (turn 1)"
    row = _status_of_last_reply(live, username)
    assert row["status"] == "complete" and row["tokens"] > 0
    assert row["texts"] == ["", ""] and row["system"] == ""


@pytest.mark.asyncio
async def test_websocket_api_with_a_key_and_revocation_at_once(live: Live) -> None:
    username, _, key = live.user_with_key()
    ws = await LiveSocket.open(live.url, None, origin=None, api_key=key)  # a program: no Origin
    await ws.send({"type": "chat.send", "conversation": None, "content": "over the socket"})
    frames = await ws.until("stream.end")
    text = "".join(f["delta"] for f in frames if f["type"] == "stream.delta")
    assert text == "You said: over the socket (turn 1)"
    row = await asyncio.to_thread(_status_of_last_reply, live, username)
    assert row["source"] == "api" and row["key"] == "e2e"

    for bad in (key[:-2] + "xx", "sc_nope", "Basic abc"):
        with pytest.raises(InvalidStatus) as refused:
            await LiveSocket.open(live.url, None, origin=None, api_key=bad)
        assert refused.value.response.status_code == 403

    await asyncio.to_thread(
        live.shell,
        "from api.models import ApiKey; from api.services import api_key_revoke; "
        f"api_key_revoke(key=ApiKey.objects.get(user__username={username!r}))",
    )
    # REST refuses the key at once ...
    with pytest.raises(openai.AuthenticationError):
        await asyncio.to_thread(live.client(key).models.list)
    # ... and the open socket is closed: pushed through Redis, or at its next frame.
    if live.topology == "embedded":  # the shell is another process: no shared in-memory layer
        await ws.send({"type": "chat.send", "conversation": None, "content": "still here?"})
    with pytest.raises(ConnectionClosed) as closed:
        while True:  # frames of the earlier reply (its title) may still come first
            frame = await ws.recv(timeout=10)
            assert frame["type"] == "conversation.updated", frame
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def _doc_blocks() -> list[tuple[str, str]]:
    doc = (Path(livedaphne.BASE) / "docs" / "api.md").read_text()
    blocks = []
    for part in doc.split("```")[1::2]:
        lang, _, code = part.partition("\n")
        if lang in ("python", "bash"):
            blocks.append((lang, code))
    return blocks


def test_the_documented_examples_run(live: Live) -> None:
    if live.topology != "embedded":
        pytest.skip("once is enough: the examples only need a server")
    _, _, key = live.user_with_key()
    outputs = []
    for lang, code in _doc_blocks():
        if lang == "bash" and shutil.which("curl") is None:
            pytest.fail("curl is needed to run the documented curl example")
        args = [sys.executable, "-c", code] if lang == "python" else ["bash", "-c", code]
        proc = subprocess.run(
            args,
            env={**os.environ, "STELLARCHAT_URL": live.url, "STELLARCHAT_API_KEY": key},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, (code, proc.stderr)
        outputs.append(proc.stdout)
    assert len(outputs) == 5
    completion, stream, error, curl, socket = outputs
    assert completion.splitlines()[0] == "You said: What can you do? (turn 1)"
    assert completion.splitlines()[1].startswith("stop ")
    assert stream.startswith("You said: Tell me about StellarChat. (turn 1)\n[")
    assert error.startswith("400 temperature ")
    assert curl.rstrip().endswith("data: [DONE]") and "Hello!" in curl
    assert socket.splitlines() == ["You said: Hi! (turn 1)", "[stop]"]
