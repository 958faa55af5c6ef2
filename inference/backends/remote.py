"""The remote backend: streams replies from an OpenAI-compatible server (vLLM, llama.cpp's
llama-server, Ollama, or another StellarChat) over ``POST {url}/chat/completions``.

It is async (``astream``): a reply is mostly waiting on the network, so many run at once on the
event loop and the server batches them; nothing here blocks a thread per stream. No torch or
transformers import, so a process using it stays small.

Each stream uses its own ``httpx.AsyncClient`` (nothing shared across event loops), with one
SSL context per backend: building one costs ~20 ms of blocking CPU, the client itself ~0.1 ms.
Cancellation closes the response, and with it the TCP connection: that is how the server
learns to stop generating.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import queue
import re
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from inference.backends.base import (
    BackendError,
    ErrorCode,
    Result,
    StreamItem,
    Turn,
    validate_turns,
)
from inference.options import GenerationOptions

logger = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.05  # how often a silent stream looks at the cancel signal
REPROBE_SECONDS = 15.0  # while not ready, how often reading ``ready`` re-probes the server
PROBE_TIMEOUT_SECONDS = 5.0
MAX_LINE_CHARS = 1_000_000  # one SSE line; a server sending more is broken
MAX_ERROR_BODY_BYTES = 16_384
UPSTREAM_TEXT_CHARS = 200
# C0/C1 controls and bidi overrides: upstream text ends up in logs and in the UI.
UNSAFE_CHARS_RE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
TOO_LONG_RE = re.compile(r"context|length|too long|maximum", re.IGNORECASE)
_DONE = object()


def clean(text: Any, limit: int = UPSTREAM_TEXT_CHARS) -> str:
    """Untrusted text as one short, printable line."""
    text = UNSAFE_CHARS_RE.sub(" ", str(text)[: limit * 4])
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _safe_url(url: str) -> str:
    """The URL without user:password, for messages users and logs see."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _upstream_message(body: bytes) -> str:
    """The error message of an error response: OpenAI's shape first, then common others."""
    text = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        return clean(text)
    return clean(_message_of(data) or text)


def _message_of(data: Any) -> str:
    if isinstance(data, dict):
        for key in ("error", "message", "detail"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, dict | list):
                found = _message_of(value)
                if found:
                    return found
    if isinstance(data, list) and data:  # FastAPI 422: {"detail": [{"msg": ...}]}
        first = data[0]
        if isinstance(first, dict):
            return str(first.get("msg") or first.get("message") or "")
    return ""


def _finish_reason(upstream: str | None) -> Any:
    """OpenAI's "length" stays; "stop" and anything else (tool_calls, eos, ...) is a stop."""
    return "length" if upstream == "length" else "stop"


class _Failure(Exception):
    """Ends a stream with ``error``; raised inside the request, turned into a Result."""

    def __init__(self, message: str, code: ErrorCode = "inference_unavailable") -> None:
        super().__init__(message)
        self.code: ErrorCode = code


@dataclass
class _Progress:
    """What the request saw so far (read by the error path too)."""

    chunks: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    events: int = 0
    responded: bool = False

    def result(self, reason: Any, **extra: Any) -> Result:
        return Result(
            finish_reason=reason,
            prompt_tokens=self.prompt_tokens or 0,
            completion_tokens=(
                self.completion_tokens if self.completion_tokens is not None else self.chunks
            ),
            **extra,
        )


