"""The hostile-input corpus through the chat WebSocket, in-process (real ASGI stack, consumer,
embedded worker and test backend), for breadth. The real server's frame limits are exercised
by test_hostile_live.py.

Every frame must get a clear answer — an ``error`` frame with a code other than ``internal``,
or a saved message whose text is exactly what was sent — and every frame the server sends must
be valid UTF-8 text (a real server has to encode it). Afterwards the socket still chats.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from chat.models import Message
from chat.protocol import ERROR_CODES
from tests import factories
from tests.chat.wsclient import Socket, connect, reply_text
from tests.reliability import hostile

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.usefixtures("fresh_layer", "no_rate_limits"),
]

CLEAR_CODES = set(ERROR_CODES) - {"internal"}
OPTION_FIELDS = ("temperature", "top_p", "top_k", "max_new_tokens", "stop", "seed")


@pytest.fixture
def no_rate_limits(settings: Any) -> None:
    """The corpus sends many messages from one person: per-minute limits are not the subject."""
    settings.STELLARCHAT_RATE_LIMIT_PER_MINUTE = 0
    settings.STELLARCHAT_TOKENS_PER_DAY = 0


async def recv_strict(sock: Socket, timeout: float = 20) -> dict[str, Any]:
    """The next frame, checked to be encodable as the UTF-8 a real server must send."""
    raw = await sock.comm.receive_from(timeout=timeout)
    raw.encode("utf-8")  # a lone surrogate here would crash daphne's send, not just this test
    frame: dict[str, Any] = json.loads(raw)
    sock.seen.append(frame)
    return frame


async def answer(sock: Socket) -> list[dict[str, Any]]:
    """Frames up to the answer of one client frame: an error, or the end of its reply."""
    frames: list[dict[str, Any]] = []
    while True:
        frame = await recv_strict(sock)
        frames.append(frame)
        if frame["type"] in ("error", "stream.end", "subscribed"):
            return frames


def error_of(frames: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((f for f in frames if f["type"] == "error"), None)


@database_sync_to_async
def user_turns(conversation: str) -> list[str]:
    rows = Message.objects.filter(conversation_id=conversation, role="user")
    return list(rows.order_by("position").values_list("content", flat=True))


async def still_chats(sock: Socket) -> None:
    await sock.send({"type": "chat.send", "conversation": None, "content": "still there?"})
    frames = await sock.until("stream.end", timeout=20)
    assert reply_text(frames) == "You said: still there? (turn 1)"


async def test_hostile_text_is_refused_clearly_or_stored_exactly() -> None:
    """Each typed text of the corpus as a new conversation's first message, on one socket."""
    sock = await connect(await factories.amake_user("texts"))
    for entry in hostile.texts():
        text = entry.value
        await sock.send(json.dumps({"type": "chat.send", "conversation": None, "content": text}))
        frames = await answer(sock)
        error = error_of(frames)
        if hostile.storable(text) and len(text) <= settings.STELLARCHAT_MAX_MESSAGE_CHARS:
            assert error is None, (entry.name, error)
            conv = next(f for f in frames if f["type"] == "conversation.created")["conversation"]
            assert await user_turns(conv) == [text], entry.name  # stored as sent
            assert frames[-1]["finish_reason"] in ("stop", "length"), entry.name
            assert reply_text(frames).startswith("You said: "), entry.name
        else:
            assert error is not None, (entry.name, frames)
            assert error["code"] in {"invalid_frame", "too_long"} and error["detail"], entry.name
    await still_chats(sock)
    await sock.close()


# An empty text frame cannot be sent in-process (the communicator refuses it); the live test
# sends one to the real server.
IN_PROCESS_DOCUMENTS = [h for h in hostile.entries("document") if h.name != "empty-document"]


async def test_hostile_documents_get_an_error_frame() -> None:
    sock = await connect(await factories.amake_user("documents"))
    for entry in IN_PROCESS_DOCUMENTS:
        await sock.send(entry.value)
        frames = await answer(sock)
        assert len(frames) == 1, (entry.name, frames)
        assert frames[0]["code"] in {"invalid_frame", "too_long"}, (entry.name, frames)
    await still_chats(sock)
    await sock.close()


