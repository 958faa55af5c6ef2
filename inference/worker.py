"""The inference worker: a Channels consumer on the ``inference`` channel.

Production runs it as ``python manage.py runworker inference`` (one model per process, Redis
between processes). The embedded default (no ``REDIS_URL``) runs the same worker as a task
inside the web process, started on the first WebSocket connection — runworker cannot share an
in-memory channel layer, and daphne has no lifespan hook to start it earlier.

Handlers start work and return at once: one consumer instance serves every job of a process,
so a handler that generated inline would block all others.

On SIGTERM (a deploy) a worker drains: it takes no new job (they stay on the channel for the
other workers), stops announcing itself, finishes the replies it has for up to
``STELLARCHAT_DRAIN_SECONDS``, ends any still going with their text kept, and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import signal
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from channels.consumer import AsyncConsumer
from channels.worker import Worker
from django.conf import settings

from stellarchat.consumers import DirectDispatch

logger = logging.getLogger(__name__)

_tasks: set[asyncio.Task[Any]] = set()
_replies: set[asyncio.Task[Any]] = set()  # the replies this process generates
_started: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, bool] = weakref.WeakKeyDictionary()
_embedded: list[InferenceWorker] = []  # the web process's own worker (embedded topology)


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
        task = _keep(asyncio.create_task(run_reply(job, layer=self.channel_layer)))
        _replies.add(task)
        task.add_done_callback(_replies.discard)


async def warm_up(stop: asyncio.Event | None = None) -> None:
    """Load the model on the inference thread now, so the first reply does not pay for it."""
    from inference import registry
    from inference.runner import run_on_inference_thread

    served = registry.served_here()
    if not served:
        return
    name = registry.default_name() if registry.default_name() in served else served[0]
    backend = registry.backend(name)
    load = getattr(backend, "load", None)
    if load is None:
        return
    try:
        await run_on_inference_thread(load)
    except Exception as exc:  # reported again, per reply, as an error ending
        logger.error("model warm-up failed: %s", exc)
        return
    if stop is None or not stop.is_set():
        from inference.heartbeat import beat

        await beat({name: backend})  # ready now: /readyz need not wait for the next beat


def start_background(layer: Any, *, inference: bool, stop: asyncio.Event | None = None) -> None:
    """Start this event loop's sweeper (every process) and, if asked, the model warm-up and
    the heartbeat (until ``stop``: a draining worker no longer says it is there)."""
    from chat.replies import sweep_forever

    _background(sweep_forever(layer))
    if inference:
        from inference.heartbeat import beat_forever

        _background(warm_up(stop))
        _background(beat_forever(served_backends, stop=stop))


def served_backends() -> dict[str, Any]:
    """This process's backends, by model name (made, not loaded: a model loads on first use)."""
    from inference import registry

    return {name: registry.backend(name) for name in registry.served_here()}


class InferenceChannels:
    """The worker's router: every model's channel (``inference``, ``inference.<model>...``:
    inference/registry.py) goes to the one inference consumer; the models a worker serves
    decide which channels it listens on, not this."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        channel = scope.get("channel", "")
        if channel != "inference" and not channel.startswith("inference."):
            raise ValueError(f"no route for channel {channel!r}")
        return await self.application(scope, receive, send)


class InferenceWorker(Worker):
    """channels' Worker plus the sweeper and model warm-up (used by our ``runworker``).

    Its listener survives the channel layer going away (Redis restarting): channels' own
    ends the whole worker on the first connection error.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stopping = asyncio.Event()  # set on SIGTERM: take no new job, finish, exit

    async def listener(self, channel: str) -> None:
        # Redis answering first, so "listening" in the log means it: an operator (or a test)
        # who starts a second worker can tell when it takes jobs.
        connection = getattr(self.channel_layer, "connection", None)  # Redis layers only
        if connection is not None:
            await _retrying(lambda: connection(0).ping())
        logger.info("listening on channel %r", channel)
        while True:
            message = await self._next(channel)
            if message is None:
                logger.info("no longer listening on channel %r", channel)
                return
            if not message.get("type"):
                logger.error("dropping a message without a type on %s", channel)
                continue
            scope = {"type": "channel", "channel": channel}
            queue = self.get_or_create_application_instance(channel, scope)
            await queue.put(message)

    async def _next(self, channel: str) -> dict[str, Any] | None:
        """The channel's next message, or None once draining began. A message that arrives
        just as it begins goes back on the channel, for another worker."""
        receive = asyncio.ensure_future(_retrying(lambda: self.channel_layer.receive(channel)))
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({receive, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not receive.done():
            receive.cancel()  # the Redis layer keeps a message it was handing over (backup)
            with contextlib.suppress(asyncio.CancelledError):
                await receive
        if receive.cancelled():
            return None
        message: dict[str, Any] = receive.result()
        if self.stopping.is_set():
            await self.channel_layer.send(channel, message)
            return None
        return message

    def drain(self) -> None:
        """SIGTERM: take no new job and finish the replies in hand (``finish_replies``); a
        second signal ends them at once."""
        if self.stopping.is_set():
            from chat.replies import interrupt_all

            logger.warning("stop signal again: ending %d replies now", interrupt_all())
            return
        logger.info(
            "stopping: taking no new job; finishing %d replies (up to %s s)",
            len(_replies),
            settings.STELLARCHAT_DRAIN_SECONDS,
        )
        self.stopping.set()

    async def handle(self) -> None:
        if not embedded():  # a runworker process: signals are ours (embedded: daphne's)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.drain)
        start_background(self.channel_layer, inference=True, stop=self.stopping)
        if not embedded():  # a runworker process: it has no /metrics of its own
            from stellarchat.metrics import serve_worker_metrics

            serve_worker_metrics()
        await super().handle()  # returns when the listener stops: draining
        await finish_replies()
        logger.info("stopped")


async def finish_replies(seconds: float | None = None) -> None:
    """Wait for this process's replies to end, up to ``seconds`` (STELLARCHAT_DRAIN_SECONDS);
    past it, end those still going with their text so far, and wait for them to be saved."""
    from chat.replies import interrupt_all

    seconds = settings.STELLARCHAT_DRAIN_SECONDS if seconds is None else seconds
    pending = set(_replies)
    if pending:
        _, pending = await asyncio.wait(pending, timeout=seconds)
    if pending:
        logger.warning(
            "drain time (%s s) is up: ending %d replies, their text kept",
            seconds,
            interrupt_all(),
        )
        _, pending = await asyncio.wait(pending, timeout=30)
        if pending:
            logger.error("%d replies did not end; exiting anyway", len(pending))


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

        from inference import registry

        worker = InferenceWorker(
            application=get_default_application(),
            channels=registry.worker_channels(),  # embedded: it serves every model
            channel_layer=layer,
        )
        _embedded.append(worker)
        _background(worker.arun())
    else:
        start_background(layer, inference=False)


async def drain_embedded() -> None:
    """The web process is stopping: its own worker (embedded) takes no new job and finishes
    the replies it has, as a runworker process does on SIGTERM."""
    if not _embedded:
        return
    for worker in _embedded:
        worker.stopping.set()
    if _replies:
        logger.info(
            "stopping: finishing %d replies (up to %s s; stop again to end them now)",
            len(_replies),
            settings.STELLARCHAT_DRAIN_SECONDS,
        )
    await finish_replies()
