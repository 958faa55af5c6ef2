"""The transformers backend, run in a model process of its own (the default).

``ModelProcessBackend`` has the same face as ``TransformersBackend`` (``astream``/``stream``,
``load``, ``ready``) but holds no model: it starts ``python -m inference.model_process`` on
first use and relays requests and events over the child's pipes. So the process that serves
sockets never imports torch, its event loop never competes with decode steps for the GIL, and
a model crash (or an out-of-memory kill) costs the replies in flight, not the server: they end
with ``inference_unavailable`` and the next request starts a new model process.

One I/O thread per child reads its frames and hands each reply's events to its event loop (one
wake-up per decode step, through ``runner.Inbox``), and turns cancel signals set anywhere into
``cancel`` messages (polled every 20 ms while replies are in flight).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from inference.backends.base import (
    Backend,
    BackendError,
    CallbackStreams,
    Result,
    StreamItem,
    Turn,
    validate_turns,
)
from inference.model_process import encode_frame, write_all
from inference.options import GenerationOptions

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
CANCEL_POLL = 0.02  # seconds between checks of in-flight replies' cancel signals
IDLE_POLL = 0.5
RESTART_AFTER = 30.0  # a model process that died before its model loaded is not restarted
# for this long (a crash at load would otherwise be retried, and paid for, by every message)


@dataclass
class _Pending:
    emit: Callable[[StreamItem], None]
    on_start: Callable[[], None] | None
    cancel: threading.Event
    cancel_sent: bool = False


MMAP_THRESHOLD = 4 * 1024 * 1024


def child_environment() -> dict[str, str]:
    """The parent's environment, so the child reads the same settings; the project on its
    path; no Prometheus multiprocess files of its own (the parent reports the model's load).

    And glibc's malloc told to map every block of ``MMAP_THRESHOLD`` or more on its own
    (an operator's own ``MALLOC_MMAP_THRESHOLD_`` wins): the batch's KV buffers (tens of MB,
    replaced as the batch grows and shrinks) then go back to the system when freed. By
    default glibc raises that threshold to the largest block freed (up to 32 MB), after
    which such buffers came from its arenas, which kept every high-water mark: an hour of
    chat grew the model process by hundreds of MB while its live cache stayed under 200."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))
    paths = [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


class PipeWriter:
    """Writes frames into a child's stdin without ever making its caller wait on a full pipe
    (neither the event loop nor the reading thread may: a reader stuck writing could
    deadlock both ends).

    A frame goes straight into the pipe when all of it fits and nothing is waiting before it;
    otherwise (what is left of) it goes to a thread of its own that waits for room, and later
    frames queue behind it, so the child reads them in order. Straight in matters: a job then
    reaches the model without waking that thread, which queued for the GIL behind the worker's
    event loop (1.35 ms at p50, 3.2 at p95, on every first token's way; 0.4 / 1.0 now).
    ``stop`` (or the child gone) closes the pipe once what was queued before it is written."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.pipe = pipe
        self.fd = pipe.fileno()
        os.set_blocking(self.fd, False)
        self.lock = threading.Lock()  # backlog, closed, and the order of the pipe's bytes
        self.backlog = 0  # frames handed to the thread, not yet all written
        self.closed = False  # once closed, the fd's number may be another file's: never write
        self.queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def start(self, name: str) -> None:
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def send(self, data: bytes) -> None:
        with self.lock:
            if self.closed:
                return  # the child is gone: its replies end (or ended) with the reading thread
            written = 0
            if not self.backlog:
                # Full: the thread waits for room. Gone: the thread meets it too, and closes.
                with contextlib.suppress(OSError):
                    written = os.write(self.fd, data)
            if written < len(data):
                self.backlog += 1
                self.queue.put(data[written:])

    def stop(self) -> None:
        self.queue.put(None)

    def _run(self) -> None:
        try:
            while (data := self.queue.get()) is not None:
                write_all(self.fd, data)
                with self.lock:
                    self.backlog -= 1
        except (OSError, ValueError):  # the child is gone: the reading thread ends its replies
            pass
        finally:
            with self.lock:
                self.closed = True
                self.pipe.close()  # (to a live child: "your parent is done", and it exits)


class _Child:
    """One model process and its I/O thread."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "inference.model_process", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_environment(),
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.out_fd = self.proc.stdout.fileno()
        self.ids = itertools.count(1)
        self.lock = threading.Lock()  # requests, state
        self.writer = PipeWriter(self.proc.stdin)
        self.requests: dict[int, _Pending] = {}
        self.ready = False
        self.was_ready = False  # its model loaded at some point
        self.dead = False
        self.died_at = 0.0
        self.death = ""  # why it ended, for the replies it takes along
        self.loaded = threading.Event()  # set when the load succeeded, failed, or it died
        self.load_error: BackendError | None = None
        self.load_seconds: float | None = None
        self.last_active = time.monotonic()  # a request came or ended (keep_alive)
        name = f"model-process-{self.proc.pid}"
        threading.Thread(target=self._io, name=name, daemon=True).start()
        self.writer.start(name=f"{name}-writer")
        self.send(("load",))
        logger.info("started model process %d", self.proc.pid)

    def send(self, message: Any) -> None:
        self.writer.send(encode_frame(message))

    def submit(
        self,
        turns: Sequence[Turn],
        options: GenerationOptions,
        cancel: threading.Event,
        emit: Callable[[StreamItem], None],
        on_start: Callable[[], None] | None,
    ) -> None:
        rid = next(self.ids)
        with self.lock:
            if self.dead:
                emit(self.death_result())
                return
            self.requests[rid] = _Pending(emit, on_start, cancel)
            self.last_active = time.monotonic()
        self.send(("generate", rid, [dict(t) for t in turns], options))

    def death_result(self) -> Result:
        return Result(finish_reason="error", error_code="inference_unavailable", error=self.death)

    # --- the I/O thread --------------------------------------------------------------------

    def _io(self) -> None:
        from inference.model_process import FrameReader

        reader = FrameReader()
        try:
            while True:
                with self.lock:
                    busy = bool(self.requests)
                ready, _, _ = select.select(
                    [self.out_fd], [], [], CANCEL_POLL if busy else IDLE_POLL
                )
                if ready:
                    data = os.read(self.out_fd, 1 << 16)
                    if not data:
                        break
                    for events in reader.feed(data):
                        self._dispatch(events)
                if busy:
                    self._send_cancels()
        except Exception:  # a broken frame: this child cannot be trusted any more
            logger.exception("model process %d: reading its output failed", self.proc.pid)
            self.proc.kill()
        self._died()

    def _dispatch(self, events: list[tuple[int, str, Any]]) -> None:
        for rid, kind, payload in events:
            if rid == 0:
                self._process_event(kind, payload)
                continue
            with self.lock:
                pending = self.requests.pop(rid) if kind == "r" else self.requests.get(rid)
                self.last_active = time.monotonic()
            if pending is None:
                continue
            if kind == "d" or kind == "r":
                pending.emit(payload)
            elif kind == "s" and pending.on_start is not None:
                pending.on_start()

    def _process_event(self, kind: str, payload: Any) -> None:
        if kind == "loaded":
            from stellarchat import metrics

            self.load_seconds = float(payload)
            self.load_error = None
            self.ready = self.was_ready = True
            metrics.model_loaded(self.load_seconds)
        elif kind == "load_failed":
            code, message = payload
            self.load_error = BackendError(message, code=code)
        self.loaded.set()

    def _send_cancels(self) -> None:
        with self.lock:
            due = [(rid, p) for rid, p in self.requests.items() if p.cancel.is_set()]
        for rid, pending in due:
            if not pending.cancel_sent:
                pending.cancel_sent = True
                self.send(("cancel", rid))

    def _died(self) -> None:
        code = self.proc.wait()
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        with self.lock:
            self.dead = True
            self.ready = False
            self.died_at = time.monotonic()
            self.death = (
                f"the model process stopped ({how}); the reply so far is kept, please try again"
                if self.was_ready
                else f"the model process stopped while loading the model ({how}); see the "
                "server log"
            )
            orphans, self.requests = list(self.requests.values()), {}
        log = logger.info if code == 0 else logger.error
        log("model process %d ended (%s), %d replies in flight", self.proc.pid, how, len(orphans))
        for pending in orphans:
            pending.emit(self.death_result())
        if self.load_error is None and not self.ready and not self.loaded.is_set():
            self.load_error = BackendError(self.death)
        self.loaded.set()
        self.writer.stop()
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def stop(self) -> None:
        """Close its stdin (it exits on its own) and wait a moment for it."""
        self.writer.stop()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class ModelProcessBackend(CallbackStreams):
    """Streams replies from a local (or hub) causal LM loaded in a child process."""

    name = "transformers"
    reports_start = True  # on_start is called when a request joins the batch

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        trust_remote_code: bool | None = None,
        max_batch: int | None = None,
        keep_alive: int = 0,
    ) -> None:
        from django.conf import settings

        ref = model or settings.STELLARCHAT_MODEL
        if os.path.isdir(ref):  # the child may resolve relative paths from elsewhere
            ref = os.path.abspath(ref)
        self.model_ref = ref
        self.config: dict[str, Any] = {
            "model": ref,
            "device": device or settings.STELLARCHAT_DEVICE,
            "dtype": dtype or settings.STELLARCHAT_DTYPE,
            "trust_remote_code": settings.STELLARCHAT_TRUST_REMOTE_CODE
            if trust_remote_code is None
            else trust_remote_code,
            "max_batch": settings.STELLARCHAT_MAX_BATCH if max_batch is None else max_batch,
        }
        # Held while a request registers with the child, so an idle child is never retired
        # (keep_alive) between a request picking it and registering with it.
        self._lock = threading.RLock()
        self._child: _Child | None = None
        self.keep_alive = max(0, int(keep_alive))  # seconds idle before the child exits
        if self.keep_alive:
            threading.Thread(target=self._retire_when_idle, daemon=True).start()

    @property
    def ready(self) -> bool:
        child = self._child
        return child is not None and child.ready and not child.dead

    @property
    def display_name(self) -> str:
        from inference.backends.hf import display_name

        return display_name(self.model_ref)

    @property
    def pid(self) -> int | None:
        """The model process's pid, while one runs."""
        child = self._child
        return None if child is None or child.dead else child.proc.pid

    def _running_child(self) -> _Child:
        with self._lock:
            child = self._child
            if child is None or child.dead:
                if (
                    child is not None
                    and not child.was_ready
                    and time.monotonic() - child.died_at < RESTART_AFTER
                ):
                    raise BackendError(child.death)
                self._child = child = _Child(self.config)
            return child

    def load(self) -> None:
        """Start the model process if needed and wait until its model is loaded (blocking)."""
        child = self._running_child()
        child.loaded.wait()
        if child.load_error is not None and not child.ready:
            error = child.load_error
            if not child.dead:  # let a later call try again (the child remembers it briefly)
                child.loaded.clear()
                child.load_error = None
                child.send(("load",))
            raise error

    def close(self) -> None:
        """Stop the model process (tests, shutdown); the next request starts a new one."""
        with self._lock:
            child, self._child = self._child, None
        if child is not None:
            child.stop()

    def _submit(
        self,
        turns: Sequence[Turn],
        options: GenerationOptions,
        cancel: threading.Event,
        emit: Callable[[StreamItem], None],
        *,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        try:
            validate_turns(turns)
            with self._lock:
                child = self._running_child()
                child.submit(turns, options, cancel, emit, on_start)
        except BackendError as exc:
            emit(Result(finish_reason="error", error_code=exc.code, error=str(exc)))

    def _retire_when_idle(self) -> None:
        """``keep_alive``: a model process without a reply for that long exits and gives its
        memory (the model, its cache) back; the next request starts a new one. Its thread
        lives as long as this backend (one per model and process)."""
        every = min(5.0, max(0.2, self.keep_alive / 4))
        while True:
            time.sleep(every)
            with self._lock:
                child = self._child
                if child is None or child.dead or not child.ready:
                    continue
                with child.lock:
                    idle = time.monotonic() - child.last_active
                    if child.requests or idle < self.keep_alive:
                        continue
                self._child = None
            logger.info(
                "model %s idle for %.0f s (keep_alive): its model process %d exits",
                self.display_name,
                idle,
                child.proc.pid,
            )
            child.stop()


def transformers_backend(**kwargs: Any) -> Backend:
    """The "transformers" backend: in a model process (STELLARCHAT_MODEL_PROCESS, the default)
    or on a thread of this process."""
    from django.conf import settings

    if settings.STELLARCHAT_MODEL_PROCESS:
        return ModelProcessBackend(**kwargs)
    from inference.backends.hf import TransformersBackend

    if kwargs.pop("keep_alive", 0):  # a model on a thread lives as long as its process
        logger.warning("keep_alive needs the model in a process of its own; ignored")
    return TransformersBackend(**kwargs)
