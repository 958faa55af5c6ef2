"""Settings → Your data: the page, and the ZIP of everything the person owns.

The ZIP is made by a generator that reads the database (``portability.export``). Under ASGI,
Django would read a synchronous generator whole before sending a byte, so the response gets
an asynchronous iterator that pulls each chunk on one thread of its own: the generator's
connection, cursors and transaction stay on that thread, the event loop never waits on the
database, and the shared ORM thread of every other request is not held for minutes.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from django.contrib.auth.decorators import login_required
from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from portability import export

# Each download holds a database connection for its whole length: a bound per process keeps
# the connection pool (DJANGO_DB_POOL_SIZE, 10 by default) for everyone else.
EXPORTS_AT_ONCE = 3
_exports = threading.BoundedSemaphore(EXPORTS_AT_ONCE)


class _Permit:
    """One of the process's download slots. Given back once: when the response is closed, or
    when the body is dropped without being closed (a client gone before the first byte)."""

    def __init__(self) -> None:
        self._slots = _exports
        self.held = self._slots.acquire(blocking=False)
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self.held:
                self.held = False
                self._slots.release()


class _Pulled:
    """A synchronous chunk generator served as an asynchronous iterator, each ``next`` on one
    dedicated thread. ``close`` (the response's, called after the last byte or a disconnect)
    ends the generator on that same thread and frees its database connection."""

    def __init__(self, chunks: Iterator[bytes], on_close: Callable[[], None]) -> None:
        self._chunks = chunks
        self._on_close = on_close
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export")
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        while not self._closed:
            chunk = await loop.run_in_executor(self._executor, next, self._chunks, None)
            if chunk is None:
                return
            yield chunk

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.submit(self._finish)  # runs after a pull still in progress
        self._executor.shutdown(wait=False)

    def _finish(self) -> None:
        try:
            self._chunks.close()  # a generator cut short leaves its transaction here
        finally:
            connections.close_all()  # this thread's connections only
            self._on_close()


class _Guarded:
    """The synchronous path (WSGI, the test client): the generator as it is, with the same
    release when the response is closed, started or not."""

    def __init__(self, chunks: Iterator[bytes], on_close: Callable[[], None]) -> None:
        self._chunks = chunks
        self._on_close = on_close
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._chunks.close()
            finally:
                self._on_close()


def _filename(request: HttpRequest) -> str:
    day = timezone.now().date().isoformat()
    return f"stellarchat-{request.user.get_username()}-{day}.zip"


@login_required
@never_cache
@require_GET
def data_page(request: HttpRequest) -> HttpResponse:
    """What the download holds, the link to it, and the way to delete the account."""
    return render(request, "portability/data.html", {"summary": export.summary(user=request.user)})


@login_required
@never_cache
@require_GET
def export_download(request: HttpRequest) -> HttpResponse:
    """The requester's own data, always: there is no id to ask for anyone else's."""
    permit = _Permit()
    if not permit.held:
        context = {
            "summary": export.summary(user=request.user),
            "busy": _("Several downloads are being prepared right now. Try again in a minute."),
        }
        response = render(request, "portability/data.html", context, status=429)
        response["Retry-After"] = "60"
        return response
    chunks = export.export_zip(request.user)
    body: _Pulled | _Guarded
    if isinstance(request, ASGIRequest):
        body = _Pulled(chunks, permit.release)
    else:
        body = _Guarded(chunks, permit.release)
    weakref.finalize(body, permit.release)
    response = StreamingHttpResponse(body, content_type="application/zip")
    response["Content-Disposition"] = content_disposition_header(True, _filename(request))
    return response
