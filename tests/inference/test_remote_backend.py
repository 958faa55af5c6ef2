"""The remote (OpenAI-compatible) backend, against a real local HTTP server scripted per test.

The server speaks just enough HTTP/1.1 (chunked or close-delimited bodies) on its own thread
and event loop, records every request, and notes when a client leaves mid-reply: the only way
to know a cancelled stream really closed its connection upstream.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest

from inference import runner
from inference.backends import get_backend
from inference.backends.base import Backend, Result, StreamItem, Turn
from inference.backends.remote import RemoteBackend
from inference.options import GenerationOptions

TURNS: list[Turn] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hi"},
]
OPTS = GenerationOptions(temperature=0.3, top_p=0.9, max_new_tokens=64)
STALL = "stall"  # a step: send nothing until the client leaves
DROP = "drop"  # a step: reset the connection mid-body
ROOT = Path(__file__).resolve().parents[2]


def event(data: Any) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def delta(content: str | None = None, finish: str | None = None) -> bytes:
    d = {} if content is None else {"content": content}
    return event(
        {
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": d, "finish_reason": finish}],
        }
    )


def usage(prompt: int, completion: int) -> bytes:
    return event(
        {"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}
    )


DONE = b"data: [DONE]\n\n"


@dataclass
class Reply:
    steps: list[bytes | float | str] = field(default_factory=list)
    status: int = 200
    content_type: str = "text/event-stream"
    chunked: bool = True
    stall_before_headers: bool = False


def error_reply(status: int, body: Any) -> Reply:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Reply(steps=[raw], status=status, content_type="application/json", chunked=False)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class Upstream:
    """A scripted OpenAI-compatible server: ``reply`` answers every chat-completions POST."""

    def __init__(self) -> None:
        self.reply = Reply(steps=[delta("ok", "stop"), DONE])
        self.models_status = 200
        self.models: list[Any] = [{"id": "m"}]  # what GET /v1/models lists
        self.requests: list[Seen] = []
        self.disconnects: list[float] = []  # monotonic times a client left mid-reply
        self.in_flight = self.most_in_flight = 0  # chat-completions replies being sent
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        assert started.wait(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        started.set()
        self.loop.run_forever()

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        watcher: asyncio.Task[None] | None = None
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, path, _ = head[0].split(" ", 2)
            headers = {}
            for line in head[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            raw = await reader.readexactly(length) if length else b""
            seen = Seen(method, path, headers, json.loads(raw) if raw else None)
            self.requests.append(seen)
            gone = asyncio.Event()

            async def watch() -> None:  # the client sends nothing more: EOF means it left
                if not await reader.read(1):
                    self.disconnects.append(time.monotonic())
                    gone.set()

            watcher = asyncio.create_task(watch())
            if method == "GET" and path == "/v1/models":
                reply = error_reply(self.models_status, {"data": self.models})
            elif method == "POST" and path == "/v1/chat/completions":
                reply = self.reply
            else:
                reply = error_reply(404, {"error": {"message": f"no route {path}"}})
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                await self._send(writer, reply, gone)
            finally:
                self.in_flight -= 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if watcher is not None:
                watcher.cancel()
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, reply: Reply, gone: asyncio.Event) -> None:
        if reply.stall_before_headers:
            await asyncio.wait_for(gone.wait(), 10)
            return
        framing = "Transfer-Encoding: chunked\r\n" if reply.chunked else ""
        writer.write(
            f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}\r\n"
            f"Content-Type: {reply.content_type}\r\n{framing}Connection: close\r\n\r\n".encode()
        )
        for step in reply.steps:
            if step == STALL:
                await asyncio.wait_for(gone.wait(), 10)
                return
            if step == DROP:
                writer.transport.abort()
                return
            if isinstance(step, float):
                await asyncio.sleep(step)
                continue
            assert isinstance(step, bytes)
            writer.write(f"{len(step):x}\r\n".encode() + step + b"\r\n" if reply.chunked else step)
            await writer.drain()
        if reply.chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()


@pytest.fixture
def upstream(monkeypatch: pytest.MonkeyPatch) -> Iterator[Upstream]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)  # 127.0.0.1 must not go through a proxy
    server = Upstream()
    yield server
    server.close()


def remote(upstream: Upstream, **kwargs: Any) -> RemoteBackend:
    settings: dict[str, Any] = {"model": "m", "api_key": "", "timeout": 5, **kwargs}
    return RemoteBackend(upstream.url, **settings)


async def collect(
    backend: RemoteBackend,
    options: GenerationOptions = OPTS,
    turns: Sequence[Turn] = TURNS,
) -> tuple[list[str], Result]:
    items = [item async for item in backend.astream(turns, options)]
    assert all(isinstance(i, str) for i in items[:-1]), items
    assert isinstance(items[-1], Result), items
    return items[:-1], items[-1]  # type: ignore[return-value]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- streaming ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_it_streams_deltas_and_takes_usage_from_the_last_chunk(upstream: Upstream) -> None:
    star = "🌟".encode()
    upstream.reply = Reply(
        steps=[
            event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}),
            b": keep-alive comment\n\nevent: message\nid: 7\nretry: 10\n",
            b'data: {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}\r\n\r\n',
            delta("lo ") + b'data: {"choices": [{"delta": {"content": "' + star[:2],
            star[2:] + b'"}, "finish_reason": null}]}\n\n',
            delta("", "stop"),
            usage(7, 3),
            DONE,
        ]
    )
    deltas, result = await collect(remote(upstream))
    assert deltas == ["Hel", "lo ", "🌟"]
    assert result.finish_reason == "stop" and result.error is None
    assert (result.prompt_tokens, result.completion_tokens) == (7, 3)
    assert result.ttft_ms is not None and 0 < result.ttft_ms <= result.duration_ms


@pytest.mark.asyncio
async def test_it_counts_chunks_without_a_usage_chunk(upstream: Upstream) -> None:
    upstream.reply = Reply(steps=[delta("a"), delta("b"), delta("c", "stop"), DONE])
    deltas, result = await collect(remote(upstream))
    assert deltas == ["a", "b", "c"]
    assert (result.finish_reason, result.prompt_tokens, result.completion_tokens) == ("stop", 0, 3)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("upstream_reason", "reason"), [("length", "length"), ("stop", "stop"), ("tool_calls", "stop")]
)
async def test_it_maps_the_finish_reason(
    upstream: Upstream, upstream_reason: str, reason: str
) -> None:
    # No [DONE]: a finish_reason is enough to know the reply is complete.
    upstream.reply = Reply(steps=[delta("x"), delta(None, upstream_reason), usage(3, 1)])
    _, result = await collect(remote(upstream))
    assert result.finish_reason == reason and result.completion_tokens == 1


@pytest.mark.asyncio
async def test_it_sends_the_options_and_the_key(upstream: Upstream) -> None:
    backend = remote(upstream, api_key="sk-test", model="qwen2.5:7b")
    options = GenerationOptions(
        temperature=0.0, top_p=0.5, top_k=5, max_new_tokens=9, stop=("\n\n", "END"), seed=42
    )
    await collect(backend, options)
    seen = upstream.requests[-1]
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.headers["authorization"] == "Bearer sk-test"
    assert seen.body == {
        "model": "qwen2.5:7b",
        "messages": TURNS,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.0,
        "top_p": 0.5,
        "max_tokens": 9,
        "stop": ["\n\n", "END"],
        "seed": 42,
        "top_k": 5,
    }


@pytest.mark.asyncio
async def test_it_omits_unset_options_and_an_empty_key(upstream: Upstream) -> None:
    await collect(remote(upstream, api_key=""))
    seen = upstream.requests[-1]
    assert "authorization" not in seen.headers
    assert set(seen.body) == {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "max_tokens",
    }
    assert (seen.body["temperature"], seen.body["top_p"], seen.body["max_tokens"]) == (0.3, 0.9, 64)


# --- failures ----------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "body", "code", "expected"),
    [
        (401, {"error": {"message": "bad key"}}, "inference_unavailable", "refused our API key"),
        (403, {"error": "forbidden"}, "inference_unavailable", "(HTTP 403)"),
        (404, {"error": {"message": "model m not found"}}, "inference_unavailable", "'m'"),
        (
            400,
            {"error": {"message": "This model's maximum context length is 4096 tokens"}},
            "too_long",
            "maximum context length is 4096",
        ),
        (
            400,
            {"error": {"message": "temperature must be non-negative"}},
            "invalid_option",
            "temperature must be non-negative",
        ),
        (422, {"detail": [{"msg": "top_p: bad value"}]}, "invalid_option", "top_p: bad value"),
        (429, {"error": {"message": "slow down"}}, "inference_unavailable", "rate limiting us"),
        (500, b"<html>oops</html>", "inference_unavailable", "(HTTP 500): <html>oops</html>"),
        (503, {"error": {"message": "Loading model"}}, "inference_unavailable", "Loading model"),
    ],
)
async def test_it_explains_error_statuses(
    upstream: Upstream, status: int, body: Any, code: str, expected: str
) -> None:
    upstream.reply = error_reply(status, body)
    deltas, result = await collect(remote(upstream))
    assert deltas == [] and result.finish_reason == "error"
    assert result.error_code == code and result.error is not None
    assert expected in result.error
    if status in (401, 403):
        assert "STELLARCHAT_REMOTE_API_KEY" in result.error
    if status == 404:
        assert upstream.url in result.error and "STELLARCHAT_REMOTE_MODEL" in result.error


@pytest.mark.asyncio
async def test_it_reports_an_unreachable_server() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    backend = RemoteBackend(url, model="m", api_key="", timeout=5)
    started = time.monotonic()
    deltas, result = await collect(backend)
    assert time.monotonic() - started < 2
    assert deltas == [] and result.finish_reason == "error"
    assert result.error_code == "inference_unavailable"
    assert result.error is not None
    assert result.error.startswith(f"cannot reach the model server at {url}: ")
    assert backend.ready is False


@pytest.mark.asyncio
async def test_it_times_out_when_the_server_goes_silent(upstream: Upstream) -> None:
    upstream.reply = Reply(steps=[delta("one"), STALL])
    started = time.monotonic()
    deltas, result = await collect(remote(upstream, timeout=1))
    assert 0.9 < time.monotonic() - started < 3
    assert deltas == ["one"] and result.finish_reason == "error"
    assert result.error_code == "inference_unavailable" and result.error is not None
    assert "sent nothing for 1 s" in result.error and "STELLARCHAT_REMOTE_TIMEOUT" in result.error
    assert result.completion_tokens == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("chunked", [True, False])
async def test_it_reports_a_stream_closed_mid_reply(upstream: Upstream, chunked: bool) -> None:
    # Chunked: the connection resets mid-body; close-delimited: it ends cleanly, too early.
    upstream.reply = Reply(steps=[delta("par"), delta("tial"), DROP], chunked=chunked)
    if not chunked:
        upstream.reply.steps.pop()
    deltas, result = await collect(remote(upstream))
    assert deltas == ["par", "tial"]
    assert (result.finish_reason, result.error_code) == ("error", "inference_unavailable")
    assert result.error == "the model server closed the stream mid-reply"
    assert result.completion_tokens == 2


@pytest.mark.asyncio
async def test_it_reports_an_error_event_mid_stream(upstream: Upstream) -> None:
    upstream.reply = Reply(
        steps=[delta("partial"), event({"error": {"message": "CUDA out of memory"}}), DONE]
    )
    deltas, result = await collect(remote(upstream))
    assert deltas == ["partial"]
    assert (result.finish_reason, result.error_code) == ("error", "inference_unavailable")
    assert result.error is not None and "CUDA out of memory" in result.error


@pytest.mark.asyncio
async def test_it_reports_malformed_json(upstream: Upstream) -> None:
    upstream.reply = Reply(steps=[delta("a"), b"data: {not json\n\n", DONE])
    deltas, result = await collect(remote(upstream))
    assert deltas == ["a"]
    assert result.error == "the model server sent a malformed stream"
    assert result.error_code == "inference_unavailable"


@pytest.mark.asyncio
async def test_it_reports_a_body_that_is_not_an_event_stream(upstream: Upstream) -> None:
    upstream.reply = Reply(steps=[b"<html>captive portal</html>"], content_type="text/html")
    _, result = await collect(remote(upstream))
    assert result.finish_reason == "error" and result.error is not None
    assert "without an event stream (content type text/html)" in result.error


@pytest.mark.asyncio
@pytest.mark.parametrize("where", ["status", "event"])
async def test_it_trims_hostile_error_text(upstream: Upstream, where: str) -> None:
    hostile = "\x1b[31mred\x07 \u202eevil\r\nInjected: header\x00" + "A" * 10_000
    if where == "status":
        upstream.reply = error_reply(400, {"error": {"message": hostile}})
    else:
        upstream.reply = Reply(steps=[event({"error": {"message": hostile}})])
    _, result = await collect(remote(upstream))
    assert result.finish_reason == "error" and result.error is not None
    assert len(result.error) <= 300
    assert result.error.isprintable() and "\u202e" not in result.error
    assert "[31mred evil Injected: header AAA" in result.error


@pytest.mark.asyncio
async def test_it_rejects_bad_turns_and_a_missing_url() -> None:
    backend = RemoteBackend("http://127.0.0.1:9/v1", model="m")
    _, result = await collect(backend, turns=[{"role": "assistant", "content": "x"}])
    assert (result.finish_reason, result.error_code) == ("error", "internal")
    backend.url = ""  # what an unset STELLARCHAT_REMOTE_URL leaves
    _, result = await collect(backend)
    assert result.error_code == "inference_unavailable" and result.error is not None
    assert "STELLARCHAT_REMOTE_URL" in result.error


# --- cancellation ------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("before_headers", [False, True])
async def test_cancel_closes_a_silent_upstream_promptly(
    upstream: Upstream, before_headers: bool
) -> None:
    upstream.reply = Reply(steps=[delta("one"), STALL], stall_before_headers=before_headers)
    cancel = threading.Event()
    items: list[StreamItem] = []
    cancelled_at = 0.0

    async def cancel_soon() -> None:
        nonlocal cancelled_at
        await asyncio.sleep(0.2)
        cancelled_at = time.monotonic()
        cancel.set()

    task = asyncio.create_task(cancel_soon())
    async for item in remote(upstream).astream(TURNS, OPTS, cancel):
        items.append(item)
    ended = time.monotonic()
    await task
    assert ended - cancelled_at < 0.5
    result = items[-1]
    assert isinstance(result, Result) and result.finish_reason == "cancelled"
    assert items[:-1] == ([] if before_headers else ["one"])
    assert result.completion_tokens == len(items) - 1
    for _ in range(50):  # the server's side of the socket sees the close
        if upstream.disconnects:
            break
        await asyncio.sleep(0.01)
    assert upstream.disconnects and upstream.disconnects[0] - cancelled_at < 0.5


def test_the_blocking_stream_works_and_cancels(upstream: Upstream) -> None:
    backend = remote(upstream)
    assert isinstance(backend, Backend)
    upstream.reply = Reply(steps=[delta("a"), delta("b", "stop"), DONE])
    items = list(backend.stream(TURNS, OPTS))
    assert items[:2] == ["a", "b"] and isinstance(items[2], Result)
    assert items[2].finish_reason == "stop"

    upstream.reply = Reply(steps=[delta("one"), STALL])
    cancel = threading.Event()
    stream = backend.stream(TURNS, OPTS, cancel)
    assert next(stream) == "one"
    stream.close()  # leaving early cancels the request and waits for it
    assert cancel.is_set()
    deadline = time.monotonic() + 1
    while not upstream.disconnects and time.monotonic() < deadline:
        time.sleep(0.01)
    assert upstream.disconnects


# --- through the runner ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_runner_runs_remote_streams_concurrently(upstream: Upstream) -> None:
    upstream.reply = Reply(steps=[x for i in range(5) for x in (0.1, delta(f"t{i} "))] + [DONE])
    backend = remote(upstream)
    starts: list[float] = []

    async def one() -> list[StreamItem]:
        items = runner.astream(
            backend, TURNS, OPTS, on_start=lambda: starts.append(time.monotonic())
        )
        return [item async for item in items]

    started = time.monotonic()
    first, second = await asyncio.gather(one(), one())
    elapsed = time.monotonic() - started
    assert first[:-1] == second[:-1] == [f"t{i} " for i in range(5)]
    assert isinstance(first[-1], Result) and first[-1].finish_reason == "stop"
    assert upstream.most_in_flight == 2  # both upstream requests were open at once
    assert elapsed < 1.0  # each takes 0.5 s: one after the other would take at least 1 s
    assert len(starts) == 2


@pytest.mark.asyncio
async def test_leaving_the_runner_early_closes_the_upstream(upstream: Upstream) -> None:
    upstream.reply = Reply(steps=[x for i in range(100) for x in (delta(f"t{i} "), 0.05)])
    cancel = threading.Event()
    async with aclosing(runner.astream(remote(upstream), TURNS, OPTS, cancel)) as items:
        async for item in items:
            assert item == "t0 "
            break
    left = time.monotonic()
    assert cancel.is_set()
    for _ in range(50):
        if upstream.disconnects:
            break
        await asyncio.sleep(0.01)
    assert upstream.disconnects and upstream.disconnects[0] - left < 0.5


@pytest.mark.asyncio
async def test_the_runner_ends_an_async_backend_that_raises_with_an_error() -> None:
    class Broken:
        name = "broken"

        async def astream(self, *args: object) -> AsyncIterator[StreamItem]:
            yield "partial "
            raise RuntimeError("boom")

        def stream(self, *args: object) -> Iterator[StreamItem]:  # pragma: no cover
            raise AssertionError("the runner must use astream")

    items = [i async for i in runner.astream(Broken(), TURNS, OPTS)]  # type: ignore[arg-type]
    assert items[0] == "partial "
    assert isinstance(items[-1], Result) and items[-1].finish_reason == "error"
    assert items[-1].error_code == "internal" and items[-1].error == "backend error: boom"


# --- readiness, registry, imports --------------------------------------------------------


def test_load_probes_the_server_and_never_raises(upstream: Upstream) -> None:
    backend = remote(upstream)
    assert backend.load() is True and backend._ready
    assert upstream.requests[-1].path == "/v1/models"
    upstream.models_status = 401
    assert backend.load() is False and not backend._ready
    gone = RemoteBackend(f"http://127.0.0.1:{closed_port()}/v1", model="m", api_key="")
    assert gone.load() is False


def test_reading_ready_reprobes_a_server_that_came_up_later(upstream: Upstream) -> None:
    backend = remote(upstream)
    assert backend.ready is False  # never probed: this read starts a probe in the background
    deadline = time.monotonic() + 2
    while not backend.ready and time.monotonic() < deadline:
        time.sleep(0.01)
    assert backend.ready is True


@pytest.mark.asyncio
async def test_a_successful_stream_makes_it_ready(upstream: Upstream) -> None:
    backend = remote(upstream)
    backend._last_probe = time.monotonic()  # no background probe in this test
    assert backend.ready is False
    await collect(backend)
    assert backend.ready is True


def test_the_registry_knows_it(upstream: Upstream) -> None:
    backend = get_backend("openai", url=upstream.url, model="llama-3.1-8b")
    assert isinstance(backend, RemoteBackend) and backend.name == "openai"
    assert backend.display_name == "llama-3.1-8b" and backend.url == upstream.url
    assert get_backend("openai", url=upstream.url, model="llama-3.1-8b") is backend


def test_it_imports_no_torch() -> None:
    code = (
        "import sys, inference.backends.remote, inference.runner; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=60)
