"""The model process: the transformers backend's batch scheduler in a process of its own.

A web process (embedded default) or an inference worker starts one of these children with
``python -m inference.model_process CONFIG`` and talks to it over its stdin/stdout
(``inference.backends.process``). Why a process and not a thread: a decode step of a small
model is mostly Python (module calls, sampling, detokenizing), so on a thread it fights the
event loop of its host for the one GIL, and with many conversations at once both starve
(measured: the web process's loop at 100% of a core, the inference thread at half of the
other). Here the model has an interpreter to itself; a crash of torch (or an out-of-memory
kill) ends this process, not the web server.

The wire: frames of a 4-byte big-endian length and a pickle, both ways (the two ends are the
same code, started by each other; nothing else can write to these pipes).

- parent -> child: ``("load",)``, ``("generate", id, turns, options)``, ``("cancel", id)``;
- child -> parent: one frame per decode step, a list of ``(id, kind, payload)`` events: ``"s"``
  the request joined the batch, ``"d"`` a text delta, ``"r"`` its ``Result`` (the last event of
  a request); id 0 carries ``"loaded"`` (load seconds) and ``"load_failed"`` (code, message).

The child ends when its stdin closes: its parent is gone (exited, or killed with SIGKILL).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import pickle
import select
import signal
import struct
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)

HEADER = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024  # a frame claiming more than this is a broken pipe, not data


def encode_frame(message: Any) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(payload)) + payload


def write_frame(fd: int, message: Any) -> None:
    """Write one frame, all of it (the pipe may take it in pieces)."""
    write_all(fd, encode_frame(message))


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``, waiting for room whenever the pipe is full (``fd`` may be
    non-blocking: the parent's end is)."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[written:]


class FrameReader:
    """Splits bytes read from a pipe into messages."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[Any]:
        self.buffer += data
        while len(self.buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self.buffer)
            if size > MAX_FRAME:
                raise ValueError(f"frame of {size} bytes: the pipe is out of step")
            end = HEADER.size + size
            if len(self.buffer) < end:
                return
            payload = bytes(self.buffer[HEADER.size : end])
            del self.buffer[:end]
            yield pickle.loads(payload)


def read_frames(fd: int) -> Iterator[Any]:
    """Every message from ``fd`` until it closes."""
    reader = FrameReader()
    while True:
        data = os.read(fd, 1 << 16)
        if not data:
            return
        yield from reader.feed(data)


MB = 1024 * 1024
MEMORY_LOG_SECONDS = 60.0


