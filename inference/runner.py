"""Run a backend's blocking stream off the event loop, on one dedicated inference thread.

All inference of a process happens on that one thread (torch's per-thread state, CUDA graphs
and compile caches stay on it, and generations never oversubscribe the cores). The async side
awaits deltas through a queue, so the event loop is never blocked by a decode step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

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
    """Async view of ``backend.stream``. Leaving the loop early cancels the generation.

    ``on_start`` is called (on the inference thread) when the job leaves the queue and starts.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    cancel = cancel or threading.Event()

    def put(item: object) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is gone: nobody is listening any more
            cancel.set()

    def produce() -> None:
        if on_start is not None:
            on_start()
        try:
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


async def run_on_inference_thread(func: Callable[[], T]) -> T:
    """Run ``func`` on the inference thread (model loading, so later jobs queue behind it)."""
    return await asyncio.get_running_loop().run_in_executor(_executor, func)
