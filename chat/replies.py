"""A reply's life on the inference side: generate, stream to the conversation's group, save.

``run_reply`` runs in an inference worker (a separate ``runworker inference`` process, or the
embedded worker inside the web process). It owns the reply from start to end, whether or not
any socket is listening: it publishes coalesced deltas to the conversation group, keeps the
shared stream state current, writes the database every couple of seconds and at the end.

``sweep`` runs in every process: it ends replies whose worker stopped showing signs of life
(killed, hung, or never picked the request up), so no message stays ``streaming``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError

from chat import selectors, services, streams
from chat.models import Message
from chat.protocol import error_frame
from inference import registry, runner
from inference.options import OptionError, parse_options
from inference.registry import Result
from stellarchat import layers, logs, metrics

logger = logging.getLogger(__name__)
T = TypeVar("T")

FLUSH_INTERVAL = 0.03  # seconds between coalesced deltas (the first goes out at once)...
FLUSH_SHARE = 8  # ...while at most this many replies stream from this process; beyond, it
MAX_FLUSH_INTERVAL = 0.1  # grows in proportion (16 replies: 60 ms), up to this
FOLLOWERS_SHARE = 4  # sockets following a reply at the interval above; more: it grows likewise
FOLLOWERS_EVERY = 1.0  # seconds between counts of a reply's followers
DB_FLUSH_INTERVAL = 2.0  # seconds between saves of the text so far
WATCH_INTERVAL = 0.1  # how often a running reply checks for stop requests
BEAT_INTERVAL = 1.0  # seconds between a reply's heartbeats (the sweepers allow the stall timeout)
STATUS_FOR = {
    "stop": Message.Status.COMPLETE,
    "length": Message.Status.COMPLETE,
    "cancelled": Message.Status.CANCELLED,
    "error": Message.Status.FAILED,
}


@dataclass
class Job:
    """What the web side puts on the ``inference`` channel: ids, options (the conversation's
    merged with the request's) and, when the web side read them in the trip to the database
    that saved the turn and they are short (``JOB_TURNS_MAX_CHARS``), the turns to answer.

    With the turns, the worker starts the model at once and checks its claim and that the
    reply still streams while the model reads the prompt, not before: a trip to the database
    thread (several round trips on PostgreSQL) leaves every first token's path. Without them
    (a long conversation, a job from an older web process) it reads them itself first.
    """

    conversation: str
    message: str
    options: dict[str, Any]
    turns: list[dict[str, str]] | None = None
    request_id: str = field(default_factory=logs.request_id.get)
    model: str = ""  # the registry's name; "" (a job from an older web process): the default
    blind: bool = False  # an arena's reply: no frame of it may name its model before the vote

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Job:
        return cls(
            conversation=str(uuid.UUID(str(message["conversation"]))),
            message=str(uuid.UUID(str(message["message"]))),
            options=dict(message.get("options") or {}),
            turns=_job_turns(message.get("turns")),
            model=str(message.get("model") or "")[:200],
            blind=message.get("blind") is True,
            request_id=logs.new_request_id(message.get("request_id")),
        )

    def as_message(self) -> dict[str, Any]:
        message = {
            "type": "inference.generate",
            "conversation": self.conversation,
            "message": self.message,
            "options": self.options,
            "request_id": self.request_id,
        }
        if self.turns is not None:
            message["turns"] = self.turns
        if self.model:
            message["model"] = self.model
        if self.blind:
            message["blind"] = True
        return message


JOB_TURNS_MAX_CHARS = 64_000  # longer contexts stay out of the job queue; the worker reads them
TURN_ROLES = {"system", "user", "assistant"}


def _job_turns(value: Any) -> list[dict[str, str]] | None:
    """A job's turns if well-formed; otherwise None, and the worker reads them from the
    database (which has them anyway): a bad field must not lose the reply."""
    if value is None:
        return None
    try:
        turns = [{"role": t["role"], "content": t["content"]} for t in value]
        ok = (
            all(t["role"] in TURN_ROLES and isinstance(t["content"], str) for t in turns)
            and sum(len(t["content"]) for t in turns) <= JOB_TURNS_MAX_CHARS
        )
    except (TypeError, KeyError):
        ok = False
    if not ok:
        logger.warning("ignoring malformed turns of an inference job: %.200r", value)
        return None
    return turns


def end_frames(
    conversation: str, message: str, result: Result, *, error_code: str | None = None
) -> list[dict[str, Any]]:
    """The group events that close a reply: an ``error`` first when it failed, then stream.end."""
    frames: list[dict[str, Any]] = []
    if result.finish_reason == "error":
        frames.append(
            error_frame(
                error_code or result.error_code or "internal",
                result.error or "the reply failed",
            )
        )
    tps = result.tokens_per_second
    frames.append(
        {
            "type": "stream.end",
            "conversation": conversation,
            "message": message,
            "finish_reason": result.finish_reason,
            "usage": {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
            },
            "timings": {
                "ttft_ms": round(result.ttft_ms, 2) if result.ttft_ms is not None else None,
                "tokens_per_second": round(tps, 2) if tps is not None else None,
            },
        }
    )
    return frames


async def quietly(awaitable: Awaitable[T]) -> T | None:
    """Await a shared-state or layer call; if Redis is away, log it and carry on (None).

    The database holds the reply itself, so a broker outage must not end a generation."""
    try:
        return await awaitable
    except Exception as exc:
        logger.warning("channel layer/cache unavailable: %s", exc)
        return None


async def publish(layer: Any, conversation: str, frames: list[dict[str, Any]]) -> None:
    group = streams.conversation_group(conversation)
    for frame in frames:
        await layer.group_send(group, {**frame, "conversation": conversation})


async def save(write: Callable[..., T], **fields: Any) -> T:
    """A reply's database write, tried once more if its connection was cut (a database
    restart or failover): the generation goes on regardless, and a reply the model finished
    must not end as failed for that. channels closes the broken connection before the retry
    (``close_old_connections``), so it runs on a fresh one. Both writes only touch a reply
    still streaming, so running one twice is harmless."""
    try:
        return await database_sync_to_async(write)(**fields)
    except (OperationalError, InterfaceError) as exc:
        logger.warning("database connection lost during %s (%s); retrying", write.__name__, exc)
        return await database_sync_to_async(write)(**fields)


@database_sync_to_async
def _load(job: Job) -> tuple[list[dict[str, str]], dict[str, Any]] | None:
    """A streaming reply's turns and its conversation's options; None once it has ended."""
    message = (
        Message.objects.select_related("conversation")
        .filter(pk=job.message, status=Message.Status.STREAMING)
        .first()
    )
    if message is None:
        return None
    return selectors.context_turns(message=message) or [], dict(message.conversation.options)


def _still_streaming(message_id: str) -> bool:
    return Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).exists()


async def _verify(job: Job) -> bool:
    """Whether this worker answers the job: it claimed it, and the reply still streams (not
    stopped or swept while queued)."""
    claimed, streaming = await asyncio.gather(
        streams.claim(job.message), database_sync_to_async(_still_streaming)(job.message)
    )
    return _answers(job, claimed=claimed, streaming=streaming)


def _answers(job: Job, *, claimed: bool, streaming: bool) -> bool:
    """Whether this worker answers the job, said in the log either way."""
    if not claimed:
        logger.info("reply %s: already taken by another worker", job.message)
    elif not streaming:
        logger.info("reply %s: ended before it started", job.message)
    else:
        logger.info("reply %s: generating", job.message)
    return claimed and streaming


async def run_reply(job: Job, *, layer: Any) -> None:
    """Generate one reply end to end. Never raises: every path ends the reply."""
    logs.request_id.set(job.request_id)  # this task's context: every log line of the reply
    try:
        await _run_reply(job, layer=layer)
    except Exception:
        logger.exception("reply %s failed unexpectedly", job.message)
        result = Result(finish_reason="error", error_code="internal", error="internal error")
        await finish(
            job, layer=layer, text=await quietly(streams.get_text(job.message)) or "", result=result
        )


async def _run_reply(job: Job, *, layer: Any) -> None:
    verified: asyncio.Future[bool] | None = None
    if job.turns is not None:
        # The model starts now; the claim and the status are checked meanwhile, and the
        # first word waits for them (they are back long before the prompt is read).
        reading: tuple[list[dict[str, str]], dict[str, Any]] | None = (job.turns, {})
        verified = asyncio.ensure_future(_verify(job))
    else:
        # The claim (Redis) and the reading (database) at once: both are on the first
        # token's path, and reading a reply another worker took changes nothing.
        claimed, reading = await asyncio.gather(streams.claim(job.message), _load(job))
        if not _answers(job, claimed=claimed, streaming=reading is not None) or reading is None:
            return  # another worker's, or already ended (stopped while queued, or swept)
    # Queued from here (the worker accepted the job) until the inference thread starts on it,
    # then an active stream until the generation ends; every way out clears both.
    try:
        with metrics.ReplyTracker() as tracker:
            await _generate(job, reading, layer=layer, tracker=tracker, verified=verified)
    finally:  # left by an exception before the checks were awaited: end them, quietly
        if verified is not None and not verified.cancel() and not verified.cancelled():
            verified.exception()  # done: its outcome (or error) no longer matters


async def _generate(
    job: Job,
    reading: tuple[list[dict[str, str]], dict[str, Any]],
    *,
    layer: Any,
    tracker: metrics.ReplyTracker,
    verified: asyncio.Future[bool] | None = None,
) -> None:
    turns, conversation_options = reading  # the watcher beats from below
    spec = registry.get(job.model or registry.default_name())
    if spec is None:  # another release's name for the one model, or a provider's not listed
        spec = await asyncio.to_thread(registry.serving, job.model)
    try:
        if spec is None:
            raise registry.BackendError(f"the model {job.model!r} is no longer served here")
        backend = registry.backend(spec.name)
        options = parse_options(
            {**spec.options, **conversation_options, **job.options},  # the model's under
            max_new_tokens_limit=settings.STELLARCHAT_MAX_NEW_TOKENS,
        )
    except (OptionError, registry.BackendError) as exc:
        if verified is None or await verified:  # not another worker's, nor ended
            code = "invalid_option" if isinstance(exc, OptionError) else "inference_unavailable"
            result = Result(finish_reason="error", error_code=code, error=str(exc))
            await finish(job, layer=layer, text="", result=result)
        return
    if spec.system_prompt and not (turns and turns[0].get("role") == "system"):
        turns = [{"role": "system", "content": spec.system_prompt}, *turns]  # the model's own

    cancel = threading.Event()
    state = _ReplyState(job=job, layer=layer)
    started = threading.Event()
    _running[job.message] = (cancel, state)

    def on_start() -> None:  # on the inference thread
        started.set()
        tracker.started()

    stall = max(
        float(settings.STELLARCHAT_STREAM_TIMEOUT), float(getattr(backend, "stall_timeout", 0))
    )

    def loaded() -> bool:
        return bool(getattr(backend, "ready", True))

    if verified is not None:  # not this worker's after all: its model stops at once

        def unless_ours(checks: asyncio.Future[bool]) -> None:
            if not checks.cancelled() and checks.exception() is None and not checks.result():
                cancel.set()

        verified.add_done_callback(unless_ours)
    watcher = asyncio.create_task(_watch(job, cancel, started, state, stall=stall, loaded=loaded))
    result: Result | None = None
    try:
        stream = runner.astream(backend, turns, options, cancel, on_start=on_start)
        async with contextlib.aclosing(stream) as items:
            async for item in items:
                if verified is not None:  # once, before anything is published
                    answers, verified = await verified, None
                    if not answers:  # another worker's, or ended while queued: stop quietly
                        cancel.set()
                        return
                if isinstance(item, Result):
                    result = item
                else:
                    state.add(item)
    finally:
        watcher.cancel()
        tracker.done()
        _running.pop(job.message, None)
    await beating(job.message, state.drain())
    if result is None:  # pragma: no cover - the runner always ends with a Result
        result = Result(finish_reason="error", error_code="internal", error="no result")
    if state.shed:
        result = Result(
            finish_reason="error",
            error_code="inference_unavailable",
            error=f"the server is busy: this reply waited {stall:g} s for the model without "
            "starting; please try again in a moment",
        )
    elif state.interrupted:
        result = _unavailable(
            result, "the server restarted before this reply finished; the reply so far is kept"
        )
    elif state.stalled:
        result = _unavailable(result, f"the model made no progress for {stall:g} s")
    await finish(job, layer=layer, text=state.text, result=result)


def _unavailable(result: Result, error: str) -> Result:
    """``result`` ended as ``inference_unavailable`` with ``error``, its counts kept."""
    return dataclasses.replace(
        result, finish_reason="error", error_code="inference_unavailable", error=error
    )


# This process's replies being generated: message id -> (their model's stop signal, state).
_running: dict[str, tuple[threading.Event, _ReplyState]] = {}


def running() -> int:
    """How many replies this process is generating (a draining worker waits for them)."""
    return len(_running)


def interrupt_all() -> int:
    """End every reply this process generates now, each with its text so far and an error
    saying the server restarted (a worker past its drain time); return how many."""
    for cancel, state in list(_running.values()):
        state.interrupted = True
        cancel.set()
    return len(_running)


def flush_interval() -> float:
    """Seconds between a reply's deltas. Every delta costs the event loop the same (a group
    send, a WebSocket frame) whatever its size, and with many replies at once that work starves
    generation (one process, one GIL): 16 replies at 33 deltas/s kept the embedded process's
    loop at 100% of a core. So busy processes send fewer, larger deltas: the same text, in
    3 or so tokens a frame instead of 1, still many frames a second."""
    busy = metrics.replies_in_progress()
    return min(MAX_FLUSH_INTERVAL, FLUSH_INTERVAL * max(1.0, busy / FLUSH_SHARE))


class _ReplyState:
    """Coalesces deltas: the first goes out at once, then at most one every ``interval()``."""

    def __init__(self, *, job: Job, layer: Any) -> None:
        self.job = job
        self.layer = layer
        self.text = ""
        self.pending = ""
        self.last_flush = 0.0
        self.last_db = time.monotonic()
        self.last_progress = time.monotonic()
        self.stalled = False
        self.shed = False  # waited too long for a place in the batch: ended as busy
        self.interrupted = False  # its process stopped past its drain time: ended, text kept
        self._timer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._ended = asyncio.Event()  # set by drain: a waiting flush goes out at once
        self._saving: asyncio.Task[Any] | None = None  # the periodic save of the text so far
        self.followers = 1  # sockets following the conversation: counted after the first
        self.counted = float("-inf")  # delta (which goes out at once), then now and then

    def interval(self) -> float:
        """Seconds between this reply's deltas: ``flush_interval()``, longer in proportion
        when more than ``FOLLOWERS_SHARE`` sockets follow it, since each delta costs the web
        process a frame to every one of them (one account's 28 sockets on one conversation
        took a fifth of its event loop while 3 replies streamed to them). A person's few
        tabs see no change; a crowd of sockets gets the same text in fewer, larger frames."""
        crowd = max(1.0, self.followers / FOLLOWERS_SHARE)
        return min(MAX_FLUSH_INTERVAL, flush_interval() * crowd)

    def add(self, delta: str) -> None:
        self.pending += delta
        self.last_progress = time.monotonic()
        if self._timer is None or self._timer.done():
            wait = max(0.0, self.last_flush + self.interval() - time.monotonic())
            self._timer = asyncio.create_task(self._flush_after(wait))

    async def _flush_after(self, wait: float) -> None:
        if wait and not self._ended.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), wait)
        await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            if not self.pending:
                return
            chunk, self.pending = self.pending, ""
            offset = len(self.text)
            self.text += chunk
            self.last_flush = time.monotonic()
            # The delta first, then the state: a socket that finds a gap before this delta
            # reads the state for it, and that part was stored by an earlier flush, which
            # finished (state included) before this one began. The state's write is not on the
            # delta's way: with Redis it is a trip from a thread of its own, and started at
            # the same time it competed with the delta for the worker's CPU and its one GIL
            # (the first token's last step took 1.7 ms at p50, 4.8 at p95, for ~0.9 alone).
            # With the layer (Redis) away, generation goes on; the text is kept and saved.
            await quietly(
                self.layer.group_send(
                    streams.conversation_group(self.job.conversation),
                    streams.delta_frame(self.job.conversation, self.job.message, offset, chunk),
                )
            )
            await quietly(streams.set_text(self.job.message, self.text))
            if self.last_flush - self.counted >= FOLLOWERS_EVERY:
                self.counted = self.last_flush
                group = streams.conversation_group(self.job.conversation)
                followers = await quietly(layers.group_size(self.layer, group))
                if followers is not None:
                    self.followers = followers
            if time.monotonic() - self.last_db >= DB_FLUSH_INTERVAL and (
                self._saving is None or self._saving.done()
            ):
                # Off the delta path: in the embedded default every database call of the
                # process shares one thread, and the next delta must not queue behind it.
                self.last_db = time.monotonic()
                self._saving = asyncio.create_task(
                    save(services.reply_flush, message_id=self.job.message, content=self.text)
                )

    async def drain(self) -> None:
        """Publish what is left. A flush in progress is awaited, never cancelled: cancelling
        it between taking a chunk and publishing it would lose that chunk. One still waiting
        for its turn goes at once: the reply's last words do not wait out the interval."""
        self._ended.set()
        if self._timer is not None:
            await self._timer
        await self.flush()
        if self._saving is not None:  # before the final save (though it could not undo it:
            try:  # it only touches a reply still streaming)
                await self._saving
            except Exception as exc:  # the final save writes the whole text anyway
                logger.warning("reply %s: periodic save failed: %s", self.job.message, exc)


