"""Prometheus metrics: StellarChat's own, and the ``/metrics`` view that serves them together
with django-prometheus's HTTP and database metrics.

One process (the default): each process keeps its metrics in memory and reports only its own,
so every process is scraped on its own — web processes at ``/metrics``, ``runworker``
processes on ``STELLARCHAT_WORKER_METRICS_PORT`` (they serve no HTTP otherwise).

Several processes on one host: set ``PROMETHEUS_MULTIPROC_DIR`` to the same empty directory for
every process (web and workers) before they start. prometheus_client then keeps every metric
in a file per process there, and ``/metrics`` of any web process adds them all up. Counters and
histograms are summed; the "now" gauges use ``livesum`` (a process that exits cleanly drops its
share, see ``_forget_this_process``); the model load gauge shows the most recent load.

Web processes import this module, so it must never import torch or transformers.
"""

from __future__ import annotations

import atexit
import contextlib
import hmac
import logging
import os
import threading
from types import TracebackType
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)

logger = logging.getLogger(__name__)

FINISH_REASONS = ("stop", "length", "cancelled", "error")

GENERATIONS = Counter(
    "stellarchat_generations_total",
    "Replies that ended, by finish reason (stop, length, cancelled, error).",
    ["finish_reason"],
)
GENERATED_TOKENS = Counter(
    "stellarchat_generated_tokens_total", "Tokens generated in replies that ended."
)
TIME_TO_FIRST_TOKEN = Histogram(
    "stellarchat_time_to_first_token_seconds",
    "From the start of generation to the first token of a reply.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
TOKENS_PER_SECOND = Histogram(
    "stellarchat_tokens_per_second",
    "Decode speed of a reply after its first token.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
)
ACTIVE_STREAMS = Gauge(
    "stellarchat_active_streams",
    "Replies generating now.",
    multiprocess_mode="livesum",
)
QUEUE_DEPTH = Gauge(
    "stellarchat_inference_queue_depth",
    "Jobs a worker accepted that have not started generating yet.",
    multiprocess_mode="livesum",
)
WEBSOCKET_CONNECTIONS = Gauge(
    "stellarchat_websocket_connections",
    "Open (accepted) chat WebSocket connections.",
    multiprocess_mode="livesum",
)
WEBSOCKET_REFUSALS = Counter(
    "stellarchat_websocket_refusals_total",
    "What the chat socket's limits refused, by limit: frames (a frame over a socket's rate), "
    "frames_closed (a socket closed for staying over it), sockets (a person's socket past "
    "the most they may have open), handshakes (an address past its handshakes a minute), "
    "send_buffer (a socket closed for holding too much unsent data), connections_dropped (a "
    "TCP connection closed unread: its address kept handshaking while refused).",
    ["limit"],
)
MODEL_LOAD_SECONDS = Gauge(
    "stellarchat_model_load_seconds",
    "How long the most recent model load took, in seconds.",
    multiprocess_mode="mostrecent",
)

for _reason in FINISH_REASONS:  # every series exists from the start, at 0
    GENERATIONS.labels(finish_reason=_reason)


def multiprocess_enabled() -> bool:
    """prometheus_client's own test: the variable's presence when it was first imported."""
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


def registry() -> Any:
    """What a scrape reads: every process's files in multiprocess mode, else this process.

    Only the multiprocess collector goes into the fresh registry: the in-memory metrics are
    in the files already, and adding them again would export duplicates."""
    if not multiprocess_enabled():
        return REGISTRY
    fresh = CollectorRegistry()
    multiprocess.MultiProcessCollector(fresh)
    return fresh


def _forget_this_process() -> None:
    """A process that exits cleanly takes its live gauges (streams, sockets) with it."""
    if multiprocess_enabled():
        with contextlib.suppress(OSError):  # the directory was removed under us
            multiprocess.mark_process_dead(os.getpid())


atexit.register(_forget_this_process)


# --- hooks -----------------------------------------------------------------------------------


def reply_finished(result: Any) -> None:
    """Count a reply that ended (call once per reply: where ``finish`` won)."""
    GENERATIONS.labels(finish_reason=result.finish_reason).inc()
    if result.completion_tokens:
        GENERATED_TOKENS.inc(result.completion_tokens)
    if result.ttft_ms is not None:
        TIME_TO_FIRST_TOKEN.observe(result.ttft_ms / 1000.0)
    tps = result.tokens_per_second
    if tps is not None:
        TOKENS_PER_SECOND.observe(tps)


_in_progress = 0  # trackers of this process not done yet (queued or active)
_in_progress_lock = threading.Lock()


def replies_in_progress() -> int:
    """Replies this process has taken and not ended (what the flush interval scales with)."""
    return _in_progress


class ReplyTracker:
    """A reply's place in the queue and active-stream gauges: queued when created, active from
    ``started()`` (called on the inference thread), neither after ``done()``. Idempotent, so
    every path out of a reply can call ``done()``."""

    def __init__(self) -> None:
        global _in_progress
        self._lock = threading.Lock()
        self._state = "queued"
        QUEUE_DEPTH.inc()
        with _in_progress_lock:
            _in_progress += 1

    def started(self) -> None:
        with self._lock:
            if self._state != "queued":
                return  # already ended: the inference thread got to it too late
            self._state = "active"
            QUEUE_DEPTH.dec()
            ACTIVE_STREAMS.inc()

    def done(self) -> None:
        global _in_progress
        with self._lock:
            if self._state == "done":
                return
            if self._state == "queued":
                QUEUE_DEPTH.dec()
            else:
                ACTIVE_STREAMS.dec()
            self._state = "done"
        with _in_progress_lock:
            _in_progress -= 1

    def __enter__(self) -> ReplyTracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.done()


def websocket_opened() -> None:
    WEBSOCKET_CONNECTIONS.inc()


def websocket_closed() -> None:
    WEBSOCKET_CONNECTIONS.dec()


def websocket_refused(limit: str) -> None:
    WEBSOCKET_REFUSALS.labels(limit=limit).inc()


def model_loaded(seconds: float) -> None:
    MODEL_LOAD_SECONDS.set(seconds)


# --- exposition ------------------------------------------------------------------------------


def _authorized(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """``/metrics``: open unless ``STELLARCHAT_METRICS_TOKEN`` is set, then Bearer only."""
    token = settings.STELLARCHAT_METRICS_TOKEN
    if token and not _authorized(request.headers.get("Authorization", ""), token):
        response = HttpResponse(
            "a valid bearer token is required\n", status=401, content_type="text/plain"
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)


_worker_server_started = False


def serve_worker_metrics() -> int | None:
    """Start the metrics HTTP server of a ``runworker`` process if a port is configured.

    It has no token check: keep the port off public networks. Returns the port, or None.
    """
    global _worker_server_started
    port = settings.STELLARCHAT_WORKER_METRICS_PORT
    if port is None or _worker_server_started:
        return None
    try:
        start_http_server(port, registry=registry())
    except OSError as exc:
        logger.error(
            "cannot serve worker metrics on STELLARCHAT_WORKER_METRICS_PORT=%s: %s "
            "(several workers on one host need a port each, or PROMETHEUS_MULTIPROC_DIR)",
            port,
            exc,
        )
        return None
    _worker_server_started = True
    logger.info("worker metrics on http://0.0.0.0:%d/metrics", port)
    return port
