"""What daphne's WebSocket side lacks, added once per web process (``install``, from asgi.py).

daphne (4.2.3) hands every WebSocket to autobahn over Twisted. Eight gaps matter to a shared
server, and each is closed here on daphne's protocol class, where the socket's bytes are:

1. **Frames per socket** (``STELLARCHAT_WS_FRAMES_PER_SECOND``, bursts of
   ``STELLARCHAT_WS_FRAME_BURST``). A frame over the limit is dropped as autobahn hands it
   over: not decoded, not queued for the application, never dispatched. That is what makes a
   flood cheap: 100,000 frames refused in the consumer still went through daphne's queue (it
   grew by ~50 MB) and Channels' dispatch, and the event loop they took was everyone's time to
   first token (bench/abuse.py: p95 28x the quiet run). A socket over its limit is also not
   read for ``PAUSE`` seconds, so TCP pushes back on the client instead of us parsing what it
   sends. The client hears ``rate_limited`` at most once a second; one still over its limit
   ``FrameBucket.GRACE`` seconds on is closed with 1008.
   What a read brings is handed to autobahn ``FEED`` bytes at a time, and once a frame in it
   is refused the rest waits, unparsed, for the socket's next turn (``feed``). Before, every
   frame of a 64 KB read was parsed only to be refused (829 in 1.2 s of one burst, against 38
   now: tests/reliability/test_abuse_live.py), a third of the web process's CPU in
   bench/abuse.py's frames flood; and autobahn cuts each frame off the front of its buffer,
   copying the rest every time, which small pieces keep short.
2. **A bound on unsent data** (``STELLARCHAT_WS_SEND_BUFFER_KB``). A send never blocks the
   application: autobahn writes into the Twisted transport, which buffers whatever the kernel
   will not take, so a client that stopped reading grew the server's memory without bound. Past
   the bound the socket is closed with 1008 and nothing more is queued for it; autobahn drops
   the connection when the client does not answer the close within a second. The page
   reconnects and catches up; the reply is the server's and goes on.
3. **Close codes RFC 6455 lets a server send.** autobahn's ``sendClose`` accepts only 1000 and
   3000-4999, so an application's ``close(code=1008)`` raised inside daphne; those codes go
   out through ``sendCloseFrame``, which takes any code.
4. **Handshakes of an address over its limit**: once ``chat.socket_limits`` has refused one
   (its window is full until a known time), this process refuses the address's next ones in
   ``onConnect`` until then, before daphne makes an application instance for them.
   An address that goes on handshaking while refused (more than ``DROP_AFTER`` a second)
   has its next TCP connections closed as they are accepted, for ``DROP_SECONDS``.
5. **Work for debug lines nobody reads**: autobahn pretty-prints its settings for every new
   connection (``pformat``) and colour-highlights names and values for every frame it reads
   and every write (``hltype``, ``hlval``) before its logger drops the line; the settings alone
   were 14 % of the event loop's time in a flood of handshakes (py-spy). The text is now made
   only if the line is written.
6. **The ASGI WebSocket Denial Response** (``websocket.http.response.start``): daphne answers
   every refused handshake with 403; with the extension advertised in the scope, an
   application can refuse with another status (429 for too many handshakes). The body is not
   sent: autobahn's refusal has the status line only.
7. **Stopping (SIGTERM, Ctrl-C).** daphne cut every socket (the page saw 1006). Now the
   process stops listening, lets the replies of its own in-process worker finish (the
   embedded topology; up to ``STELLARCHAT_DRAIN_SECONDS``), takes no more frames and answers
   those it took, then closes every socket with 1012 (service restart), which the page
   reconnects on: behind a proxy, to the process that is up. A ``chat.send`` not
   acknowledged by then was not taken, and the page sends it again. A second signal stops
   at once.
8. **Writes at once.** Twisted sends a write on the reactor's next turn, registering the
   socket for writability and unregistering it after (two ``epoll_ctl`` calls around every
   ``send``). A frame to a socket with nothing waiting is now sent at once (``write_now``);
   the rest still goes through Twisted. With a reply's deltas fanned out to many sockets
   (bench/abuse.py, the flooder's replies to its 28 open sockets): the web process's CPU in
   the flood 46-48 % of a core instead of 52-54 %.

Tested against the pinned daphne/autobahn/Twisted (tests/reliability/test_abuse_live.py): a
version bump that moves these internals fails there, not in production.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

logger = logging.getLogger(__name__)

# Close codes an endpoint may send besides 1000 (RFC 6455 7.4.1, IANA's 1012-1014).
SERVER_CLOSE_CODES = frozenset({1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
CLOSE_POLICY = 1008
CLOSE_RESTART = 1012
CLOSE_WAIT = 2.0  # seconds a stopping process waits for each step of closing its sockets
SETTLE = 0.3  # ... and for the answers to the frames it took to come back through the layer
PAUSE = 0.5  # seconds a socket over its frame limit is not read
FEED = 4096  # bytes handed to autobahn's frame parser at a time (see ``feed``)


def peer_only(peer: str, forwarded_for: str) -> str:
    return peer


@dataclass(frozen=True)
class Limits:
    frames_per_second: int = 0
    frame_burst: int = 1
    send_buffer_bytes: int = 0
    # The client's address from the peer's and X-Forwarded-For (chat.throttle.address_from).
    address: Callable[[str, str], str] = peer_only


_limits = Limits()
_blocked: dict[str, float] = {}  # address -> until when its handshakes are refused (monotonic)


def handshake_refused(address: str, peer: str, seconds: float | None = None) -> None:
    """A handshake of ``address`` (from the TCP ``peer``) was refused for too many a minute.

    With ``seconds`` (the application's refusal, which knows when its window frees): refuse
    the address's handshakes in this process until then without asking the application, so a
    refusal no longer costs an application instance and a trip to the window's storage."""
    if seconds is not None:
        if len(_blocked) > 10_000:  # very many addresses: start over rather than grow
            _blocked.clear()
        _blocked[address] = time.monotonic() + seconds
    if address == peer:
        refused_again(peer)


def _pending(table: dict[str, float], key: str) -> bool:
    """Whether ``table`` holds a time still to come for ``key`` (a past one is forgotten)."""
    until = table.get(key)
    if until is None:
        return False
    if until > time.monotonic():
        return True
    del table[key]
    return False


def handshakes_blocked(address: str) -> bool:
    return _pending(_blocked, address)


# An address that keeps handshaking while refused (a script in a loop, not a person) costs
# even its refusals: ~0.4 ms each of HTTP and WebSocket parsing. Past DROP_AFTER refusals in
# one second its next TCP connections are closed as they are accepted, for DROP_SECONDS,
# before anything is read (a few microseconds each). Only where the address is the TCP peer
# itself: behind a proxy the peer is the proxy, and the proxy should limit instead.
DROP_AFTER = 20
DROP_SECONDS = 1.0
_refusals: dict[str, tuple[int, int]] = {}  # peer -> (second, handshakes refused in it)
_dropping: dict[str, float] = {}  # peer -> until when its connections are closed at once


def refused_again(peer: str) -> None:
    """Count a refused handshake of a peer; start dropping its connections past the limit."""
    now = time.monotonic()
    second = int(now)
    was, count = _refusals.get(peer, (second, 0))
    count = count + 1 if was == second else 1
    if len(_refusals) > 10_000:
        _refusals.clear()
    _refusals[peer] = (second, count)
    if count > DROP_AFTER:
        if len(_dropping) > 10_000:
            _dropping.clear()
        _dropping[peer] = now + DROP_SECONDS


def dropping(peer: str) -> bool:
    return _pending(_dropping, peer)


@dataclass(frozen=True)
class Refusal:
    """A refused frame: whether to tell the client (``notify``) or to close (``close``)."""

    retry_after: int
    notify: bool
    close: bool
    first: bool  # the first refusal of a spell over the limit (worth one log line)


class FrameBucket:
    """A token bucket: ``burst`` frames at once, then ``rate`` a second.

    While a socket stays over its limit, at most one refusal a second is answered (a flood of
    refused frames must not become a flood of error frames), and once it has been over it for
    ``GRACE`` seconds it is closed. A spell over the limit ends when no frame has been refused
    for ``QUIET`` seconds (longer than ``PAUSE``, so a flooder that is paused and read again
    stays in its spell): a client that slows down is forgiven, one that keeps going is not,
    however many frames the refill lets through meanwhile."""

    GRACE = 10.0
    QUIET = 2.0
    NOTICE_EVERY = 1.0

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.stamp = clock()
        self.over_since = -math.inf
        self.last_refused = -math.inf
        self.last_notice = -math.inf

    def take(self) -> Refusal | None:
        """Spend a token for one frame; None when the frame may pass."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        first = now - self.last_refused > self.QUIET
        if first:
            self.over_since = now
        self.last_refused = now
        notify = now - self.last_notice >= self.NOTICE_EVERY
        if notify:
            self.last_notice = now
        return Refusal(
            retry_after=max(1, math.ceil((1 - self.tokens) / self.rate)),
            notify=notify,
            close=now - self.over_since >= self.GRACE,
            first=first,
        )


def refusal_frame(retry_after: int) -> bytes:
    """The ``rate_limited`` error frame of docs/websocket-api.md; ``client_id`` is null since
    the refused frame was not read."""
    detail = (
        f"at most {_limits.frames_per_second} frames a second (bursts of "
        f"{_limits.frame_burst}) on one socket; this frame was not read"
    )
    frame = {
        "type": "error",
        "code": "rate_limited",
        "detail": detail,
        "client_id": None,
        "retry_after": retry_after,
    }
    return json.dumps(frame, separators=(",", ":")).encode()


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


class _Later:
    """``fn(*args, **kwargs)`` made when a log line is formatted, not before: autobahn builds
    the text of its debug lines (pretty-printed settings, colour-highlighted names and values)
    on every connection, frame and write, and its logger then drops them."""

    __slots__ = ("fn", "args", "kwargs")

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __format__(self, spec: str) -> str:
        return format(self.fn(*self.args, **self.kwargs), spec)

    def __str__(self) -> str:
        return str(self.fn(*self.args, **self.kwargs))


def write_now(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, sent at once when nothing waits before it.

    Twisted buffers every write and sends it on the reactor's next turn, registering the
    socket for writability and then removing it again (two ``epoll_ctl`` calls around each
    ``send``): a reply's delta to a socket that keeps up costs three system calls instead of
    one. Here a plain TCP socket with nothing buffered is written to directly; whatever the
    kernel does not take (or a socket in any other state) goes through Twisted as before, so
    the order of the bytes and the send-buffer bound stay Twisted's."""
    if (
        not getattr(transport, "TLS", True)
        and getattr(transport, "connected", False)
        and not transport.disconnecting
        and not transport._writeDisconnected
        and unsent_bytes(transport) == 0
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:  # full (EAGAIN), or gone: Twisted finds out and handles it
            sent = 0
        if sent >= len(data):
            return
        data = data[sent:]
    transport.write(data)


def install(
    *,
    frames_per_second: int = 0,
    frame_burst: int = 1,
    send_buffer_bytes: int = 0,
    address: Callable[[str, str], str] | None = None,
) -> None:
    """Patch daphne's WebSocket protocol and server (once; later calls set the limits)."""
    from autobahn.twisted.websocket import ConnectionDeny
    from daphne.http_protocol import HTTPFactory
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    global _limits
    _limits = Limits(frames_per_second, frame_burst, send_buffer_bytes, address or peer_only)
    if getattr(WebSocketProtocol, "_stellarchat_patched", False):
        return
    WebSocketProtocol._stellarchat_patched = True
    import autobahn.twisted.websocket
    import autobahn.websocket.protocol

    for module in (autobahn.websocket.protocol, autobahn.twisted.websocket):
        for name in ("pformat", "hltype", "hlval"):
            if hasattr(module, name):
                setattr(module, name, functools.partial(_Later, getattr(module, name)))

    original_connect = WebSocketProtocol.onConnect
    original_message = WebSocketProtocol.onMessage
    original_send = WebSocketProtocol.serverSend
    original_close = WebSocketProtocol.serverClose
    original_reply = WebSocketProtocol.handle_reply
    original_create = Server.create_application
    original_build = HTTPFactory.buildProtocol
    original_kill = Server.kill_all_applications
    original_send_data = WebSocketProtocol.sendData
    original_data = WebSocketProtocol._dataReceived

    def buildProtocol(self: Any, addr: Any) -> Any:  # noqa: N802
        if _dropping and dropping(str(getattr(addr, "host", ""))):
            from stellarchat import metrics

            metrics.websocket_refused("connections_dropped")
            return None  # Twisted closes the connection before reading a byte
        return original_build(self, addr)

    def onConnect(self: Any, request: Any) -> Any:  # noqa: N802
        if _blocked:
            peer = self.transport.getPeer()
            host = str(getattr(peer, "host", ""))
            address = _limits.address(host, request.headers.get("x-forwarded-for", ""))
            if handshakes_blocked(address):
                from stellarchat import metrics

                metrics.websocket_refused("handshakes")
                handshake_refused(address, host)
                # What daphne's own refusal leaves behind, for its onClose and its cleanup.
                self.server = self.factory.server_class
                self.server.protocol_connected(self)
                self.request, self.client_addr = request, [host, getattr(peer, "port", 0)]
                self.server.protocol_disconnected(self)
                raise ConnectionDeny(code=429, reason="Too Many Requests")
        return original_connect(self, request)

    def onMessage(self: Any, payload: bytes, isBinary: bool) -> None:  # noqa: N802, N803
        if self.__dict__.get("_stopping"):
            return  # read after this process began closing the socket: never handled, never
            # acknowledged (autobahn still hands over frames once a close is sent)
        if _limits.frames_per_second and not self.muted:
            bucket = self.__dict__.get("_frames")
            if bucket is None:
                bucket = self._frames = FrameBucket(_limits.frames_per_second, _limits.frame_burst)
            refusal = bucket.take()
            if refusal is not None:
                refuse(self, refusal)
                return
        original_message(self, payload, isBinary)

    def refuse(self: Any, refusal: Refusal) -> None:
        from stellarchat import metrics
        from stellarchat.logs import log_sometimes

        metrics.websocket_refused("frames")
        if refusal.first:
            log_sometimes(
                logger,
                f"frames {self.client_addr}",
                "a socket of %s is over its frame limit",
                self.client_addr,
            )
        if refusal.close:
            metrics.websocket_refused("frames_closed")
            self.muted = True  # daphne drops what is still on its way
            self.sendCloseFrame(code=CLOSE_POLICY, reasonUtf8=b"too many frames", isReply=False)
        elif refusal.notify:
            self.sendMessage(refusal_frame(refusal.retry_after), False)
        transport = self.transport
        if not self.__dict__.get("_paused") and hasattr(transport, "pauseProducing"):
            from twisted.internet import reactor

            self._paused = True
            transport.pauseProducing()
            reactor.callLater(PAUSE, resume, self)

    def resume(self: Any) -> None:
        # Not once closing: a flooder's frames are not read to the end; autobahn drops the
        # connection when no close answer came within a second (closeHandshakeTimeout).
        self._paused = False
        if self.state != self.STATE_OPEN:
            return
        held = self.__dict__.pop("_held", None)
        if held:
            feed(self, held)  # what the last read brought after the refusal, first
        if not self._paused and self.state == self.STATE_OPEN:
            self.transport.resumeProducing()

    def _dataReceived(self: Any, data: bytes) -> None:  # noqa: N802
        if self.state != self.STATE_OPEN or len(data) <= FEED:
            original_data(self, data)
        else:
            feed(self, data)

    def feed(self: Any, data: bytes) -> None:
        """Hand ``data`` to autobahn ``FEED`` bytes at a time, and keep the rest unparsed
        once the socket is paused for its frame limit (``resume`` hands it over)."""
        view = memoryview(data)
        for start in range(0, len(data), FEED):
            if self.__dict__.get("_paused") and self.state == self.STATE_OPEN:
                self._held = bytes(view[start:])
                return
            original_data(self, bytes(view[start : start + FEED]))

    def sendData(  # noqa: N802
        self: Any, data: bytes, sync: bool = False, chopsize: int | None = None
    ) -> None:
        if chopsize or sync or self.send_queue or self.logOctets:
            original_send_data(self, data, sync, chopsize)
            return
        write_now(self.transport, data)  # autobahn's own, less its debug line
        if self.state == self.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        elif self.state in (self.STATE_CONNECTING, self.STATE_PROXY_CONNECTING):
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)

    def serverSend(self: Any, content: Any, binary: bool = False) -> None:  # noqa: N802
        original_send(self, content, binary)
        limit = _limits.send_buffer_bytes
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

    def kill_all_applications(self: Any) -> Any:
        from twisted.internet import defer

        return defer.Deferred.fromFuture(asyncio.ensure_future(stop_gracefully(self))).addBoth(
            lambda _: original_kill(self)
        )

    Server.kill_all_applications = kill_all_applications
    WebSocketProtocol.onConnect = onConnect
    WebSocketProtocol.onMessage = onMessage
    WebSocketProtocol.serverSend = serverSend
    WebSocketProtocol.sendData = sendData
    WebSocketProtocol._dataReceived = _dataReceived
    WebSocketProtocol.serverClose = serverClose
    WebSocketProtocol.handle_reply = handle_reply
    Server.create_application = create_application
    HTTPFactory.buildProtocol = buildProtocol


async def stop_gracefully(server: Any) -> None:
    """daphne is stopping (its reactor's "before shutdown"): stop listening, let the embedded
    worker's replies finish, close every WebSocket with 1012, and wait briefly for the closing
    handshakes. Whatever fails here, daphne's own shutdown follows."""
    from daphne.ws_protocol import WebSocketProtocol

    from chat.consumers import frames_in_hand
    from inference import worker

    def at_once(*_: Any) -> None:  # a second signal: end the replies now, their text kept
        from chat.replies import interrupt_all

        logger.warning("stop signal again: ending %d replies now", interrupt_all())

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, at_once)
    try:
        for listening in list(getattr(server, "listeners", [])):
            listening.addCallback(lambda port: port.stopListening())
        await worker.drain_embedded()
        sockets = [
            p
            for p in list(server.connections)
            if isinstance(p, WebSocketProtocol) and p.state == p.STATE_OPEN
        ]
        # Take no more frames, and let the ones taken be answered (a chat.send's message.saved
        # comes back through the channel layer): a frame this process took is then always
        # acknowledged before its socket closes, so a client may send again whatever was not.
        for protocol in sockets:
            protocol._stopping = True
        await _until(lambda: frames_in_hand() == 0, CLOSE_WAIT)
        await asyncio.sleep(SETTLE)
        if sockets:
            logger.info("stopping: closing %d sockets with %d", len(sockets), CLOSE_RESTART)
        for protocol in sockets:
            protocol.sendCloseFrame(code=CLOSE_RESTART, reasonUtf8=b"restarting", isReply=False)
        await _until(lambda: all(p.state == p.STATE_CLOSED for p in sockets), CLOSE_WAIT)
        # The sockets' application instances end once they have handled the disconnect;
        # daphne cancels whatever is left after this, which no longer cuts a frame's work.
        instances = [
            details.get("application_instance")
            for protocol, details in list(server.connections.items())
            if isinstance(protocol, WebSocketProtocol)
        ]
        await _until(lambda: all(i is None or i.done() for i in instances), CLOSE_WAIT)
    except Exception:
        logger.exception("stopping gracefully failed; stopping now")


async def _until(done: Callable[[], bool], seconds: float) -> None:
    """Wait until ``done()`` or ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