async def _watch(
    job: Job,
    cancel: threading.Event,
    started: threading.Event,
    state: _ReplyState,
    *,
    stall: float,
    loaded: Callable[[], bool] = lambda: True,
) -> None:
    """Heartbeat, stop requests and stall detection for one reply, off the token path. A
    reply that waits for a free place in the batch longer than the stall timeout ends too
    (``state.shed``): under overload a bounded wait and a clear "busy" beat a queue that only
    grows, where everyone waits minutes. Waiting for the model to load is not that: the clock
    starts once it is loaded."""
    timeout = stall
    last_beat = 0.0
    queued_since = time.monotonic()
    while not cancel.is_set():
        now = time.monotonic()
        if now - last_beat >= BEAT_INTERVAL:
            await quietly(streams.beat(job.message))
            last_beat = now
        if await quietly(streams.cancel_requested(job.message)):
            cancel.set()
            return
        if not started.is_set():
            state.last_progress = now  # queued behind other replies: not stalled...
            if not loaded():
                queued_since = now
            elif now - queued_since > timeout:  # ...but not forever
                logger.warning("reply %s queued for %s s; the server is busy", job.message, timeout)
                state.shed = True
                cancel.set()
                return
        elif now - state.last_progress > timeout:
            logger.warning("reply %s stalled for %s s; ending it", job.message, timeout)
            state.stalled = True
            cancel.set()
            return
        await asyncio.sleep(WATCH_INTERVAL)