def rss_bytes() -> int:
    """This process's resident memory (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class Host:
    """Serves one TransformersBackend to the parent: requests in, one frame of events out per
    decode step (the scheduler's ``after_step``), so 16 replies' deltas cross in one write; a
    reply's first words go in a frame of their own, at once (its time to first token)."""

    def __init__(self, out_fd: int, config: dict[str, Any]) -> None:
        from inference.backends.hf import TransformersBackend

        self.out_fd = out_fd
        self.lock = threading.Lock()  # events and cancels
        self.write_lock = threading.Lock()
        self.events: list[tuple[int, str, Any]] = []
        self.cancels: dict[int, threading.Event] = {}
        self.backend = TransformersBackend(**config, after_step=self.flush)

    def post(self, rid: int, kind: str, payload: Any = None) -> None:
        with self.lock:
            self.events.append((rid, kind, payload))
            if kind == "r":
                self.cancels.pop(rid, None)

    def flush(self) -> None:
        with self.write_lock:
            with self.lock:
                events, self.events = self.events, []
            if not events:
                return
            try:
                write_frame(self.out_fd, events)
            except OSError:  # the parent is gone: nobody to generate for
                os._exit(0)

    def report_memory(self) -> None:
        """Every MEMORY_LOG_SECONDS, one log line: this process's RSS beside its KV cache
        (rows and live columns against the buffers' capacity), so a soak can tell memory
        that follows the cache (bounded by the batch and the context) from a leak."""
        while True:
            time.sleep(MEMORY_LOG_SECONDS)
            batcher = self.backend._batcher
            cache = getattr(batcher, "cache", None)
            stats = cache.stats() if hasattr(cache, "stats") else {}
            logger.info(
                "model memory: rss %.1f MB, kv cache %.1f MB (rows %d of %d, columns %d of %d), "
                "made ahead %.1f MB, waiting %d",
                rss_bytes() / MB,
                stats.get("bytes", 0) / MB,
                stats.get("rows", 0),
                stats.get("row_capacity", 0),
                stats.get("columns", 0),
                stats.get("column_capacity", 0),
                stats.get("ahead_bytes", 0) / MB,
                len(getattr(batcher, "waiting", ())) + len(getattr(batcher, "pending", ())),
            )

    def load(self) -> None:  # on the inference thread
        from inference.backends.base import BackendError

        try:
            loaded = self.backend.load()
        except BackendError as exc:
            self.post(0, "load_failed", (exc.code, str(exc)))
        else:
            self.first_reply()
            # The model, torch and transformers stay for the process's life: out of the
            # collector's sight, a full collection no longer pauses decoding for 100-200 ms.
            gc.freeze()
            self.post(0, "loaded", loaded.load_seconds)
            threading.Thread(target=self.report_memory, daemon=True).start()
        self.flush()

    def first_reply(self) -> None:  # on the inference thread
        """A reply of two tokens before the model says it is loaded: what the first reply
        pays once (the batch's cache buffers, made whole up to ``KEEP_SLOTS_BYTES``: ~200 ms
        for the bundled model's 455 MB on the CPU machine; the kernels' first calls) is paid
        here rather than by the first person."""
        from inference.options import GenerationOptions

        started = time.monotonic()
        options = GenerationOptions(temperature=0.0, max_new_tokens=2)
        try:
            for _ in self.backend.stream([{"role": "user", "content": "hi"}], options):
                pass
        except Exception:  # the model loaded; a reply that fails later says why
            logger.exception("the first reply at load failed")
            return
        logger.info("first reply at load: %.0f ms", (time.monotonic() - started) * 1000)

    def generate(self, rid: int, turns: Any, options: Any) -> None:
        from inference.backends.base import Result
        from inference.runner import submit_to_inference_thread

        cancel = threading.Event()
        with self.lock:
            self.cancels[rid] = cancel

        first = True

        def emit(item: Any) -> None:
            nonlocal first
            self.post(rid, "r" if isinstance(item, Result) else "d", item)
            if first:
                # A reply's first words cross now, not when the step ends: the rest of the
                # step (the batch's other rows, the cache's bookkeeping) is not their wait.
                first = False
                self.flush()

        def submit() -> None:
            self.backend._submit(
                turns, options, cancel, emit, on_start=lambda: self.post(rid, "s"), inline=False
            )
            self.flush()

        if self.backend.ready:
            submit()
        else:  # queued behind the load on the inference thread: this thread keeps reading
            submit_to_inference_thread(submit)

    def cancel(self, rid: int) -> None:
        with self.lock:
            event = self.cancels.get(rid)
        if event is not None:
            event.set()

    def serve(self, in_fd: int) -> None:
        from inference.runner import submit_to_inference_thread

        for message in read_frames(in_fd):
            op = message[0]
            if op == "generate":
                self.generate(*message[1:])
            elif op == "cancel":
                self.cancel(message[1])
            elif op == "load":
                submit_to_inference_thread(self.load)
            else:
                logger.error("model process: unknown message %.80r", op)


def main() -> None:
    # Frames own the real stdout; anything else printing (a library's progress bar) goes to
    # stderr with the logs instead of into the pipe.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # Ctrl-C in a terminal reaches the whole process group: the parent decides, and this
    # process ends when the parent closes its stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stellarchat.settings")
    import django

    django.setup()
    config = json.loads(sys.argv[1])
    host = Host(out_fd, config)
    try:
        host.serve(0)
    finally:
        # The parent closed our stdin (it exited or was killed): in-flight replies have no
        # one to go to. Leave at once, even mid-step.
        os._exit(0)


if __name__ == "__main__":
    main()
