"""What daphne's WebSocket side lacks, added once per web process (``install``, from asgi.py).

daphne (4.2.3) hands every WebSocket to autobahn over Twisted. Three gaps matter to a shared
server, and each is closed here on daphne's protocol class, where the socket's bytes are:

1. **A bound on unsent data.** A send never blocks the application: autobahn writes into the
   Twisted transport, which buffers whatever the kernel will not take. A client that stops
   reading while replies stream to it grew the server's memory without bound. Past
   ``STELLARCHAT_WS_SEND_BUFFER_KB`` of unsent bytes the socket is closed with 1008 (policy
   violation); nothing more is queued for it, and autobahn drops the connection when the
   client does not answer the close within a second, freeing the buffer. The page reconnects
   and catches up; the reply is the server's and goes on.
2. **Close codes RFC 6455 lets a server send.** autobahn's ``sendClose`` accepts only 1000 and
   3000-4999, so an application's ``close(code=1008)`` raised inside daphne; those codes go
   out through ``sendCloseFrame``, which takes any code.
3. **The ASGI WebSocket Denial Response** (``websocket.http.response.start``): daphne answers
   every refused handshake with 403; with the extension advertised in the scope, an
   application can refuse with another status (429 for too many handshakes). The body is not
   sent: autobahn's refusal has the status line only.

Tested against the pinned daphne/autobahn/Twisted (tests/reliability/test_abuse_live.py): a
version bump that moves these internals fails there, not in production.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

logger = logging.getLogger(__name__)

# Close codes an endpoint may send besides 1000 (RFC 6455 7.4.1, IANA's 1012-1014).
SERVER_CLOSE_CODES = frozenset({1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
CLOSE_POLICY = 1008

_state: dict[str, int] = {"send_buffer_bytes": 0}


def unsent_bytes(transport: Any) -> int | None:
    """Bytes written to a Twisted transport that the kernel has not taken yet; None for a
    transport of a kind this does not know (the bound is then not enforced). A TLS transport
    wraps the TCP one: the encrypted bytes wait there."""
    for _ in range(3):
        if transport is None:
            return None
        if hasattr(transport, "_tempDataLen") and hasattr(transport, "dataBuffer"):
            return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        transport = getattr(transport, "transport", None)
    return None


def install(*, send_buffer_bytes: int) -> None:
    """Patch daphne's WebSocket protocol and server (once; later calls set the bound)."""
    from autobahn.twisted.websocket import ConnectionDeny
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    _state["send_buffer_bytes"] = send_buffer_bytes
    if getattr(WebSocketProtocol, "_stellarchat_patched", False):
        return
    WebSocketProtocol._stellarchat_patched = True

    original_send = WebSocketProtocol.serverSend
    original_close = WebSocketProtocol.serverClose
    original_reply = WebSocketProtocol.handle_reply
    original_create = Server.create_application

    def serverSend(self: Any, content: Any, binary: bool = False) -> None:  # noqa: N802
        original_send(self, content, binary)
        limit = _state["send_buffer_bytes"]
        if not limit or self.state != self.STATE_OPEN:
            return
        unsent = unsent_bytes(self.transport)
        if unsent is not None and unsent > limit:
            from stellarchat import metrics

            metrics.websocket_refused("send_buffer")
            logger.warning(
                "closing a WebSocket of %s: %d bytes unsent, over the %d-byte send buffer "
                "(a client that does not read)",
                self.client_addr,
                unsent,
                limit,
            )
            self.sendCloseFrame(code=CLOSE_POLICY, reasonUtf8=b"send buffer full", isReply=False)

    def serverClose(self: Any, code: int | None = None) -> None:  # noqa: N802
        if code in SERVER_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            original_close(self, code)

    def handle_reply(self: Any, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "websocket.http.response.start" and self.state == self.STATE_CONNECTING:
            status = int(message.get("status", 403))
            try:
                reason = HTTPStatus(status).phrase
            except ValueError:
                reason = "Refused"
            self.handshake_deferred.errback(ConnectionDeny(code=status, reason=reason))
            del self.handshake_deferred
            self.server.protocol_disconnected(self)  # as daphne's own refusal does
            return
        if kind == "websocket.http.response.body":
            return  # the status line went out alone (see the module's docstring)
        original_reply(self, message)

    def create_application(self: Any, protocol: Any, scope: dict[str, Any]) -> Any:
        if scope.get("type") == "websocket":
            scope.setdefault("extensions", {})["websocket.http.response"] = {}
        return original_create(self, protocol, scope)

    WebSocketProtocol.serverSend = serverSend
    WebSocketProtocol.serverClose = serverClose
    WebSocketProtocol.handle_reply = handle_reply
    Server.create_application = create_application