async def beating(message_id: str, work: Awaitable[T]) -> T:
    """Await ``work`` (a reply's last saves) while its heartbeat goes on: the reply is still
    this process's, and a database slow to hand out a connection (cut connections being
    replaced, up to the pool's timeout) must not look like a dead worker to the sweepers."""

    async def beat_every_second() -> None:
        while True:
            await asyncio.sleep(BEAT_INTERVAL)
            await quietly(streams.beat(message_id))

    beats = asyncio.create_task(beat_every_second())
    try:
        return await work
    finally:
        beats.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beats


BLIND_ERROR = "this model failed to answer; the reply so far is kept"


async def finish(job: Job, *, layer: Any, text: str, result: Result) -> None:
    """Save the final state; if this call ended the reply, tell every subscribed socket."""
    status = STATUS_FOR[result.finish_reason]
    if job.blind and result.error:  # its detail may name the model (or its server)
        result = dataclasses.replace(result, error=BLIND_ERROR)
    won = await beating(
        job.message,
        save(
            services.reply_finish,
            message_id=job.message,
            content=text,
            status=status,
            prompt_tokens=result.prompt_tokens or None,
            completion_tokens=result.completion_tokens,
            ttft_ms=result.ttft_ms,
            tokens_per_second=result.tokens_per_second,
        ),
    )
    await quietly(streams.clear(job.message))
    if not won:
        return
    logger.info(
        "reply %s: %s, %d tokens", job.message, result.finish_reason, result.completion_tokens
    )
    metrics.reply_finished(result)  # only the call that ended the reply counts it
    frames = end_frames(job.conversation, job.message, result)
    # For sockets only: how long the saved reply is, so one that lost a delta (a full channel
    # drops group messages) notices at the end and catches up from the database.
    frames[-1]["length"] = len(text)
    await quietly(publish(layer, job.conversation, frames))
    if status == Message.Status.COMPLETE:
        titled = await database_sync_to_async(services.conversation_autotitle)(
            conversation_id=job.conversation
        )
        if titled is not None:
            await announce_title(layer, job.conversation, *titled)


