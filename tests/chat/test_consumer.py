"""The chat WebSocket, through the real ASGI stack (auth, origin check, embedded worker)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from chat.models import Conversation, Message
from tests import factories
from tests.chat.wsclient import Socket, communicator, connect, reply_text, session_cookie

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.usefixtures("fresh_layer"),
]


make_user = factories.amake_user


@database_sync_to_async
def messages_of(conversation: str) -> list[Message]:
    return list(Message.objects.filter(conversation_id=conversation).order_by("position"))


async def chat(
    sock: Socket, content: str, conversation: str | None = None, **extra: Any
) -> list[dict[str, Any]]:
    await sock.send(
        {"type": "chat.send", "conversation": conversation, "content": content, **extra}
    )
    return await sock.until("stream.end")


def only(frames: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [f for f in frames if f["type"] == kind]
    assert len(found) == 1, (kind, frames)
    return found[0]


# --- the happy path -----------------------------------------------------------------------


async def test_it_streams_saves_and_titles_a_reply() -> None:
    user = await make_user("ada")
    sock = await connect(user)
    frames = await chat(sock, "Tell me about nebulae 🌌 please", client_id="c-1")
    kinds = [f["type"] for f in frames]
    assert kinds[:3] == ["conversation.created", "message.saved", "stream.start"]
    assert kinds[-1] == "stream.end"
    conv = only(frames, "conversation.created")["conversation"]
    assert only(frames, "conversation.created")["client_id"] == "c-1"  # the sending tab's
    saved = only(frames, "message.saved")
    assert saved["client_id"] == "c-1" and saved["message"]["role"] == "user"
    assert saved["message"]["content"] == "Tell me about nebulae 🌌 please"
    start, end = only(frames, "stream.start"), only(frames, "stream.end")
    text = reply_text(frames)
    assert text == "You said: Tell me about nebulae 🌌 please (turn 1)"
    assert end["finish_reason"] == "stop" and end["message"] == start["message"]
    assert end["usage"]["completion_tokens"] == 10 and end["usage"]["prompt_tokens"] > 0
    assert set(end["timings"]) == {"ttft_ms", "tokens_per_second"}

    rows = await messages_of(conv)
    assert [(m.role, m.status) for m in rows] == [("user", "complete"), ("assistant", "complete")]
    assert str(rows[0].pk) == saved["message"]["id"] and str(rows[1].pk) == start["message"]
    assert rows[1].content == text  # the saved text equals the streamed deltas joined
    assert rows[1].completion_tokens == 10 and rows[1].model_name == "stellarchat-test"

    updated = (await sock.until("conversation.updated"))[-1]
    assert updated == {
        "type": "conversation.updated",
        "conversation": conv,
        "title": "Tell me about nebulae 🌌 please",
    }
    assert (
        await database_sync_to_async(lambda: Conversation.objects.get(pk=conv).title)()
        == updated["title"]
    )
    await sock.close()


async def test_multi_turn_keeps_the_context() -> None:
    sock = await connect(await make_user("bo"))
    first = await chat(sock, "one")
    conv = only(first, "conversation.created")["conversation"]
    second = await chat(sock, "two", conv)
    assert reply_text(second) == "You said: two (turn 2)"
    assert not [f for f in second if f["type"] == "conversation.created"]
    rows = await messages_of(conv)
    assert [m.position for m in rows] == [0, 1, 2, 3]
    await sock.close()


async def test_two_tabs_see_the_same_stream() -> None:
    user = await make_user("cy")
    tab_a, tab_b = await connect(user), await connect(user)
    frames = await chat(tab_a, "first")
    conv = only(frames, "conversation.created")["conversation"]
    await tab_b.send({"type": "chat.subscribe", "conversation": conv})
    got = await tab_b.until("subscribed")
    assert got[0]["type"] == "conversation.created"  # the other tab's sidebar hears of it too
    assert got[-1] == {"type": "subscribed", "conversation": conv, "streaming": False}
    await tab_a.send({"type": "chat.send", "conversation": conv, "content": "[[long 30]]"})
    a = await tab_a.until("stream.end")
    b = await tab_b.until("stream.end")
    assert reply_text(a) == reply_text(b) == " ".join(f"w{i}" for i in range(30))
    assert only(b, "message.saved")["message"]["content"] == "[[long 30]]"
    await tab_a.close()
    await tab_b.close()


async def test_subscribing_mid_stream_catches_up_exactly(settings: Any) -> None:
    user = await make_user("di")
    tab_a = await connect(user)
    await tab_a.send(
        {"type": "chat.send", "conversation": None, "content": "[[slow 20]] [[long 60]]"}
    )
    head = await tab_a.until("stream.start")
    conv = head[0]["conversation"]
    head += await tab_a.until("stream.delta")
    head += await tab_a.until("stream.delta")
    tab_b = await connect(user)
    await tab_b.send({"type": "chat.subscribe", "conversation": conv})
    first = await tab_b.recv()
    assert first == {"type": "subscribed", "conversation": conv, "streaming": True}
    assert (await tab_b.recv())["type"] == "stream.start"
    catch_up = await tab_b.recv()
    assert catch_up["type"] == "stream.delta" and catch_up["offset"] == 0
    assert catch_up["delta"].startswith("w0 w1 ")
    rest = await tab_b.until("stream.end")
    full = " ".join(f"w{i}" for i in range(60))
    assert reply_text([catch_up, *rest]) == full
    assert reply_text(head + await tab_a.until("stream.end")) == full
    await tab_a.close()
    await tab_b.close()


async def test_closing_the_tab_does_not_stop_the_reply() -> None:
    user = await make_user("ed")
    sock = await connect(user)
    await sock.send(
        {"type": "chat.send", "conversation": None, "content": "[[slow 10]] [[long 40]]"}
    )
    conv = (await sock.until("stream.start"))[0]["conversation"]
    await sock.close()
    for _ in range(100):
        rows = await messages_of(conv)
        if rows[-1].status != "streaming":
            break
        await asyncio.sleep(0.05)
    assert rows[-1].status == "complete"
    assert rows[-1].content == " ".join(f"w{i}" for i in range(40))
    again = await connect(user)
    await again.send({"type": "chat.subscribe", "conversation": conv})
    assert (await again.recv())["streaming"] is False
    await again.close()


async def test_stop_cancels_within_a_second_and_keeps_the_text() -> None:
    user = await make_user("fa")
    sock, other_tab = await connect(user), await connect(user)
    await sock.send(
        {"type": "chat.send", "conversation": None, "content": "[[slow 30]] [[long 500]]"}
    )
    head = await sock.until("stream.delta")
    conv = head[0]["conversation"]
    loop = asyncio.get_running_loop()
    asked = loop.time()
    await other_tab.send({"type": "chat.stop", "conversation": conv})  # any of the owner's tabs
    frames = head + await sock.until("stream.end")
    assert loop.time() - asked < 1.0
    end = frames[-1]
    assert end["finish_reason"] == "cancelled"
    rows = await messages_of(conv)
    assert rows[-1].status == "cancelled"
    assert rows[-1].content == reply_text(frames) != ""
    assert len(rows[-1].content.split()) < 500
    await sock.close()
    await other_tab.close()


async def test_regenerate_keeps_the_earlier_version() -> None:
    sock = await connect(await make_user("gu"))
    frames = await chat(sock, "hello")
    conv = only(frames, "conversation.created")["conversation"]
    old_reply = only(frames, "stream.start")["message"]
    await sock.send({"type": "chat.regenerate", "conversation": conv})
    again = await sock.until("stream.end")
    start = only(again, "stream.start")
    assert start["message"] != old_reply and start["replaces"] == old_reply
    assert reply_text(again) == "You said: hello (turn 1)"
    rows = await messages_of(conv)
    assert [(m.role, m.superseded, m.status) for m in rows] == [
        ("user", False, "complete"),
        ("assistant", True, "complete"),
        ("assistant", False, "complete"),
    ]
    assert str(rows[2].replaces_id) == old_reply
    await sock.close()


async def test_edit_answers_anew_and_later_turns_leave_the_context() -> None:
    sock = await connect(await make_user("hu"))
    frames = await chat(sock, "first question")
    conv = only(frames, "conversation.created")["conversation"]
    first_id = only(frames, "message.saved")["message"]["id"]
    await chat(sock, "second question", conv)
    await sock.send(
        {
            "type": "chat.edit",
            "conversation": conv,
            "message": first_id,
            "content": "better first",
            "client_id": "e1",
        }
    )
    edited = await sock.until("stream.end")
    saved = only(edited, "message.saved")
    assert saved["message"]["replaces"] == first_id and saved["client_id"] == "e1"
    assert reply_text(edited) == "You said: better first (turn 1)"  # later turns left the context
    rows = await messages_of(conv)
    current = [(m.role, m.content) for m in rows if not m.superseded]
    assert current == [("user", "better first"), ("assistant", "You said: better first (turn 1)")]
    assert len(rows) == 6  # nothing deleted: kept for review
    await sock.close()


async def test_a_second_send_while_streaming_is_busy() -> None:
    sock = await connect(await make_user("iv"))
    await sock.send(
        {"type": "chat.send", "conversation": None, "content": "[[slow 30]] [[long 200]]"}
    )
    conv = (await sock.until("stream.start"))[0]["conversation"]
    await sock.send(
        {"type": "chat.send", "conversation": conv, "content": "again", "client_id": "x2"}
    )
    await sock.send({"type": "chat.regenerate", "conversation": conv})
    errors = []
    while len(errors) < 2:
        frame = await sock.recv()
        if frame["type"] == "error":
            errors.append(frame)
    assert [e["code"] for e in errors] == ["busy", "busy"]
    assert errors[0]["client_id"] == "x2"
    rows = await messages_of(conv)
    assert [m.content for m in rows if m.role == "user"] == [
        "[[slow 30]] [[long 200]]"
    ]  # nothing half-saved
    await sock.send({"type": "chat.stop", "conversation": conv})
    await sock.until("stream.end")
    await sock.close()


# --- errors -------------------------------------------------------------------------------

BAD_FRAMES: list[str] = [
    "not json",
    " ",
    "[]",
    "42",
    "null",
    '"chat.send"',
    "{}",
    '{"type": 5}',
    '{"type": "chat.launch"}',
    '{"type": "chat.send"}',
    '{"type": "chat.send", "conversation": null}',
    '{"type": "chat.send", "conversation": null, "content": 7}',
    '{"type": "chat.send", "conversation": null, "content": "   "}',
    '{"type": "chat.send", "conversation": 12, "content": "hi"}',
    '{"type": "chat.send", "conversation": "not-a-uuid", "content": "hi"}',
    '{"type": "chat.send", "conversation": null, "content": "hi", "options": []}',
    '{"type": "chat.send", "conversation": null, "content": "hi", "client_id": 5}',
    '{"type": "chat.send", "conversation": null, "content": "a\\u0000b"}',
    '{"type": "chat.send", "conversation": null, "content": "\\ud800"}',
    '{"type": "chat.stop"}',
    '{"type": "chat.subscribe", "conversation": null}',
    json.dumps({"type": "chat.edit", "conversation": str(uuid.uuid4()), "content": "x"}),
    "[" * 100000,
    '{"type": "chat.send", "conversation": null, "content": "hi"',
]


async def test_malformed_frames_get_invalid_frame_and_the_socket_stays_usable() -> None:
    sock = await connect(await make_user("jo"))
    sent = 0
    while sent < 100:
        for bad in BAD_FRAMES:
            await sock.send(bad)
            frame = await sock.recv()
            assert frame["type"] == "error" and frame["code"] == "invalid_frame", (bad[:60], frame)
            assert frame["detail"]
            sent += 1
    await sock.comm.send_to(bytes_data=b"\x00\x01binary")
    assert (await sock.recv())["code"] == "invalid_frame"
    frames = await chat(sock, "still here?")
    assert reply_text(frames) == "You said: still here? (turn 1)"
    await sock.close()


async def test_too_long_content(settings: Any) -> None:
    settings.STELLARCHAT_MAX_MESSAGE_CHARS = 100
    sock = await connect(await make_user("ka"))
    await sock.send(
        {"type": "chat.send", "conversation": None, "content": "x" * 101, "client_id": "big"}
    )
    frame = await sock.recv()
    assert frame["code"] == "too_long" and frame["client_id"] == "big" and "100" in frame["detail"]
    await sock.send("{" + '"a":"' + "y" * 2_000_000 + '"}')  # far over any sane frame
    assert (await sock.recv())["code"] == "too_long"
    assert await database_sync_to_async(Message.objects.count)() == 0
    frames = await chat(sock, "x" * 100)  # exactly at the limit is fine
    assert only(frames, "stream.end")["finish_reason"] == "stop"
    await sock.close()


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"temperature": 3}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"bogus": 1}, "bogus"),
        ({"stop": [1]}, "stop"),
        ({"seed": "x"}, "seed"),
    ],
)
async def test_invalid_options(options: dict[str, Any], field: str) -> None:
    sock = await connect(await make_user("lu"))
    await sock.send(
        {"type": "chat.send", "conversation": None, "content": "hi", "options": options}
    )
    frame = await sock.recv()
    assert frame["code"] == "invalid_option" and field in frame["detail"]
    assert await database_sync_to_async(Conversation.objects.count)() == 0  # nothing half-saved
    await sock.close()


async def test_options_are_honoured() -> None:
    sock = await connect(await make_user("ma"))
    frames = await chat(sock, "[[long 50]]", options={"max_new_tokens": 5})
    assert only(frames, "stream.end")["finish_reason"] == "length"
    assert reply_text(frames) == "w0 w1 w2 w3 w4 "
    await sock.close()


async def test_backend_failure_ends_with_internal_and_keeps_partial_text() -> None:
    sock = await connect(await make_user("ne"))
    frames = await chat(sock, "[[fail]] now")
    error = only(frames, "error")
    assert error["code"] == "internal" and error["client_id"] is None
    assert frames.index(error) < len(frames) - 1  # the error comes before stream.end
    assert frames[-1]["finish_reason"] == "error"
    conv = only(frames, "conversation.created")["conversation"]
    rows = await messages_of(conv)
    assert rows[-1].status == "failed" and rows[-1].content == reply_text(frames) == "You said: "
    await sock.close()


async def test_model_that_cannot_load_is_inference_unavailable(
    settings: Any, tmp_path: Any
) -> None:
    from inference import backends

    settings.STELLARCHAT_BACKEND = "transformers"
    settings.STELLARCHAT_MODEL = str(tmp_path / "no-model-here")
    backends._instances.clear()
    try:
        sock = await connect(await make_user("ol"))
        frames = await chat(sock, "hi")
        error = only(frames, "error")
        assert (
            error["code"] == "inference_unavailable" and "no such model folder" in error["detail"]
        )
        assert frames[-1]["finish_reason"] == "error"
        rows = await messages_of(only(frames, "conversation.created")["conversation"])
        assert [m.status for m in rows] == ["complete", "failed"]  # the user turn is kept
        await sock.close()
    finally:
        backends._instances.clear()


async def test_a_stalled_model_ends_with_error(settings: Any) -> None:
    settings.STELLARCHAT_STREAM_TIMEOUT = 1
    sock = await connect(await make_user("pa"))
    await sock.send({"type": "chat.send", "conversation": None, "content": "[[slow 3000]] hi"})
    frames = await sock.until("stream.end", timeout=10)
    assert only(frames, "error")["code"] == "inference_unavailable"
    assert frames[-1]["finish_reason"] == "error"
    rows = await messages_of(frames[0]["conversation"])
    assert rows[-1].status == "failed"
    await sock.close()


async def test_sweeper_ends_replies_nobody_is_generating(settings: Any) -> None:
    from chat import replies, services

    settings.STELLARCHAT_STREAM_TIMEOUT = 1
    user = await make_user("qi")
    conv = await database_sync_to_async(factories.make_conversation)(user)
    watcher = await connect(user)
    await watcher.send({"type": "chat.subscribe", "conversation": str(conv.pk)})
    await watcher.recv()
    # A reply whose worker died before saying anything (no heartbeat, created long ago).
    _, reply = await database_sync_to_async(services.reply_request)(conversation=conv, content="hi")
    await database_sync_to_async(
        lambda: Message.objects.filter(pk=reply.pk).update(content="part")
    )()
    assert await replies.sweep(get_channel_layer(), now=reply.created_at.timestamp() + 0.5) == 0
    assert await replies.sweep(get_channel_layer(), now=reply.created_at.timestamp() + 5) == 1
    frames = await watcher.until("stream.end")
    assert only(frames, "error")["code"] == "inference_unavailable"
    rows = await messages_of(str(conv.pk))
    assert rows[-1].status == "failed" and rows[-1].content == "part"
    assert await replies.sweep(get_channel_layer(), now=reply.created_at.timestamp() + 5) == 0
    await watcher.close()


async def test_sweeper_gives_a_reply_whose_heartbeat_vanished_a_full_timeout(settings: Any) -> None:
    """Redis restarted empty in the middle of a long reply: its heartbeat is gone, but the
    worker is alive and beats again within a second. Counting the silence from the reply's
    start ended such replies under a working worker (tests/reliability row 2)."""
    from chat import replies, services

    settings.STELLARCHAT_STREAM_TIMEOUT = 1
    user = await make_user("rb")
    conv = await database_sync_to_async(factories.make_conversation)(user)
    _, reply = await database_sync_to_async(services.reply_request)(conversation=conv, content="hi")
    long_after = reply.created_at.timestamp() + 60
    layer = get_channel_layer()
    assert await replies.sweep(layer, now=long_after) == 0  # first seen without a heartbeat
    assert await replies.sweep(layer, now=long_after + 0.5) == 0
    assert await replies.sweep(layer, now=long_after + 2) == 1  # silent a whole timeout since
    rows = await messages_of(str(conv.pk))
    assert rows[-1].status == "failed"


# --- isolation and handshakes ---------------------------------------------------------------


async def test_another_user_can_neither_subscribe_nor_send_nor_stop() -> None:
    owner, intruder = await make_user("ra"), await make_user("mallory")
    sock = await connect(owner)
    await sock.send(
        {"type": "chat.send", "conversation": None, "content": "[[slow 30]] [[long 100]]"}
    )
    head = await sock.until("stream.delta")
    conv = head[0]["conversation"]
    msg = only(head, "message.saved")["message"]["id"]
    bad = await connect(intruder)
    for frame in (
        {"type": "chat.subscribe", "conversation": conv},
        {"type": "chat.send", "conversation": conv, "content": "let me in"},
        {"type": "chat.stop", "conversation": conv},
        {"type": "chat.regenerate", "conversation": conv},
        {"type": "chat.edit", "conversation": conv, "message": msg, "content": "mine now"},
        {"type": "chat.subscribe", "conversation": str(uuid.uuid4())},
    ):
        await bad.send(frame)
        answer = await bad.recv()
        assert answer == {
            "type": "error",
            "code": "not_found",
            "detail": "no such conversation",
            "client_id": None,
        }
    assert await bad.comm.receive_nothing(timeout=0.3)  # no deltas leak to the intruder
    frames = head + await sock.until("stream.end")
    assert frames[-1]["finish_reason"] == "stop"  # the intruder's stop did nothing
    assert len(reply_text(frames).split()) == 100
    rows = await messages_of(conv)
    assert [m.content for m in rows if m.role == "user"] == ["[[slow 30]] [[long 100]]"]
    await sock.close()
    await bad.close()


async def test_anonymous_handshake_is_refused() -> None:
    comm = communicator(cookie=None)
    connected, _ = await comm.connect()
    assert not connected


async def test_cross_origin_and_missing_origin_handshakes_are_refused() -> None:
    user = await make_user("sa")
    cookie = await database_sync_to_async(session_cookie)(user)
    for origin in (b"http://evil.example", b"null", None):
        comm = communicator(cookie, origin=origin)
        connected, _ = await comm.connect()
        assert not connected, origin
    comm = communicator(cookie)
    connected, _ = await comm.connect()
    assert connected
    await comm.disconnect()


async def test_json_with_unicode_is_sent_as_utf8_text() -> None:
    sock = await connect(await make_user("ta"))
    await sock.send(
        {"type": "chat.send", "conversation": None, "content": "你好 \u202eRTL", "client_id": "💬"}
    )
    raw = await sock.comm.receive_from()
    assert "你好" in raw or json.loads(raw)["type"] == "conversation.created"
    await sock.until("stream.end")
    await sock.close()


async def test_a_socket_that_lost_deltas_still_gets_every_part_exactly_once() -> None:
    """Group messages over a channel's capacity are dropped; the socket must heal the gap."""
    from chat import services, streams

    user = await make_user("ua")
    conv = await database_sync_to_async(factories.make_conversation)(user)
    _, reply = await database_sync_to_async(services.reply_request)(conversation=conv, content="q")
    c, m = str(conv.pk), str(reply.pk)
    sock = await connect(user)
    await sock.send({"type": "chat.subscribe", "conversation": c})
    await sock.until("stream.delta")  # subscribed + start + empty catch-up
    layer, group = get_channel_layer(), streams.conversation_group(c)
    await streams.set_text(m, "ab")
    await layer.group_send(group, streams.delta_frame(c, m, 0, "a"))
    # "b" at offset 1 was dropped; "c" at 2 arrives: the gap is filled from the shared state.
    await streams.set_text(m, "abc")
    await layer.group_send(group, streams.delta_frame(c, m, 2, "c"))
    # "d" is dropped too, and then the reply ends: the rest comes from the database.
    await database_sync_to_async(services.reply_finish)(
        message_id=m, content="abcd", status="complete"
    )
    await layer.group_send(
        group,
        {
            "type": "stream.end",
            "conversation": c,
            "message": m,
            "finish_reason": "stop",
            "usage": {"prompt_tokens": 1, "completion_tokens": 4},
            "timings": {"ttft_ms": None, "tokens_per_second": None},
            "length": 4,
        },
    )
    frames = await sock.until("stream.end")
    assert [(f["offset"], f["delta"]) for f in frames if f["type"] == "stream.delta"] == [
        (0, "a"),
        (1, "b"),
        (2, "c"),
        (3, "d"),
    ]
    assert "length" not in frames[-1]  # internal, not part of the protocol
    await sock.close()


