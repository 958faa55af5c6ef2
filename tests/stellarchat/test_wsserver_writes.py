"""``wsserver.write_now``: a frame to a socket with nothing waiting goes out at once, anything
else through Twisted's own buffer, in order. On Twisted's real TCP connection class (a version
that renames what ``write_now`` reads fails here) over a real socket pair."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol

from stellarchat.wsserver import write_now


class Reactor:
    """What a connection asks of its reactor here: to be told when it can write."""

    def __init__(self) -> None:
        self.writers: set[Any] = set()

    def addWriter(self, fd: Any) -> None:  # noqa: N802
        self.writers.add(fd)

    def removeWriter(self, fd: Any) -> None:  # noqa: N802
        self.writers.discard(fd)

    def callLater(self, *args: Any, **kwargs: Any) -> None:  # noqa: N802
        pass


@pytest.fixture
def pair() -> Any:
    ours, theirs = socket.socketpair()
    reactor = Reactor()
    conn = tcp.Connection(ours, Protocol(), reactor=reactor)
    conn.connected = True
    yield conn, theirs, reactor
    ours.close()
    theirs.close()


def received(peer: socket.socket) -> bytes:
    peer.setblocking(False)
    chunks = []
    while True:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_a_frame_to_an_idle_socket_is_sent_at_once(pair: Any) -> None:
    conn, peer, reactor = pair
    write_now(conn, b"hello")
    assert received(peer) == b"hello"
    assert reactor.writers == set() and conn._tempDataLen == 0  # Twisted was not involved


def test_behind_buffered_bytes_it_waits_its_turn(pair: Any) -> None:
    conn, peer, reactor = pair
    conn.write(b"first ")  # Twisted's: sent on the reactor's next turn
    write_now(conn, b"second")
    assert received(peer) == b""
    assert reactor.writers == {conn}
    conn.doWrite()
    assert received(peer) == b"first second"


def test_what_the_kernel_does_not_take_goes_through_twisted(pair: Any) -> None:
    conn, peer, _ = pair
    conn.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    data = bytes(range(256)) * 4096  # 1 MiB, far more than the buffers hold
    write_now(conn, data)
    assert 0 < conn._tempDataLen < len(data)  # part sent, the rest buffered in order
    got = b""
    while len(got) < len(data):
        got += received(peer)
        conn.doWrite()
    assert got == data


def test_a_socket_closing_or_closed_is_left_to_twisted(pair: Any) -> None:
    conn, peer, _ = pair
    conn.disconnecting = True
    write_now(conn, b"late")
    assert received(peer) == b""  # not sent past a close Twisted has begun: its to decide
    assert conn._tempDataLen == len(b"late")
    conn.disconnecting = False
    conn.connected = False
    write_now(conn, b"gone")  # Twisted drops writes to a lost connection
    assert received(peer) == b"" and conn._tempDataLen == len(b"late")