class RemoteBackend:
    """Streams replies from an OpenAI-compatible ``/v1/chat/completions`` endpoint."""

    name = "openai"

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float | None = None,
    ) -> None:
        from django.conf import settings

        self.url = (url or settings.STELLARCHAT_REMOTE_URL).rstrip("/")
        self.api_key = settings.STELLARCHAT_REMOTE_API_KEY if api_key is None else api_key
        self.model = model or settings.STELLARCHAT_REMOTE_MODEL
        self.timeout = float(timeout or settings.STELLARCHAT_REMOTE_TIMEOUT)
        self._ready = False
        self._last_probe = float("-inf")
        self._probe_lock = threading.Lock()
        self._ssl_lock = threading.Lock()
        self._ssl: ssl.SSLContext | None = None

    # --- readiness -----------------------------------------------------------------------

    @property
    def display_name(self) -> str:
        return self.model or self.name

    @property
    def stall_timeout(self) -> float:
        """How long a reply may show no progress before the app gives up on it: the server's
        own queueing and prefill count as silence, and this backend already ends a request
        that stays silent for ``timeout``; the app waits a little longer than that."""
        return self.timeout + 5.0

    @property
    def ready(self) -> bool:
        """The server answered recently (a probe or a stream), and no connection failed since.

        While not ready, reading this starts a background probe every REPROBE_SECONDS: the
        heartbeat reads it every few seconds, and without a re-probe a server that came up
        after us would stay "not ready" until a chat succeeded (which a readiness-gated load
        balancer would never send).
        """
        stale = time.monotonic() - self._last_probe >= REPROBE_SECONDS
        if not self._ready and stale and not self._probe_lock.locked():
            self._last_probe = time.monotonic()
            threading.Thread(target=self.load, name="remote-probe", daemon=True).start()
        return self._ready

    def load(self) -> bool:
        """Blocking warm-up: ``GET {url}/models``. Never raises; returns whether it answered.

        Only the server's answer is checked, not that the model is listed: llama-server, for
        one, serves any model name with the model it loaded.
        """
        with self._probe_lock:
            self._last_probe = time.monotonic()
            try:
                with httpx.Client(
                    verify=self._ssl_context(),
                    timeout=min(self.timeout, PROBE_TIMEOUT_SECONDS),
                    headers=self._headers(),
                ) as client:
                    response = client.get(f"{self.url}/models")
            except Exception as exc:
                self._set_ready(False, f"cannot reach {_safe_url(self.url)}: {clean(exc)}")
                return False
            if response.status_code in (401, 403):
                why = f"HTTP {response.status_code}; check STELLARCHAT_REMOTE_API_KEY"
                self._set_ready(False, why)
            elif response.is_success:
                self._set_ready(True, "")
            else:
                self._set_ready(False, f"GET /models answered HTTP {response.status_code}")
            return self._ready

    def _set_ready(self, ready: bool, why: str) -> None:
        if ready != self._ready:
            if ready:
                logger.info("model server %s is ready", _safe_url(self.url))
            else:
                logger.warning("model server %s is not ready: %s", _safe_url(self.url), why)
        self._ready = ready

    def _ssl_context(self) -> ssl.SSLContext:
        with self._ssl_lock:
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
            return self._ssl

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    # --- streaming -----------------------------------------------------------------------

    def request_body(self, turns: Sequence[Turn], options: GenerationOptions) -> dict[str, Any]:
        """The chat-completions request: only the options we set, in OpenAI's names."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": t["role"], "content": t["content"]} for t in turns],
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": options.temperature,
            "top_p": options.top_p,
            "max_tokens": options.max_new_tokens,
        }
        if options.stop:
            body["stop"] = list(options.stop)
        if options.seed is not None:
            body["seed"] = options.seed
        if options.top_k > 0:
            body["top_k"] = options.top_k  # not OpenAI's, but vLLM, llama.cpp, Ollama take it
        return body

    async def astream(
        self,
        turns: Sequence[Turn],
        options: GenerationOptions,
        cancel: threading.Event | None = None,
    ) -> AsyncIterator[StreamItem]:
        """Yield text deltas, then one ``Result``. Never raises for generation failures.

        The request runs in its own task feeding a queue, so a silent server can still be
        cancelled: this side wakes every CANCEL_POLL_SECONDS, and cancelling the task closes
        the connection.
        """
        started = time.monotonic()
        cancel = cancel or threading.Event()
        try:
            validate_turns(turns)
            if not self.url or not self.model:
                raise BackendError(
                    "the openai backend needs STELLARCHAT_REMOTE_URL and STELLARCHAT_REMOTE_MODEL"
                )
        except BackendError as exc:
            yield Result(finish_reason="error", error_code=exc.code, error=str(exc))
            return
        progress = _Progress()
        items: asyncio.Queue[StreamItem] = asyncio.Queue()
        request = asyncio.create_task(self._produce(turns, options, progress, items.put_nowait))
        getter: asyncio.Future[StreamItem] | None = None
        ttft_ms: float | None = None
        result: Result | None = None
        try:
            while result is None:
                if cancel.is_set():
                    result = progress.result("cancelled")
                    break
                if getter is None:
                    getter = asyncio.ensure_future(items.get())
                done, _ = await asyncio.wait({getter}, timeout=CANCEL_POLL_SECONDS)
                if not done:
                    continue
                item, getter = getter.result(), None
                if isinstance(item, Result):
                    result = item
                    break
                if ttft_ms is None:
                    ttft_ms = (time.monotonic() - started) * 1000.0
                yield item
        finally:
            if getter is not None:
                getter.cancel()
            request.cancel()
            await asyncio.wait({request})  # closed before we go on (or before aclose returns)
        yield replace(result, ttft_ms=ttft_ms, duration_ms=(time.monotonic() - started) * 1000.0)

    async def _produce(
        self,
        turns: Sequence[Turn],
        options: GenerationOptions,
        progress: _Progress,
        put: Callable[[StreamItem], None],
    ) -> None:
        """Run the request, ``put`` each delta, then always ``put`` one Result (no timings)."""
        url = _safe_url(self.url)
        try:
            await self._request(turns, options, progress, put)
            result = progress.result(_finish_reason(progress.finish_reason))
            self._set_ready(True, "")
        except _Failure as exc:
            result = progress.result("error", error_code=exc.code, error=str(exc))
        except httpx.TimeoutException as exc:
            what = (
                "did not accept a connection"
                if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
                else "sent nothing"
            )
            message = (
                f"the model server at {url} {what} for {self.timeout:g} s "
                "(STELLARCHAT_REMOTE_TIMEOUT)"
            )
            result = progress.result("error", error_code="inference_unavailable", error=message)
            self._set_ready(False, message)
        except (
            httpx.ConnectError,
            httpx.UnsupportedProtocol,
            httpx.ProxyError,
            httpx.InvalidURL,
        ) as exc:
            message = f"cannot reach the model server at {url}: {clean(exc)}"
            result = progress.result("error", error_code="inference_unavailable", error=message)
            self._set_ready(False, message)
        except (httpx.TransportError, httpx.DecodingError) as exc:  # dropped, reset, garbled
            if progress.finish_reason is not None:  # the reply was complete: keep it
                result = progress.result(_finish_reason(progress.finish_reason))
            else:
                message = (
                    "the model server closed the stream mid-reply"
                    if progress.responded
                    else f"the model server at {url} closed the connection without answering"
                )
                result = progress.result("error", error_code="inference_unavailable", error=message)
                if not progress.responded:
                    self._set_ready(False, f"{message}: {clean(exc)}")
        except Exception as exc:  # a bug here must still end the stream cleanly
            logger.exception("remote stream failed")
            result = progress.result(
                "error", error_code="internal", error=f"remote backend error: {clean(exc)}"
            )
        if result.finish_reason == "error":
            logger.warning("remote stream: %s", result.error)
        put(result)

    async def _request(
        self,
        turns: Sequence[Turn],
        options: GenerationOptions,
        progress: _Progress,
        put: Callable[[StreamItem], None],
    ) -> None:
        timeout = httpx.Timeout(self.timeout)
        headers = {"Accept": "text/event-stream", **self._headers()}
        body = self.request_body(turns, options)
        async with (
            httpx.AsyncClient(verify=self._ssl_context(), timeout=timeout) as client,
            client.stream(
                "POST", f"{self.url}/chat/completions", json=body, headers=headers
            ) as response,
        ):
            if not response.is_success:
                raise await self._status_failure(response)
            progress.responded = True
            async with aclosing(_sse_data(response)) as events:
                async for data in events:
                    progress.events += 1
                    if data == "[DONE]":
                        return
                    self._handle_event(data, progress, put)
        if progress.finish_reason is None:
            if progress.events == 0:
                kind = clean(response.headers.get("content-type", "none"), 60)
                raise _Failure(
                    f"the model server answered without an event stream (content type {kind})"
                )
            raise _Failure("the model server closed the stream mid-reply")

    @staticmethod
    def _handle_event(data: str, progress: _Progress, put: Callable[[StreamItem], None]) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            raise _Failure("the model server sent a malformed stream") from None
        if not isinstance(event, dict):
            raise _Failure("the model server sent a malformed stream")
        if event.get("error"):
            message = clean(_message_of(event) or event["error"])
            raise _Failure(f"the model server failed mid-reply: {message}")
        usage = event.get("usage")
        if isinstance(usage, dict):
            for key in ("prompt_tokens", "completion_tokens"):
                value = usage.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                    setattr(progress, key, value)
        choices = event.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return  # the usage chunk has no choices
        choice = choices[0]
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str) and content:
            progress.chunks += 1
            put(content)
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason:
            progress.finish_reason = reason

    async def _status_failure(self, response: httpx.Response) -> _Failure:
        """A clear one-line failure for a non-2xx answer (its body is read, up to a cap)."""
        body = b""
        try:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= MAX_ERROR_BODY_BYTES:
                    break
        except httpx.HTTPError:
            pass  # the status alone says enough
        status = response.status_code
        upstream = _upstream_message(body[:MAX_ERROR_BODY_BYTES]) or response.reason_phrase
        url = _safe_url(self.url)
        if status in (401, 403):
            return _Failure(
                f"the model server refused our API key (HTTP {status}); "
                "check STELLARCHAT_REMOTE_API_KEY"
            )
        if status == 404:
            return _Failure(
                f"the model server at {url} has no model {clean(self.model, 80)!r} or no "
                f"/chat/completions (HTTP 404: {upstream}); check STELLARCHAT_REMOTE_MODEL and "
                "STELLARCHAT_REMOTE_URL (it ends in /v1)"
            )
        if status == 413 or (status == 400 and TOO_LONG_RE.search(upstream)):
            return _Failure(
                f"the conversation is too long for the model server: {upstream}", "too_long"
            )
        if status in (400, 422):
            return _Failure(f"the model server rejected the request: {upstream}", "invalid_option")
        if status == 429:
            return _Failure(f"the model server is rate limiting us (HTTP 429): {upstream}")
        if status >= 500:
            return _Failure(f"the model server failed (HTTP {status}): {upstream}")
        return _Failure(f"the model server answered HTTP {status}: {upstream}")

    def stream(
        self,
        turns: Sequence[Turn],
        options: GenerationOptions,
        cancel: threading.Event | None = None,
    ) -> Iterator[StreamItem]:
        """The blocking ``Backend`` interface, for scripts: ``astream`` on a helper thread's
        own event loop (so it works even where a loop is already running), item by item.
        Leaving early sets ``cancel``."""
        cancel = cancel or threading.Event()
        items: queue.Queue[object] = queue.Queue()

        async def pump() -> None:
            async for item in self.astream(turns, options, cancel):
                items.put(item)

        def run() -> None:
            try:
                asyncio.run(pump())
            except BaseException as exc:  # pragma: no cover - astream does not raise
                items.put(Result(finish_reason="error", error_code="internal", error=clean(exc)))
            finally:
                items.put(_DONE)

        thread = threading.Thread(target=run, name="remote-stream", daemon=True)
        thread.start()
        try:
            while (item := items.get()) is not _DONE:
                yield item  # type: ignore[misc]
        finally:
            cancel.set()
            thread.join()


async def _sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined, per the SSE spec).

    Comments, other fields and blank events are skipped. Lines end in LF or CRLF; a line
    longer than MAX_LINE_CHARS is a broken stream, not something to buffer forever.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buffer = ""
    data: list[str] = []
    async for chunk in response.aiter_bytes():
        buffer += decoder.decode(chunk)
        *lines, buffer = buffer.split("\n")
        if len(buffer) > MAX_LINE_CHARS:
            raise _Failure("the model server sent a malformed stream")
        for raw in lines:
            line = raw[:-1] if raw.endswith("\r") else raw
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
                continue
            field, _, value = line.partition(":")
            if field == "data":
                data.append(value[1:] if value.startswith(" ") else value)
    buffer += decoder.decode(b"", final=True)
    if buffer.rstrip("\r"):
        field, _, value = buffer.rstrip("\r").partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:  # the last event without its blank line
        yield "\n".join(data)