async def announce_title(layer: Any, conversation: str, title: str, owner_id: int) -> None:
    frame = {"type": "conversation.updated", "conversation": conversation, "title": title}
    await layer.group_send(streams.conversation_group(conversation), frame)
    await layer.group_send(streams.user_group(owner_id), frame)


# --- the sweeper ----------------------------------------------------------------------------


@database_sync_to_async
def _streaming_rows() -> list[dict[str, Any]]:
    return list(
        Message.objects.filter(status=Message.Status.STREAMING).values(
            "id", "conversation_id", "created_at", "content", "model_name", "blind"
        )
    )


# Per process: streaming replies without any heartbeat, and when this sweeper first saw that.
_unbeaten: dict[str, float] = {}


async def sweep(layer: Any, *, now: float | None = None) -> int:
    """End replies whose worker went silent for STELLARCHAT_STREAM_TIMEOUT; return how many."""
    timeout = settings.STELLARCHAT_STREAM_TIMEOUT
    now = time.time() if now is None else now
    ended = 0
    rows = await _streaming_rows()
    for gone in _unbeaten.keys() - {str(row["id"]) for row in rows}:
        del _unbeaten[gone]
    for row in rows:
        last = await streams.last_beat(row["id"])
        if last is None:
            # No heartbeat at all: Redis restarted empty (or this process did, embedded). A
            # live worker beats again within a second, so the silence counts from now, not
            # from the reply's start: a long reply is not ended under a working worker.
            last = max(row["created_at"].timestamp(), _unbeaten.setdefault(str(row["id"]), now))
        else:
            _unbeaten.pop(str(row["id"]), None)
        if now - last <= timeout:
            continue
        text = await streams.get_text(row["id"])
        job = Job(
            conversation=str(row["conversation_id"]),
            message=str(row["id"]),
            options={},
            blind=row["blind"],
        )
        # Never taken by a worker: the workers are too busy (or there is none); taken, then
        # silent: its worker died or hung. Either way the person is told which, and can retry.
        started = text is not None or bool(row["content"]) or await streams.claimed(row["id"])
        result = Result(
            finish_reason="error",
            error_code="inference_unavailable",
            error=(
                "the inference worker stopped answering; the reply so far is kept"
                if started
                else f"no inference worker took this reply within {timeout:g} s (the server is "
                f"busy or no worker serving the model {row['model_name']!r} is running); "
                "please try again"
            ),
        )
        await finish(
            job, layer=layer, text=text if text is not None else row["content"], result=result
        )
        ended += 1
    return ended


async def sweep_forever(layer: Any, *, interval: float = 2.0) -> None:
    while True:
        try:
            ended = await sweep(layer)
            if ended:
                logger.warning("ended %d stalled replies", ended)
        except Exception:
            logger.exception("sweep failed")
        await asyncio.sleep(interval)