async def test_sweeper_tells_a_reply_no_worker_took_from_one_whose_worker_died(
    settings: Any,
) -> None:
    """Queued too long (every worker busy, or none running) is not "the worker stopped
    answering": the person is told the server is busy and to try again."""
    from chat import replies, services, streams

    settings.STELLARCHAT_STREAM_TIMEOUT = 1
    user = await make_user("rq")
    conv = await database_sync_to_async(factories.make_conversation)(user)
    watcher = await connect(user)
    await watcher.send({"type": "chat.subscribe", "conversation": str(conv.pk)})
    await watcher.recv()
    _, queued = await database_sync_to_async(services.reply_request)(
        conversation=conv, content="a", model_name="big"
    )
    assert not await streams.claimed(queued.pk)
    first_seen = queued.created_at.timestamp() + 5  # no heartbeat: the clock starts here
    assert await replies.sweep(get_channel_layer(), now=first_seen) == 0
    assert await replies.sweep(get_channel_layer(), now=first_seen + 2) == 1
    error = only(await watcher.until("stream.end"), "error")
    assert error["code"] == "inference_unavailable"
    assert "no inference worker took this reply" in error["detail"]
    assert "serving the model 'big'" in error["detail"]  # the one nobody serves
    _, taken = await database_sync_to_async(services.reply_request)(conversation=conv, content="b")
    assert await streams.claim(taken.pk)  # a worker took it, then died before any text
    assert await replies.sweep(get_channel_layer(), now=first_seen) == 0
    assert await replies.sweep(get_channel_layer(), now=first_seen + 2) == 1
    error = only(await watcher.until("stream.end"), "error")
    assert "stopped answering" in error["detail"]
    await watcher.close()


