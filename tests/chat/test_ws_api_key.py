"""The WebSocket API for programs: ``Authorization: Bearer <key>`` on the handshake, through the
real ASGI application (key-or-session routing, origin check, consumer, embedded worker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from api.models import ApiKey
from api.services import api_key_revoke
from chat import selectors
from chat.consumers import CLOSE_KEY_REVOKED
from chat.models import Conversation, Message
from tests import factories
from tests.chat.wsclient import ORIGIN, Socket, reply_text, session_cookie

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.usefixtures("asgi_loaded", "fresh_layer"),
]


@pytest.fixture
def asgi_loaded() -> None:
    import stellarchat.asgi  # noqa: F401 - its django.setup() re-applies LOGGING: do it first


user_with_key = database_sync_to_async(factories.user_with_key)


def communicator(
    *,
    authorization: str | bytes | None = None,
    origin: bytes | None = None,
    cookie: bytes | None = None,
) -> WebsocketCommunicator:
    from stellarchat.asgi import application

    headers = [(b"host", b"localhost")]
    if authorization is not None:
        value = authorization if isinstance(authorization, bytes) else authorization.encode()
        headers.append((b"authorization", value))
    if origin is not None:
        headers.append((b"origin", origin))
    if cookie is not None:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, "/ws/chat/", headers=headers)


async def connect_with_key(plain: str, **extra: Any) -> Socket:
    comm = communicator(authorization=f"Bearer {plain}", **extra)
    connected, _ = await comm.connect()
    assert connected
    return Socket(comm)


async def refused_handshake(comm: WebsocketCommunicator) -> None:
    connected, _ = await comm.connect()
    assert not connected


async def chat(sock: Socket, content: str, conversation: str | None = None) -> list[dict]:
    await sock.send({"type": "chat.send", "conversation": conversation, "content": content})
    return await sock.until("stream.end")


async def settle(sock: Socket) -> None:
    """Read the title announcements that follow a new conversation's first reply."""
    while not await sock.comm.receive_nothing(timeout=0.15):
        assert (await sock.recv())["type"] == "conversation.updated"


@database_sync_to_async
def counts() -> tuple[int, int]:
    return Conversation.objects.count(), Message.objects.count()


async def closed_with(comm: WebsocketCommunicator) -> int:
    """The close code the server sent next (skipping frames still in flight)."""
    while True:
        output = await comm.receive_output(timeout=3)
        if output["type"] == "websocket.close":
            return int(output.get("code", 1000))
        assert output["type"] == "websocket.send", output


# --- a key connects and chats -----------------------------------------------------------------


async def test_a_key_without_origin_connects_and_chats() -> None:
    user, key, plain = await user_with_key("ada")
    sock = await connect_with_key(plain)
    frames = await chat(sock, "hello from a script")
    kinds = [f["type"] for f in frames]
    assert kinds[:3] == ["conversation.created", "message.saved", "stream.start"]
    assert kinds[-1] == "stream.end"
    assert frames[-1]["finish_reason"] == "stop"
    assert reply_text(frames) == "You said: hello from a script (turn 1)"

    conv_id = frames[0]["conversation"]
    conversation = await Conversation.objects.aget(pk=conv_id)
    assert conversation.owner_id == user.pk
    assert conversation.source == Conversation.Source.API
    assert conversation.api_key_id == key.pk
    sidebar = await database_sync_to_async(lambda: list(selectors.conversation_list(user=user)))()
    assert sidebar == []

    again = await chat(sock, "and again", conv_id)  # the conversation is the key user's
    assert reply_text(again) == "You said: and again (turn 2)"
    await key.arefresh_from_db()
    assert key.last_used_at is not None
    await sock.close()


async def test_a_key_socket_skips_the_origin_check() -> None:
    _, _, plain = await user_with_key("bo")
    sock = await connect_with_key(plain, origin=b"http://elsewhere.example")
    assert (await chat(sock, "hi"))[-1]["finish_reason"] == "stop"
    await sock.close()


async def test_a_key_socket_cannot_reach_another_users_conversation() -> None:
    owner = await database_sync_to_async(factories.make_user)("cy")
    theirs = await database_sync_to_async(factories.make_conversation)(owner, turns=1)
    _, _, plain = await user_with_key("mallory")
    sock = await connect_with_key(plain)
    for frame in (
        {"type": "chat.subscribe", "conversation": str(theirs.pk)},
        {"type": "chat.send", "conversation": str(theirs.pk), "content": "mine now"},
    ):
        await sock.send(frame)
        assert (await sock.recv())["code"] == "not_found"
    await sock.close()


# --- handshakes refused ---------------------------------------------------------------------


async def test_without_a_key_the_browser_path_needs_an_origin() -> None:
    user, _, _ = await user_with_key("di")
    cookie = await database_sync_to_async(session_cookie)(user)
    await refused_handshake(communicator())  # nothing at all
    await refused_handshake(communicator(cookie=cookie))  # a session, but no Origin


BAD_AUTHORIZATION: list[str | bytes] = [
    "Bearer sc_abcdefgh_" + "A" * 40,  # well-formed, unknown
    "Bearer not-a-key",
    "Bearer",
    "Bearer ",
    "Basic dXNlcjpwYXNz",
    "",
    b"Bearer \xff\xfe",
]


