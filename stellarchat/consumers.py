"""What the project's Channels consumers share."""

from __future__ import annotations

from typing import Any

from channels.consumer import get_handler_name


class DirectDispatch:
    """Channels' ``dispatch`` without the hop to the database thread it makes before every
    message (``aclose_old_connections``).

    Our handlers reach the database only through ``database_sync_to_async``, which closes
    stale connections itself, before and after each call. The hop is on the way of every
    message instead: a chat socket's deltas (many a second, for every socket) and the
    inference worker's jobs, which would queue behind other replies' saves on that one thread
    before their model could start."""

    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)