async def test_binary_frames_of_invalid_utf8_get_an_error_frame() -> None:
    sock = await connect(await factories.amake_user("bytes"))
    for entry in hostile.entries("bytes"):
        await sock.comm.send_to(bytes_data=entry.value)
        frame = await recv_strict(sock)
        assert frame["code"] == "invalid_frame", (entry.name, frame)
    await still_chats(sock)
    await sock.close()


def frame_variants() -> list[tuple[str, dict[str, Any]]]:
    """Every field of every frame type set to every wrong-typed value (and to hostile text)."""
    conv = str(uuid.uuid4())
    base: dict[str, dict[str, Any]] = {
        "chat.send": {"conversation": None, "content": "hi", "client_id": "c", "options": {}},
        "chat.edit": {"conversation": conv, "message": conv, "content": "hi", "client_id": "c"},
        "chat.stop": {"conversation": conv, "client_id": "c"},
        "chat.regenerate": {"conversation": conv, "client_id": "c"},
        "chat.subscribe": {"conversation": conv, "client_id": "c"},
    }
    weird_strings = [h.value for h in hostile.texts(big=False) if len(h.value) < 2000]
    # The content fields see every string; the others a spread of them, to keep this quick.
    some_strings = [s for s in weird_strings if not hostile.encodable(s)] + weird_strings[::5]
    variants = []
    for kind, fields in base.items():
        for name in ["type", *fields]:
            strings = weird_strings if name == "content" else some_strings
            for value in [*hostile.WRONG_TYPES, *strings]:
                frame = {"type": kind, **fields, name: value}
                variants.append((f"{kind}.{name}", frame))
    for name in OPTION_FIELDS:
        for value in [*hostile.WRONG_TYPES, *some_strings, weird_strings[:8]]:
            frame = {**base["chat.send"], "type": "chat.send", "options": {name: value}}
            variants.append((f"options.{name}", frame))
    for text in weird_strings:  # option names themselves are echoed in errors
        options = {text: 1}
        variants.append(
            ("options.<name>", {**base["chat.send"], "type": "chat.send", "options": options})
        )
    return variants


async def test_every_field_with_wrong_types_or_hostile_text_gets_a_clear_answer() -> None:
    """A frame is either refused with a clear code or does what it says; never ``internal``,
    never an answer a real server could not send. Options the server accepts are applied."""
    sock = await connect(await factories.amake_user("fields"))
    problems = []
    for label, frame in frame_variants():
        await sock.send(json.dumps(frame))
        try:
            frames = await answer(sock)
        except UnicodeEncodeError as exc:
            problems.append((label, repr(frame)[:120], f"unencodable answer: {exc}"))
            continue
        error = error_of(frames)
        if error is not None and error["code"] not in CLEAR_CODES:
            problems.append((label, repr(frame)[:120], error))
    assert problems == []
    await still_chats(sock)
    await sock.close()


@pytest.mark.parametrize(
    "stop",
    [["\ud800"], ["a\x00"], "\udfff", ["ok", "\x00"]],
    ids=["lone-surrogate", "nul", "bare-surrogate", "nul-in-list"],
)
async def test_stop_strings_that_no_text_can_hold_are_invalid_options(stop: Any) -> None:
    """A stop string with a lone surrogate cannot cross Redis (msgpack refuses it) nor match any
    decoded text, and NUL never reaches the saved text: refused up front, nothing saved."""
    sock = await connect(await factories.amake_user("stops"))
    frame = {"type": "chat.send", "conversation": None, "content": "hi", "options": {"stop": stop}}
    await sock.send(json.dumps(frame))
    frames = await answer(sock)
    assert len(frames) == 1 and frames[0]["code"] == "invalid_option", frames
    assert "stop" in frames[0]["detail"]
    assert await database_sync_to_async(Message.objects.count)() == 0
    await still_chats(sock)
    await sock.close()
