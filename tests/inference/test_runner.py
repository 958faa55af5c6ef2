"""Generation runs off the event loop, on one dedicated inference thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from inference import runner
from inference.backends.base import Result, StreamItem, Turn
from inference.backends.fake import TestBackend
from inference.backends.hf import TransformersBackend
from inference.options import GenerationOptions
from tests.inference import tinymodels


class BlockingBackend:
    """Each 'decode step' blocks its thread for 20 ms, like a real model would."""

    name = "blocking"

    def __init__(self) -> None:
        self.threads: set[str] = set()

    def stream(
        self,
        turns: Sequence[Turn],
        options: GenerationOptions,
        cancel: threading.Event | None = None,
    ) -> Iterator[StreamItem]:
        for i in range(10):
            self.threads.add(threading.current_thread().name)
            if cancel is not None and cancel.is_set():
                yield Result(finish_reason="cancelled", completion_tokens=i)
                return
            time.sleep(0.02)
            yield f"t{i} "
        yield Result(finish_reason="stop", completion_tokens=10)


async def max_lag_while(coro: object) -> tuple[float, object]:
    """Run ``coro`` while a ticker measures how late the event loop wakes it."""
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            before = time.monotonic()
            await asyncio.sleep(0.005)
            lags.append(time.monotonic() - before - 0.005)

    task = asyncio.create_task(ticker())
    result = await coro  # type: ignore[misc]
    done.set()
    await task
    return max(lags), result


async def collect(backend: object, cancel_after: int | None = None) -> list[StreamItem]:
    cancel = threading.Event()
    items: list[StreamItem] = []
    async for item in runner.astream(
        backend,
        [{"role": "user", "content": "hi"}],
        GenerationOptions(),
        cancel,  # type: ignore[arg-type]
    ):
        items.append(item)
        if cancel_after is not None and len(items) == cancel_after:
            cancel.set()
    return items


@pytest.mark.asyncio
async def test_blocking_generation_does_not_block_the_loop() -> None:
    backend = BlockingBackend()
    lag, items = await max_lag_while(collect(backend))
    assert items[-1] == Result(finish_reason="stop", completion_tokens=10)  # type: ignore[index]
    assert lag < 0.015  # a blocked loop would lag by the 20 ms step
    assert len(backend.threads) == 1 and next(iter(backend.threads)).startswith("inference")


@pytest.mark.asyncio
async def test_real_model_streams_through_the_runner(tmp_path: Path) -> None:
    folder = tinymodels.build(tmp_path / "m", "llama")
    backend = TransformersBackend(str(folder), device="cpu")
    items = [
        i
        async for i in runner.astream(
            backend,
            [{"role": "user", "content": "hi"}],
            GenerationOptions(temperature=0, max_new_tokens=30),
        )
    ]
    assert isinstance(items[-1], Result) and items[-1].completion_tokens > 0
    direct = list(
        backend.stream(
            [{"role": "user", "content": "hi"}], GenerationOptions(temperature=0, max_new_tokens=30)
        )
    )
    assert "".join(i for i in items if isinstance(i, str)) == "".join(
        i for i in direct if isinstance(i, str)
    )


@pytest.mark.asyncio
async def test_cancel_from_the_async_side() -> None:
    items = await collect(TestBackend(delay=0.01), cancel_after=2)
    result = items[-1]
    assert isinstance(result, Result) and result.finish_reason == "cancelled"
    assert len(items) <= 4


@pytest.mark.asyncio
async def test_a_backend_that_raises_still_ends_with_error() -> None:
    class Broken:
        name = "broken"

        def stream(self, *args: object) -> Iterator[StreamItem]:
            yield "partial "
            raise RuntimeError("boom")

    items = await collect(Broken())
    assert items[0] == "partial "
    assert isinstance(items[-1], Result) and items[-1].finish_reason == "error"
    assert items[-1].error_code == "internal"