async def test_stop_leaves_a_live_workers_reply_to_that_worker(monkeypatch: Any) -> None:
    """The web side ends a stopped reply itself only when no live worker is generating it
    (queued, or its worker went silent): ending it under a live worker that still publishes
    showed people text that was never saved."""
    from chat import actions, services, streams

    monkeypatch.setattr(actions, "STOP_GRACE", 0.2)
    user = await make_user("sl")
    conv = await database_sync_to_async(factories.make_conversation)(user)
    _, reply = await database_sync_to_async(services.reply_request)(conversation=conv, content="x")
    await streams.claim(reply.pk)
    layer = get_channel_layer()
    fallback = asyncio.create_task(actions._stop_fallback(layer, conv.pk, reply.pk))
    for _ in range(6):  # a live worker beats while it winds down: the fallback waits
        await streams.beat(reply.pk)
        await asyncio.sleep(0.1)
    assert not fallback.done()
    assert (await messages_of(str(conv.pk)))[-1].status == "streaming"
    await streams.set_text(reply.pk, "so far")  # then the worker goes silent
    await asyncio.wait_for(fallback, timeout=5)
    row = (await messages_of(str(conv.pk)))[-1]
    assert (row.status, row.content) == ("cancelled", "so far")

    _, queued = await database_sync_to_async(services.reply_request)(conversation=conv, content="y")
    await asyncio.wait_for(actions._stop_fallback(layer, conv.pk, queued.pk), timeout=1.0)
    assert (await messages_of(str(conv.pk)))[-1].status == "cancelled"  # nobody took it: at once


