"""The inference worker: a Channels consumer on the ``inference`` channel.

Production runs it as ``python manage.py runworker inference`` (one model per process, Redis
between processes). The embedded default (no ``REDIS_URL``) runs the same worker as a task
inside the web process, started on the first WebSocket connection — runworker cannot share an
in-memory channel layer, and daphne has no lifespan hook to start it earlier.

Handlers start work and return at once: one consumer instance serves every job of a process,
so a handler that generated inline would block all others.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from channels.consumer import AsyncConsumer
from channels.worker import Worker
from django.conf import settings

from stellarchat.consumers import DirectDispatch

logger = logging.getLogger(__name__)

_tasks: set[asyncio.Task[Any]] = set()
_started: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, bool] = weakref.WeakKeyDictionary()


def _keep(task: asyncio.Task[Any]) -> asyncio.Task[Any]:
    """Hold a reference so the task is not garbage-collected mid-flight."""
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return task


def _background(coro: Any) -> asyncio.Task[Any]:
    """A long-lived task in a context of its own: started from inside an HTTP request, it
    must not inherit that request's context (Django's per-request thread executor for sync
    code quits when the request ends, and every database call of the task would fail)."""
    return _keep(asyncio.get_running_loop().create_task(coro, context=contextvars.Context()))


class InferenceConsumer(DirectDispatch, AsyncConsumer):
    async def inference_generate(self, message: dict[str, Any]) -> None:
        from chat.replies import Job, run_reply

        try:
            job = Job.from_message(message)
        except (KeyError, ValueError, TypeError):
            logger.error("dropping malformed inference job: %.200r", message)
            return
        _keep(asyncio.create_task(run_reply(job, layer=self.channel_layer)))


async def warm_up() -> None:
    """Load the model on the inference thread now, so the first reply does not pay for it."""
    from inference.backends import get_backend
    from inference.runner import run_on_inference_thread

    backend = get_backend()
    load = getattr(backend, "load", None)
    if load is None:
        return
    try:
        await run_on_inference_thread(load)
    except Exception as exc:  # reported again, per reply, as an error ending
        logger.error("model warm-up failed: %s", exc)


def start_background(layer: Any, *, inference: bool) -> None:
    """Start this event loop's sweeper (every process) and, if asked, the model warm-up."""
    from chat.replies import sweep_forever

    _background(sweep_forever(layer))
    if inference:
        from inference.backends import get_backend
        from inference.heartbeat import beat_forever

        _background(warm_up())
        _background(beat_forever(get_backend()))


class InferenceWorker(Worker):
    """channels' Worker plus the sweeper and model warm-up (used by our ``runworker``).

    Its listener survives the channel layer going away (Redis restarting): channels' own
    ends the whole worker on the first connection error.
    """

    async def listener(self, channel: str) -> None:
        # Redis answering first, so "listening" in the log means it: an operator (or a test)
        # who starts a second worker can tell when it takes jobs.
        connection = getattr(self.channel_layer, "connection", None)  # Redis layers only
        if connection is not None:
            await _retrying(lambda: connection(0).ping())
        logger.info("listening on channel %r", channel)
        while True:
            message = await _retrying(lambda: self.channel_layer.receive(channel))
            if not message.get("type"):
                logger.error("dropping a message without a type on %s", channel)
                continue
            scope = {"type": "channel", "channel": channel}
            queue = self.get_or_create_application_instance(channel, scope)
            await queue.put(message)

    async def handle(self) -> None:
        start_background(self.channel_layer, inference=True)
        if not embedded():  # a runworker process: it has no /metrics of its own
            from stellarchat.metrics import serve_worker_metrics

            serve_worker_metrics()
        await super().handle()


async def _retrying(call: Callable[[], Awaitable[Any]]) -> Any:
    """``call()``'s result, retried with a growing pause while the channel layer is away."""
    delay = 0.5
    while True:
        try:
            return await call()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("channel layer unreachable (%s); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def embedded() -> bool:
    """Inference runs inside the web process unless a shared channel layer (Redis) is set."""
    return "redis" not in settings.CHANNEL_LAYERS["default"]["BACKEND"].lower()


def ensure_local_services(layer: Any) -> None:
    """Once per event loop of a web process: the sweeper, and the embedded worker if any."""
    loop = asyncio.get_running_loop()
    if _started.get(loop):
        return
    _started[loop] = True
    if embedded():
        from channels.routing import get_default_application

        worker = InferenceWorker(
            application=get_default_application(), channels=["inference"], channel_layer=layer
        )
        _background(worker.arun())
    else:
        start_background(layer, inference=False)
