"""A handshake's and a subscribe's reads do not wait for the thread that saves messages
(stellarchat/dbreads.py): through the real ASGI stack, with that thread held busy."""

from __future__ import annotations

import asyncio
import threading

import pytest
from channels.db import database_sync_to_async

from stellarchat.dbreads import READERS, reading
from tests import factories
from tests.chat.wsclient import Socket, communicator, session_cookie

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.usefixtures("fresh_layer"),
]


async def test_reads_run_on_their_own_threads_and_see_committed_rows() -> None:
    user = await factories.amake_user("reader")
    write_thread = await database_sync_to_async(threading.current_thread)()

    def read() -> tuple[str, str]:
        from django.contrib.auth import get_user_model

        return threading.current_thread().name, get_user_model().objects.get(pk=user.pk).username

    names = set()
    for name, username in await asyncio.gather(*(reading(read)() for _ in range(6))):
        assert username == "reader"
        names.add(name)
    assert all(n.startswith("db-reads") for n in names) and write_thread.name not in names
    assert len(names) <= READERS


async def test_a_socket_opens_and_subscribes_while_the_write_thread_is_busy() -> None:
    user = await factories.amake_user("patient")
    conversation = await database_sync_to_async(factories.make_conversation)(user)
    other_owner = await factories.amake_user("other")
    other = await database_sync_to_async(factories.make_conversation)(other_owner)
    cookie = await database_sync_to_async(session_cookie)(user)
    release = threading.Event()
    busy = asyncio.ensure_future(database_sync_to_async(release.wait)(30))
    try:
        comm = communicator(cookie)
        connected, _ = await asyncio.wait_for(comm.connect(), 10)
        assert connected  # its session and user were read
        sock = Socket(comm)
        await sock.send({"type": "chat.subscribe", "conversation": str(conversation.pk)})
        frames = await sock.until("subscribed", timeout=10)
        assert frames[-1] == {
            "type": "subscribed",
            "conversation": str(conversation.pk),
            "streaming": False,
        }
        assert not busy.done()  # all of it while the write thread was still held
        # Someone else's conversation is still not found, read the same way.
        await sock.send({"type": "chat.subscribe", "conversation": str(other.pk)})
        error = (await sock.until("error", timeout=10))[-1]
        assert error["code"] == "not_found"
        await sock.close()
    finally:
        release.set()
        await busy


async def test_a_stale_session_is_refused_the_same_way() -> None:
    user = await factories.amake_user("changed")
    cookie = await database_sync_to_async(session_cookie)(user)

    def change_password() -> None:
        user.set_password("an entirely new secret 42")
        user.save()

    await database_sync_to_async(change_password)()
    comm = communicator(cookie)
    connected, _ = await comm.connect()
    assert not connected  # the session's hash no longer matches: anonymous, refused
