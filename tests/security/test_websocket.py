"""The chat WebSocket against another user's ids, for every action the consumer routes (so a
new action fails here until it is covered), from a browser session and from an API key; and
the cross-site WebSocket hijacking check of the handshake."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async

from chat import actions
from chat.models import Message
from tests import factories
from tests.chat.test_ws_api_key import connect_with_key, user_with_key
from tests.chat.wsclient import Socket, communicator, connect, session_cookie

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.usefixtures("fresh_layer"),
]

ACTIONS = {"chat.subscribe", *actions.HANDLERS}
NOT_FOUND = {"type": "error", "code": "not_found", "client_id": "probe"}


@database_sync_to_async
def owners_world() -> tuple[Any, dict[str, str], list[tuple[Any, ...]]]:
    owner = factories.make_user("victim")
    conversation = factories.make_conversation(owner, title="victim's", turns=1)
    question, answer = conversation.messages.order_by("position")
    answer.group, answer.slot = uuid.uuid4(), 0  # one reply of a compare (it can be voted on)
    answer.save(update_fields=["group", "slot"])
    ids = {
        "conversation": str(conversation.pk),
        "question": str(question.pk),
        "answer": str(answer.pk),
        "group": str(answer.group),
    }
    return owner, ids, rows(conversation.pk)


def rows(conversation_id: Any) -> list[tuple[Any, ...]]:
    return list(
        Message.objects.filter(conversation_id=conversation_id)
        .order_by("position")
        .values_list("pk", "role", "content", "status")
    )


@database_sync_to_async
def intruders_own_conversation(user: Any) -> str:
    return str(factories.make_conversation(user, title="mine", turns=1).pk)


def frames(ids: dict[str, str], own: str) -> list[dict[str, Any]]:
    """Every action at the victim's conversation, plus the victim's message inside the
    intruder's own conversation (an id pair no lookup may take apart)."""
    theirs, question = ids["conversation"], ids["question"]
    probes = [
        {"type": "chat.subscribe", "conversation": theirs},
        {"type": "chat.send", "conversation": theirs, "content": "let me in"},
        {"type": "chat.stop", "conversation": theirs},
        {"type": "chat.regenerate", "conversation": theirs},
        {"type": "chat.edit", "conversation": theirs, "message": question, "content": "x"},
        {"type": "chat.edit", "conversation": own, "message": question, "content": "x"},
        {"type": "chat.send", "conversation": theirs, "content": "x", "models": ["a", "b"]},
        {"type": "chat.send", "conversation": theirs, "content": "x", "arena": True},
        {"type": "chat.vote", "conversation": theirs, "group": ids["group"], "winner": "tie"},
        {"type": "chat.vote", "conversation": own, "group": ids["group"], "winner": ids["answer"]},
    ]
    assert {p["type"] for p in probes} == ACTIONS, "a new action needs its isolation probe"
    return [{**p, "client_id": "probe"} for p in probes]


async def probe(sock: Socket, ids: dict[str, str], own: str) -> None:
    for frame in frames(ids, own):
        await sock.send(frame)
        answer = await sock.recv()
        assert {k: answer.get(k) for k in NOT_FOUND} == NOT_FOUND, (frame, answer)
    assert await sock.comm.receive_nothing(timeout=0.3)


async def test_a_session_socket_reaches_nothing_of_another_user() -> None:
    _, ids, before = await owners_world()
    intruder = await factories.amake_user("mallory")
    sock = await connect(intruder)
    await probe(sock, ids, await intruders_own_conversation(intruder))
    await sock.close()
    assert await database_sync_to_async(rows)(ids["conversation"]) == before


async def test_a_key_socket_reaches_nothing_of_another_user() -> None:
    _, ids, before = await owners_world()
    intruder, _, plain = await user_with_key("trudy")
    sock = await connect_with_key(plain)
    await probe(sock, ids, await intruders_own_conversation(intruder))
    await sock.close()
    assert await database_sync_to_async(rows)(ids["conversation"]) == before


@pytest.mark.parametrize(
    "origin",
    [
        b"http://evil.example",
        b"http://localhost.evil.example",
        b"http://evillocalhost",
        b"https://127.0.0.1.evil.example",
        b"null",
        b"file://",
        b"http://localhost@evil.example",
    ],
)
async def test_a_foreign_origin_with_a_valid_session_is_refused(origin: bytes) -> None:
    """Cross-site WebSocket hijacking: another site's page opening our socket with the
    visitor's cookie gets no handshake."""
    user = await factories.amake_user(f"u{uuid.uuid4().hex[:8]}")
    cookie = await database_sync_to_async(session_cookie)(user)
    comm = communicator(cookie, origin=origin)
    connected, _ = await comm.connect()
    assert not connected, origin
