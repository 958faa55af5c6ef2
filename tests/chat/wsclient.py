"""Drive the real ASGI application (auth + origin check + consumer + embedded worker)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

ORIGIN = b"http://localhost"


def session_cookie(user: Any) -> bytes:
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


def communicator(
    cookie: bytes | None = None, origin: bytes | None = ORIGIN
) -> WebsocketCommunicator:
    from stellarchat.asgi import application

    headers = [(b"host", b"localhost")]
    if origin is not None:
        headers.append((b"origin", origin))
    if cookie is not None:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, "/ws/chat/", headers=headers)


class Socket:
    """A connected, authenticated socket with helpers that read until a frame type arrives."""

    def __init__(self, comm: WebsocketCommunicator) -> None:
        self.comm = comm
        self.seen: list[dict[str, Any]] = []

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.comm.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 10) -> dict[str, Any]:
        frame = json.loads(await self.comm.receive_from(timeout=timeout))
        self.seen.append(frame)
        return frame

    async def until(self, kind: str, timeout: float = 10) -> list[dict[str, Any]]:
        """Frames up to and including the first of ``kind``."""
        got: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.recv(timeout=max(0.1, deadline - loop.time()))
            got.append(frame)
            if frame["type"] == kind:
                return got

    async def close(self) -> None:
        await self.comm.disconnect()


async def connect(user: Any) -> Socket:
    from channels.db import database_sync_to_async

    cookie = await database_sync_to_async(session_cookie)(user)
    comm = communicator(cookie)
    connected, _ = await comm.connect()
    assert connected
    return Socket(comm)


def reply_text(frames: list[dict[str, Any]], message: str | None = None) -> str:
    """Join a reply's deltas, checking they are gapless and in order."""
    text = ""
    for f in frames:
        if f["type"] == "stream.delta" and (message is None or f["message"] == message):
            assert f["offset"] == len(text), (f["offset"], len(text))
            text += f["delta"]
    return text
