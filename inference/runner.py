"""Run a backend's stream for the event loop: blocking backends on one inference thread,
async backends (``astream``, e.g. the remote one) directly on the loop.

All local inference of a process happens on that one thread (torch's per-thread state, CUDA
graphs and compile caches stay on it, and generations never oversubscribe the cores). The async
side awaits deltas through a queue, so the event loop is never blocked by a decode step. An
async backend only waits on the network, so its streams run concurrently on the loop instead:
the server it talks to batches them, and queueing them on one thread would serialise them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from typing import Any, TypeVar

from inference.backends.base import Backend, Result, StreamItem, Turn
from inference.options import GenerationOptions

logger = logging.getLogger(__name__)

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
_DONE = object()
T = TypeVar("T")


async def astream(
    backend: Backend,
    turns: Sequence[Turn],
    options: GenerationOptions,
    cancel: threading.Event | None = None,
    *,
    on_start: Callable[[], None] | None = None,
) -> AsyncIterator[StreamItem]:
    """Async view of ``backend.stream`` (or ``backend.astream``). Leaving the loop early
    cancels the generation.

    ``on_start`` is called when the job starts: on the inference thread when it leaves the
    queue, or at once (on the loop) for an async backend.
    """
    if hasattr(backend, "astream"):
        async with aclosing(_astream_async(backend, turns, options, cancel, on_start)) as items:
            async for item in items:
                yield item
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    cancel = cancel or threading.Event()
    box = inbox(loop)

    def put(item: object) -> None:
        if not box.post(queue, item):  # the loop is gone: nobody is listening any more
            cancel.set()

    def produce() -> None:
        try:
            if on_start is not None:
                on_start()
            for item in backend.stream(turns, options, cancel):
                put(item)
        except BaseException as exc:  # a backend must not raise; if one does, end cleanly
            logger.exception("backend %s raised", getattr(backend, "name", backend))
            put(Result(finish_reason="error", error_code="internal", error=f"backend error: {exc}"))
        finally:
            put(_DONE)

    loop.run_in_executor(_executor, produce)
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            yield item  # type: ignore[misc]
    finally:
        cancel.set()


async def _astream_async(
    backend: Any,
    turns: Sequence[Turn],
    options: GenerationOptions,
    cancel: threading.Event | None,
    on_start: Callable[[], None] | None,
) -> AsyncIterator[StreamItem]:
    """An async backend's stream, on the loop; a backend that raises still ends cleanly."""
    cancel = cancel or threading.Event()
    if getattr(backend, "reports_start", False):  # it knows when the request leaves its queue
        stream = backend.astream(turns, options, cancel, on_start=on_start)
    else:
        if on_start is not None:
            on_start()
        stream = backend.astream(turns, options, cancel)
    try:
        while True:
            try:
                item = await anext(stream)
            except StopAsyncIteration:
                break
            except Exception as exc:  # a backend must not raise; if one does, end cleanly
                logger.exception("backend %s raised", getattr(backend, "name", backend))
                yield Result(
                    finish_reason="error", error_code="internal", error=f"backend error: {exc}"
                )
                break
            yield item
    finally:
        cancel.set()  # before closing: the backend sees why it is being closed
        await stream.aclose()


class Inbox:
    """Hands items from the inference thread to one event loop, one wake-up per burst (both
    the batch scheduler's streams and a blocking backend's items go through it): the
    deltas of every stream of a decode step cross in one ``call_soon_threadsafe`` instead of
    one each (16 streams: 1 wake-up of the loop per step, not 16)."""

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.pending: list[tuple[Any, StreamItem]] = []

    def post(self, queue: Any, item: StreamItem) -> bool:
        """Queue ``item`` for ``queue``; False when the loop is closed."""
        with self.lock:
            self.pending.append((queue, item))
            if len(self.pending) > 1:
                return True  # a wake-up is already on its way
        try:
            self.loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:
            with self.lock:
                self.pending.clear()
            return False
        return True

    def _deliver(self) -> None:  # on the loop
        with self.lock:
            pending, self.pending = self.pending, []
        for queue, item in pending:
            queue.put_nowait(item)


_inboxes: weakref.WeakKeyDictionary[Any, Inbox] = weakref.WeakKeyDictionary()
_inboxes_lock = threading.Lock()


def inbox(loop: asyncio.AbstractEventLoop) -> Inbox:
    with _inboxes_lock:
        inbox = _inboxes.get(loop)
        if inbox is None:
            inbox = _inboxes[loop] = Inbox(loop)
        return inbox


def submit_to_inference_thread(func: Callable[[], Any]) -> None:
    """Queue ``func`` on the inference thread from anywhere, without waiting for it."""
    _executor.submit(func)


async def run_on_inference_thread(func: Callable[[], T]) -> T:
    """Run ``func`` on the inference thread (model loading, so later jobs queue behind it)."""
    return await asyncio.get_running_loop().run_in_executor(_executor, func)
