"""API-key authentication for the WebSocket API.

A handshake that carries ``Authorization: Bearer <key>`` is decided by the key alone: a valid
key makes the socket its user's (and skips the Origin check, which guards cookie sessions
against other sites; a bearer key is no ambient credential), a bad one refuses the handshake
(HTTP 403). Without the header, browsers go the usual way: Origin check, then the session.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.security.websocket import WebsocketDenier

from api import keys


def _authorization(scope: dict[str, Any]) -> bytes | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            return bytes(value)
    return None


@database_sync_to_async
def authenticate_token(token: str) -> Any:
    """The active key for a bearer token (its last use noted), or None: REST and WebSocket."""
    key = keys.authenticate(token)
    if key is not None:
        from api.services import api_key_touch

        api_key_touch(key=key)
    return key


class BearerKeyOrSession:
    """Route a WebSocket handshake to key auth (``keyed``) or to the browser stack."""

    def __init__(self, *, keyed: Any, session: Any) -> None:
        self.keyed = keyed
        self.session = session

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        header = _authorization(scope)
        if header is None:
            return await self.session(scope, receive, send)
        token = keys.bearer_token(header)
        key = await authenticate_token(token) if token else None
        if key is None:
            return await WebsocketDenier()(scope, receive, send)
        scope = {**scope, "user": key.user, "api_key": key}
        return await self.keyed(scope, receive, send)
