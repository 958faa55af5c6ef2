"""The one interface every model backend implements.

A backend turns plain data (role/content turns, validated options, a cancel signal) into a
stream: text deltas (``str``) followed by exactly one ``Result``. It never sees ORM objects and
never raises for generation problems: failures end the stream with ``finish_reason="error"``
and a one-line, actionable ``error`` message, so the caller always gets a defined ending.

``stream`` is a plain blocking generator. Callers run it off the event loop (see
``inference.runner``); cancellation is a ``threading.Event`` checked between decode steps.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypedDict, runtime_checkable

from inference.options import GenerationOptions

FinishReason = Literal["stop", "length", "cancelled", "error"]
ErrorCode = Literal["too_long", "inference_unavailable", "internal", "invalid_option"]
ROLES = ("system", "user", "assistant")


class Turn(TypedDict):
    role: str
    content: str


@dataclass(frozen=True)
class Result:
    """How a stream ended. ``ttft_ms`` is measured from the call to the first delta."""

    finish_reason: FinishReason
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    error_code: ErrorCode | None = None
    error: str | None = None

    @property
    def tokens_per_second(self) -> float | None:
        """Decode speed after the first token (the part the prompt length does not skew)."""
        if self.ttft_ms is None or self.completion_tokens < 2:
            return None
        decode_s = (self.duration_ms - self.ttft_ms) / 1000.0
        if decode_s <= 0:
            return None
        return (self.completion_tokens - 1) / decode_s


StreamItem = str | Result


class BackendError(Exception):
    """A failure to report as an ``error`` ending; ``code`` is the client-facing error code."""

    def __init__(self, message: str, *, code: ErrorCode = "inference_unavailable") -> None:
        super().__init__(message)
        self.code: ErrorCode = code


@runtime_checkable
class Backend(Protocol):
    """A loaded (or lazily loading) model that streams replies."""

    name: str

    def stream(
        self,
        turns: Sequence[Turn],
        options: GenerationOptions,
        cancel: threading.Event | None = None,
    ) -> Iterator[StreamItem]:
        """Yield text deltas, then one ``Result``. Must not raise for generation failures."""
        ...


def validate_turns(turns: Sequence[Turn]) -> None:
    """Reject malformed turn lists early: the backend is fed plain data from many places."""
    if not turns:
        raise BackendError("no turns to answer", code="internal")
    for turn in turns:
        if turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
            raise BackendError(f"malformed turn: {turn!r:.80}", code="internal")
    if turns[-1]["role"] != "user":
        raise BackendError("the last turn must be the user's", code="internal")


class CallbackStreams:
    """``stream`` and ``astream`` for backends that take a request with a callback
    (``_submit(turns, options, cancel, emit, on_start=...)``, ``emit`` called from another
    thread with each delta and last the ``Result``): the batched transformers backend and its
    model-process twin. Leaving either stream early sets the request's cancel signal."""

    def _submit(
        self,
        turns: Sequence[Turn],
        options: GenerationOptions,
        cancel: threading.Event,
        emit: Callable[[StreamItem], None],
        *,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        raise NotImplementedError

    async def _before_submit(self) -> None:
        """Runs on the event loop before ``astream`` submits (a lazy model load, say)."""

    def stream(
        self,
        turns: Sequence[Turn],
        options: GenerationOptions,
        cancel: threading.Event | None = None,
    ) -> Iterator[StreamItem]:
        """Blocking view (scripts, tests)."""
        items: queue.SimpleQueue[StreamItem] = queue.SimpleQueue()
        cancel = cancel or threading.Event()
        try:
            self._submit(turns, options, cancel, items.put)
            while True:
                item = items.get()
                yield item
                if isinstance(item, Result):
                    return
        finally:
            cancel.set()  # left early: the request is dropped at its next step

    async def astream(
        self,
        turns: Sequence[Turn],
        options: GenerationOptions,
        cancel: threading.Event | None = None,
        *,
        on_start: Callable[[], None] | None = None,
    ) -> AsyncIterator[StreamItem]:
        """Deltas as they are generated, one loop wake-up per batch of them
        (``runner.Inbox``). ``on_start`` is called (off the loop) when the request leaves the
        queue for the batch, so time spent waiting for a place never counts as a stall."""
        import asyncio

        from inference.runner import inbox as loop_inbox

        items: asyncio.Queue[StreamItem] = asyncio.Queue()
        cancel = cancel or threading.Event()
        inbox = loop_inbox(asyncio.get_running_loop())

        def emit(item: StreamItem) -> None:
            if not inbox.post(items, item):  # the loop is gone: nobody listens any more
                cancel.set()

        try:
            await self._before_submit()
            self._submit(turns, options, cancel, emit, on_start=on_start)
            while True:
                item = await items.get()
                yield item
                if isinstance(item, Result):
                    return
        finally:
            cancel.set()