async def test_a_bad_authorization_header_is_refused() -> None:
    user, _, _ = await user_with_key("ed")
    cookie = await database_sync_to_async(session_cookie)(user)
    for authorization in BAD_AUTHORIZATION:
        # The header decides, even next to a valid session and Origin.
        await refused_handshake(communicator(authorization=authorization))
        await refused_handshake(
            communicator(authorization=authorization, origin=ORIGIN, cookie=cookie)
        )


async def test_a_wrong_secret_is_refused() -> None:
    _, _, plain = await user_with_key("fa")
    wrong = plain[:-1] + ("A" if plain[-1] != "A" else "B")
    await refused_handshake(communicator(authorization=f"Bearer {wrong}"))


async def test_a_revoked_key_is_refused() -> None:
    _, key, plain = await user_with_key("gu")
    await database_sync_to_async(api_key_revoke)(key=key)
    await refused_handshake(communicator(authorization=f"Bearer {plain}"))


async def test_an_inactive_users_key_is_refused() -> None:
    user, _, plain = await user_with_key("hu")
    user.is_active = False
    await user.asave(update_fields=["is_active"])
    await refused_handshake(communicator(authorization=f"Bearer {plain}"))


# --- revocation while connected -------------------------------------------------------------


async def test_revoking_the_key_closes_its_open_sockets_with_4401() -> None:
    user, key, plain = await user_with_key("iv")
    _, other_plain = await database_sync_to_async(factories.make_api_key)(user, "other")
    first, second = await connect_with_key(plain), await connect_with_key(plain)
    untouched = await connect_with_key(other_plain)
    cookie = await database_sync_to_async(session_cookie)(user)
    browser = communicator(origin=ORIGIN, cookie=cookie)
    assert (await browser.connect())[0]

    await database_sync_to_async(api_key_revoke)(key=key)
    assert await closed_with(first.comm) == CLOSE_KEY_REVOKED
    assert await closed_with(second.comm) == CLOSE_KEY_REVOKED
    # Another key of the same user, and the user's browser tab, stay open and working.
    assert (await chat(untouched, "still here"))[-1]["finish_reason"] == "stop"
    await browser.send_json_to({"type": "chat.send", "conversation": None, "content": "me too"})
    assert (await Socket(browser).until("stream.end"))[-1]["finish_reason"] == "stop"
    await untouched.close()
    await browser.disconnect()


async def test_a_revocation_the_socket_never_heard_of_closes_it_on_the_next_frame() -> None:
    _, key, plain = await user_with_key("jo")
    sock = await connect_with_key(plain)
    frames = await chat(sock, "before")
    conv = frames[0]["conversation"]
    await settle(sock)
    # Revoked behind the socket's back: no group message reaches it.
    await ApiKey.objects.filter(pk=key.pk).aupdate(revoked_at=timezone.now())
    assert await sock.comm.receive_nothing(timeout=0.2)  # still open
    before = await counts()
    await sock.send({"type": "chat.send", "conversation": conv, "content": "after"})
    assert await closed_with(sock.comm) == CLOSE_KEY_REVOKED
    assert await counts() == before  # the frame did nothing


async def test_a_revoked_key_mid_stream_closes_but_the_reply_finishes() -> None:
    _, key, plain = await user_with_key("ka")
    sock = await connect_with_key(plain)
    await sock.send(
        {"type": "chat.send", "conversation": None, "content": "[[slow 5]] [[long 60]]"}
    )
    conv = (await sock.until("stream.delta"))[0]["conversation"]
    await database_sync_to_async(api_key_revoke)(key=key)
    assert await closed_with(sock.comm) == CLOSE_KEY_REVOKED
    for _ in range(100):
        reply = await Message.objects.filter(conversation_id=conv, role="assistant").aget()
        if reply.status != Message.Status.STREAMING:
            break
        await asyncio.sleep(0.05)
    assert reply.status == Message.Status.COMPLETE  # closing a tab never stops a reply


# --- browsers as before -------------------------------------------------------------------


async def test_a_session_cookie_socket_still_works() -> None:
    user = await database_sync_to_async(factories.make_user)("lu")
    cookie = await database_sync_to_async(session_cookie)(user)
    comm = communicator(origin=ORIGIN, cookie=cookie)
    assert (await comm.connect())[0]
    sock = Socket(comm)
    frames = await chat(sock, "from the browser")
    assert reply_text(frames) == "You said: from the browser (turn 1)"
    conversation = await Conversation.objects.aget(pk=frames[0]["conversation"])
    assert conversation.source == Conversation.Source.CHAT and conversation.api_key_id is None
    sidebar = await database_sync_to_async(lambda: list(selectors.conversation_list(user=user)))()
    assert sidebar == [conversation]
    await sock.close()


async def test_a_browser_tab_does_not_hear_of_conversations_made_with_a_key() -> None:
    user, _, plain = await user_with_key("ma")
    cookie = await database_sync_to_async(session_cookie)(user)
    browser = communicator(origin=ORIGIN, cookie=cookie)
    assert (await browser.connect())[0]
    program = await connect_with_key(plain)
    await chat(program, "a script's question")
    heard = []
    while not await browser.receive_nothing(timeout=0.2):
        heard.append(await browser.receive_json_from())
    await program.close()
    await browser.disconnect()
    assert [f for f in heard if f["type"] == "conversation.created"] == []
