"""Request ids in every log line, JSON logs on request, and never a message's text.

A request id comes from the client's ``X-Request-ID`` (when it is a sane token) or is made up;
it is returned in the response header, carried by WebSocket frames into the inference job, and
set around everything done for it, so one reply can be followed across web and worker logs.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def new_request_id(proposed: str | None = None) -> str:
    """The client's id if it is a plain token, else a fresh one (never trust it raw in logs)."""
    if proposed and SANE_ID.fullmatch(proposed):
        return proposed
    return uuid.uuid4().hex[:16]


_last_logged: dict[str, float] = {}


def log_sometimes(logger: logging.Logger, who: str, message: str, *args: Any) -> None:
    """A warning about one abuser (an address, a person) at most once a minute: a flood of
    refusals must not become a flood of log lines (the metrics count every one)."""
    now = time.monotonic()
    if now - _last_logged.get(who, -math.inf) < 60:
        return
    if len(_last_logged) > 10_000:  # very many abusers: start over rather than grow
        _last_logged.clear()
    _last_logged[who] = now
    logger.warning(message, *args)


class StartupNoise(logging.Filter):
    """Drops daphne's start-up line about HTTP/2: it asks for Twisted's TLS extras, which a
    server behind a TLS-terminating proxy (or on loopback) has no use for, and a newcomer
    reading `make run`'s output cannot tell it needs no action."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("HTTP/2 support not enabled")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class RequestIdMiddleware:
    """Sets the request id for the request (sync or async) and echoes it in the response."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self.__acall__(request)
        token = request_id.set(new_request_id(request.headers.get("X-Request-ID")))
        try:
            response: HttpResponse = self.get_response(request)
            response["X-Request-ID"] = request_id.get()
            return response
        finally:
            request_id.reset(token)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        token = request_id.set(new_request_id(request.headers.get("X-Request-ID")))
        try:
            response: HttpResponse = await self.get_response(request)
            response["X-Request-ID"] = request_id.get()
            return response
        finally:
            request_id.reset(token)