async def test_a_reply_queued_past_the_timeout_ends_as_busy_and_loses_nothing(
    settings: Any,
) -> None:
    """Overload: the model is busy with someone else's long reply (the test backend runs one
    at a time), so a new reply waits for a place. Past the stall timeout it ends with a clear
    "busy" error instead of waiting on; the user's turn is kept, and the long reply is unharmed."""
    settings.STELLARCHAT_STREAM_TIMEOUT = 1
    busy, waiting = await connect(await make_user("ov")), await connect(await make_user("ow"))
    await busy.send(
        {"type": "chat.send", "conversation": None, "content": "[[slow 40]] [[long 60]]"}
    )
    head = await busy.until("stream.delta")
    await waiting.send({"type": "chat.send", "conversation": None, "content": "hello?"})
    frames = await waiting.until("stream.end", timeout=10)
    error = only(frames, "error")
    assert error["code"] == "inference_unavailable" and "busy" in error["detail"]
    rows = await messages_of(frames[0]["conversation"])
    assert [(m.role, m.status, m.content) for m in rows] == [
        ("user", "complete", "hello?"),
        ("assistant", "failed", ""),
    ]
    long_reply = head + await busy.until("stream.end", timeout=20)
    assert long_reply[-1]["finish_reason"] == "stop"
    assert len(reply_text(long_reply).split()) >= 50
    await busy.close()
    await waiting.close()


async def test_a_reply_s_frames_never_wait_for_the_database_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """channels hops to the database thread before every message a consumer handles; a reply's
    deltas (many a second for every socket) and the worker's jobs (each on its first token's
    path) must not queue behind database work there. Both consumers' own database calls still
    close stale connections (database_sync_to_async)."""
    import inspect

    import channels.consumer

    hops = []  # the consumer classes that hopped

    async def counted() -> None:
        hops.append(type(inspect.stack()[1].frame.f_locals["self"]).__name__)

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted)
    user = await make_user("nohop")
    sock = await connect(user)
    frames = await chat(sock, "[[slow 5]] [[long 40]]")
    assert len([f for f in frames if f["type"] == "stream.delta"]) > 1
    assert hops == []  # neither the socket nor the embedded worker taking the job
    await sock.close()


async def test_every_socket_of_a_process_catches_up_on_the_same_stream_end() -> None:
    """channels-redis hands one event dict to all of a process's sockets in the group (checked
    below against real Redis); each socket that missed the reply's tail must get it from the
    saved text, so no socket may change the event for the next."""
    from channels_redis.core import RedisChannelLayer

    from chat.consumers import ChatConsumer
    from chat.streams import Reconciler

    user = await make_user("dee")
    conv = await database_sync_to_async(factories.make_conversation)(user)
    reply = await database_sync_to_async(factories.make_message)(
        conv, role="assistant", content="the whole saved reply"
    )
    conversation, msg = str(conv.pk), str(reply.pk)

    layer = RedisChannelLayer(hosts=["redis://127.0.0.1:6379/5"])
    try:
        first, second = await layer.new_channel(), await layer.new_channel()
        for channel in (first, second):
            await layer.group_add("dee", channel)
        event = {"type": "stream.end", "conversation": conversation, "message": msg}
        await layer.group_send("dee", {**event, "length": 21})
        got = [await layer.receive(first), await layer.receive(second)]
        assert got[0] is got[1]  # one dict for both sockets: why the consumer must not mutate it
    finally:
        await layer.flush()

    heard: list[list[dict[str, Any]]] = []
    for _ in range(2):
        socket = ChatConsumer()
        socket.reconciler = Reconciler()
        socket.reconciler.start(msg)
        socket.reconciler.snapshot(msg, "the whole")  # it saw the first 9 characters
        frames: list[dict[str, Any]] = []

        async def send_json(content: Any, close: bool = False, frames: list = frames) -> None:
            frames.append(json.loads(json.dumps(content)))

        socket.send_json = send_json  # type: ignore[method-assign]
        await socket.stream_end(got[0])
        heard.append(frames)
    for frames in heard:
        assert [f["type"] for f in frames] == ["stream.delta", "stream.end"]
        assert frames[0]["offset"] == 9 and frames[0]["delta"] == " saved reply"
        assert "length" not in frames[1]
    assert got[0]["length"] == 21
