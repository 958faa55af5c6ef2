"""Per-user limits over the chat WebSocket (messages per minute, concurrent streams, tokens per
day), one window shared with the REST API, and chat.limits itself (including the window kept
in Redis when a Redis channel layer is configured)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from asgiref.sync import ThreadSensitiveContext
from channels.db import database_sync_to_async
from django.test import AsyncClient

from chat import limits
from chat.models import Conversation, Message
from tests import factories, services
from tests.chat.wsclient import Socket, connect, reply_text

make_user = factories.amake_user


@database_sync_to_async
def counts() -> tuple[int, int]:
    return Conversation.objects.count(), Message.objects.count()


@database_sync_to_async
def snapshot(conversation: str) -> list[tuple[Any, ...]]:
    return list(
        Message.objects.filter(conversation_id=conversation)
        .order_by("position")
        .values_list("role", "content", "status", "superseded")
    )


async def chat(sock: Socket, content: str, conversation: str | None = None) -> list[dict]:
    """Send and read to the end (a new conversation's title announcements too)."""
    await sock.send({"type": "chat.send", "conversation": conversation, "content": content})
    frames = await sock.until("stream.end")
    if conversation is None:
        frames += await settle(sock)
    return frames


def end_of(frames: list[dict[str, Any]]) -> dict[str, Any]:
    return next(f for f in frames if f["type"] == "stream.end")


async def settle(sock: Socket) -> list[dict[str, Any]]:
    """Read the title announcements that follow a new conversation's first reply (the socket
    is in both the conversation's and the user's group, so it may hear one twice)."""
    frames = []
    while not await sock.comm.receive_nothing(timeout=0.15):
        frame = await sock.recv()
        assert frame["type"] == "conversation.updated", frame
        frames.append(frame)
    return frames


async def refused(sock: Socket, frame: dict[str, Any]) -> dict[str, Any]:
    """Send a frame that a limit refuses: one error frame answers it, and nothing else."""
    await sock.send(frame)
    error = await sock.recv()
    assert error["type"] == "error" and error["code"] == "rate_limited", error
    assert isinstance(error["retry_after"], int) and not isinstance(error["retry_after"], bool)
    assert error["retry_after"] >= 1
    assert error["client_id"] == frame.get("client_id")
    if not await sock.comm.receive_nothing(timeout=0.2):  # no stream.start, no message.saved
        raise AssertionError(f"unexpected frame after the refusal: {await sock.recv()}")
    return error


# --- messages per minute ------------------------------------------------------------------


@pytest.mark.usefixtures("fresh_layer")
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_per_minute_limit_refuses_a_send_and_saves_nothing(settings: Any) -> None:
    settings.STELLARCHAT_RATE_LIMIT_PER_MINUTE = 2
    sock = await connect(await make_user("ada"))
    first = await chat(sock, "one")
    conv = first[0]["conversation"]
    await chat(sock, "two", conv)
    before, rows = await counts(), await snapshot(conv)

    error = await refused(
        sock, {"type": "chat.send", "conversation": conv, "content": "three", "client_id": "c-3"}
    )
    assert error["retry_after"] <= 60
    assert await snapshot(conv) == rows
    # A send that would have created a conversation leaves no empty one behind.
    await refused(
        sock, {"type": "chat.send", "conversation": None, "content": "new", "client_id": "c-4"}
    )
    assert await counts() == before
    await sock.close()


@pytest.mark.usefixtures("fresh_layer")
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_regenerate_and_edit_count_against_the_same_window(settings: Any) -> None:
    settings.STELLARCHAT_RATE_LIMIT_PER_MINUTE = 3
    sock = await connect(await make_user("bo"))
    frames = await chat(sock, "question")
    conv = frames[0]["conversation"]
    user_turn = next(f for f in frames if f["type"] == "message.saved")["message"]["id"]
    await sock.send({"type": "chat.regenerate", "conversation": conv})  # 2nd
    await sock.until("stream.end")
    await sock.send(
        {"type": "chat.edit", "conversation": conv, "message": user_turn, "content": "better"}
    )  # 3rd
    edited = await sock.until("stream.end")
    assert reply_text(edited) == "You said: better (turn 1)"
    rows = await snapshot(conv)

    await refused(sock, {"type": "chat.regenerate", "conversation": conv, "client_id": "r"})
    new_turn = next(f for f in edited if f["type"] == "message.saved")["message"]["id"]
    await refused(
        sock,
        {
            "type": "chat.edit",
            "conversation": conv,
            "message": new_turn,
            "content": "best",
            "client_id": "e",
        },
    )
    await refused(sock, {"type": "chat.send", "conversation": conv, "content": "more"})
    assert await snapshot(conv) == rows  # nothing superseded, nothing added
    await sock.close()


@pytest.mark.usefixtures("fresh_layer")
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_window_is_per_user(settings: Any) -> None:
    settings.STELLARCHAT_RATE_LIMIT_PER_MINUTE = 1
    first, second = await connect(await make_user("cy")), await connect(await make_user("di"))
    await chat(first, "one")
    await refused(first, {"type": "chat.send", "conversation": None, "content": "two"})
    assert reply_text(await chat(second, "mine")) == "You said: mine (turn 1)"
    await first.close()
    await second.close()


@pytest.mark.usefixtures("fresh_layer")
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_stop_and_subscribe_are_not_counted(settings: Any) -> None:
    settings.STELLARCHAT_RATE_LIMIT_PER_MINUTE = 1
    sock = await connect(await make_user("ed"))
    frames = await chat(sock, "one")
    conv = frames[0]["conversation"]
    for _ in range(3):
        await sock.send({"type": "chat.subscribe", "conversation": conv})
        assert (await sock.recv())["type"] == "subscribed"
        await sock.send({"type": "chat.stop", "conversation": conv})
    assert await sock.comm.receive_nothing(timeout=0.2)
    await sock.close()


@pytest.mark.usefixtures("fresh_layer")
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_rest_and_websocket_share_one_window(settings: Any) -> None:
    settings.STELLARCHAT_RATE_LIMIT_PER_MINUTE = 2
    user = await make_user("fa")
    _, plain = await database_sync_to_async(factories.make_api_key)(user)
    body = {"model": "stellarchat-test", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(2):
        async with ThreadSensitiveContext():  # as Django's ASGIHandler serves a request
            response = await AsyncClient().post(
                "/v1/chat/completions",
                json.dumps(body),
                content_type="application/json",
                headers={"authorization": f"Bearer {plain}"},
            )
        assert response.status_code == 200, response.content
    sock = await connect(user)
    before = await counts()
    await refused(sock, {"type": "chat.send", "conversation": None, "content": "hi"})
    assert await counts() == before
    await sock.close()


# --- concurrent streams ---------------------------------------------------------------------


@pytest.mark.usefixtures("fresh_layer")
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_concurrent_streams_are_limited_across_conversations(settings: Any) -> None:
    settings.STELLARCHAT_MAX_CONCURRENT_STREAMS = 1
    user = await make_user("gu")
    older = await database_sync_to_async(factories.make_conversation)(user, turns=1)
    sock = await connect(user)
    await sock.send(
        {"type": "chat.send", "conversation": None, "content": "[[slow 20]] [[long 300]]"}
    )
    conv = (await sock.until("stream.delta"))[0]["conversation"]
    before, older_rows = await counts(), await snapshot(str(older.pk))

    other_tab = await connect(user)  # quiet: it follows no streaming conversation
    error = await refused(
        other_tab,
        {"type": "chat.send", "conversation": None, "content": "new", "client_id": "n"},
    )
    assert "1" in error["detail"]
    await refused(
        other_tab,
        {"type": "chat.send", "conversation": str(older.pk), "content": "x", "client_id": "o"},
    )
    await refused(other_tab, {"type": "chat.regenerate", "conversation": str(older.pk)})
    assert await counts() == before
    assert await snapshot(str(older.pk)) == older_rows
    # Another user is not limited (their reply waits for the inference thread, so stop ours).
    stranger = await connect(await make_user("ha"))
    await stranger.send({"type": "chat.send", "conversation": None, "content": "mine"})
    started = await stranger.until("stream.start")
    assert not [f for f in started if f["type"] == "error"]
    await sock.send({"type": "chat.stop", "conversation": conv})
    await sock.until("stream.end")
    assert reply_text(await stranger.until("stream.end")) == "You said: mine (turn 1)"
    frames = await chat(other_tab, "now it fits", str(older.pk))  # the slot is free again
    assert end_of(frames)["finish_reason"] == "stop"
    for s in (sock, other_tab, stranger):
        await s.close()


# --- tokens per day -----------------------------------------------------------------------


@pytest.mark.usefixtures("fresh_layer")
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_daily_token_quota(settings: Any) -> None:
    settings.STELLARCHAT_TOKENS_PER_DAY = 10
    user = await make_user("io")
    sock = await connect(user)
    frames = await chat(sock, "[[long 12]]")
    usage = end_of(frames)["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] > 10
    conv = frames[0]["conversation"]
    before = await counts()
    error = await refused(
        sock, {"type": "chat.send", "conversation": conv, "content": "more", "client_id": "q"}
    )
    assert abs(error["retry_after"] - limits.seconds_to_midnight_utc()) <= 5
    assert "00:00 UTC" in error["detail"]
    await refused(sock, {"type": "chat.send", "conversation": None, "content": "new"})
    await refused(sock, {"type": "chat.regenerate", "conversation": conv})
    assert await counts() == before
    stranger = await connect(await make_user("ju"))
    assert end_of(await chat(stranger, "mine"))["finish_reason"] == "stop"
    await sock.close()
    await stranger.close()


@pytest.mark.usefixtures("fresh_layer")
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_yesterdays_tokens_do_not_count(settings: Any) -> None:
    settings.STELLARCHAT_TOKENS_PER_DAY = 10
    user = await make_user("ka")
    sock = await connect(user)
    frames = await chat(sock, "[[long 12]]")
    reply = end_of(frames)["message"]
    await Message.objects.filter(pk=reply).aupdate(created_at=datetime(2020, 1, 1, tzinfo=UTC))
    assert end_of(await chat(sock, "today"))["finish_reason"] == "stop"
    await sock.close()


@pytest.mark.usefixtures("fresh_layer")
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_zero_turns_the_websocket_limits_off(settings: Any) -> None:
    settings.STELLARCHAT_RATE_LIMIT_PER_MINUTE = 0
    settings.STELLARCHAT_MAX_CONCURRENT_STREAMS = 0
    settings.STELLARCHAT_TOKENS_PER_DAY = 0
    sock = await connect(await make_user("lu"))
    assert end_of(await chat(sock, "[[long 40]]"))["usage"]["completion_tokens"] == 40
    await sock.send(
        {"type": "chat.send", "conversation": None, "content": "[[slow 10]] [[long 30]]"}
    )
    await sock.until("stream.start")
    ends = 0
    for i in range(5):  # five more conversations while the first still streams
        await sock.send({"type": "chat.send", "conversation": None, "content": f"c{i}"})
    while ends < 6:
        frame = await sock.recv()
        assert frame["type"] != "error", frame
        ends += frame["type"] == "stream.end"
    await sock.close()


# --- chat.limits ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "seconds"),
    [
        (datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC), 1),
        (datetime(2026, 3, 1, 23, 59, 59, 900_000, tzinfo=UTC), 1),
        (datetime(2026, 3, 1, 0, 0, 0, tzinfo=UTC), 86_400),
        (datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC), 43_200),
        (datetime(2024, 2, 28, 23, 0, 0, tzinfo=UTC), 3_600),  # leap year: into Feb 29
        (datetime(2026, 12, 31, 23, 30, 0, tzinfo=UTC), 1_800),  # into the next year
    ],
)
def test_seconds_to_midnight_utc(now: datetime, seconds: int) -> None:
    assert limits.seconds_to_midnight_utc(now) == seconds


def test_seconds_to_midnight_utc_now_is_within_a_day() -> None:
    assert 1 <= limits.seconds_to_midnight_utc() <= 86_400


@pytest.mark.asyncio
async def test_hit_message_rate_counts_down_then_refuses(settings: Any) -> None:
    settings.STELLARCHAT_RATE_LIMIT_PER_MINUTE = 3
    states = [await limits.hit_message_rate(7001) for _ in range(3)]
    assert [s.remaining for s in states if s] == [2, 1, 0]
    assert all(s is not None and s.limit == 3 and 1 <= s.reset_after <= 60 for s in states)
    with pytest.raises(limits.RateLimited) as info:
        await limits.hit_message_rate(7001)
    assert info.value.limit == "rate" and 1 <= info.value.retry_after <= 60
    assert "3" in info.value.detail
    other = await limits.hit_message_rate(7002)  # another user's window
    assert other is not None and other.remaining == 2


@pytest.mark.asyncio
async def test_hit_message_rate_is_off_at_zero(settings: Any) -> None:
    settings.STELLARCHAT_RATE_LIMIT_PER_MINUTE = 0
    assert [await limits.hit_message_rate(7003) for _ in range(100)] == [None] * 100


async def quiet_hits(user_id: int, count: int) -> tuple[list[Any], int]:
    """``count`` unreported hits; also how often the window's state was read meanwhile."""
    limiter = limits.window_limiter()
    reads = 0
    read = limiter.get_window_stats

    async def counted(*args: Any) -> Any:
        nonlocal reads
        reads += 1
        return await read(*args)

    limiter.get_window_stats = counted  # type: ignore[method-assign]
    try:
        return [await limits.hit_message_rate(user_id, report=False) for _ in range(count)], reads
    finally:
        del limiter.get_window_stats


async def unreported_hits_count_and_refuse(settings: Any, user_id: int) -> None:
    settings.STELLARCHAT_RATE_LIMIT_PER_MINUTE = 3
    states, reads = await quiet_hits(user_id, 3)
    assert states == [None] * 3 and reads == 0  # allowed: the window is not read back
    with pytest.raises(limits.RateLimited) as info:
        await quiet_hits(user_id, 1)
    assert info.value.limit == "rate" and 1 <= info.value.retry_after <= 60  # refused: it is
    reported = await limits.hit_message_rate(user_id + 1)  # others' windows: untouched
    assert reported is not None and reported.remaining == 2


@pytest.mark.asyncio
async def test_an_unreported_hit_counts_and_refuses_without_reading_the_window(
    settings: Any,
) -> None:
    await unreported_hits_count_and_refuse(settings, 7011)


def test_rate_limited_retry_after_is_at_least_one() -> None:
    assert limits.RateLimited("rate", "x", retry_after=0).retry_after == 1
    assert limits.RateLimited("rate", "x", retry_after=-5).retry_after == 1


REDIS_DB = 8


@pytest.fixture
def redis_layer(settings: Any) -> Any:
    """A Redis channel layer setting on a database of its own, emptied before and after."""
    yield from services.redis_channel_layer(settings, REDIS_DB)


def hit_in_a_new_loop(user_id: int) -> limits.RateState | None:
    """One hit from a fresh event loop, so a fresh limiter and storage connection."""
    return asyncio.run(limits.hit_message_rate(user_id))


@pytest.mark.redis
def test_with_redis_the_window_is_shared_across_event_loops(
    settings: Any, redis_layer: Any
) -> None:
    settings.STELLARCHAT_RATE_LIMIT_PER_MINUTE = 2
    first, second = hit_in_a_new_loop(8001), hit_in_a_new_loop(8001)
    assert first is not None and second is not None
    assert (first.remaining, second.remaining) == (1, 0)
    with pytest.raises(limits.RateLimited):
        hit_in_a_new_loop(8001)
    stored = [key.decode() for key in redis_layer.keys("*")]
    assert stored and all(key.startswith("stellarchat-limits") for key in stored)
    assert any("8001" in key for key in stored)
    assert hit_in_a_new_loop(8002) is not None  # per user there too


def test_without_redis_each_event_loop_counts_alone(settings: Any) -> None:
    """The control for the test above: the in-memory window is per process (per loop)."""
    settings.STELLARCHAT_RATE_LIMIT_PER_MINUTE = 1
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"].endswith(".InMemoryChannelLayer")
    assert hit_in_a_new_loop(8101) is not None
    assert hit_in_a_new_loop(8101) is not None


@pytest.mark.redis
def test_with_redis_an_unreported_hit_counts_and_refuses_without_reading_the_window(
    settings: Any, redis_layer: Any
) -> None:
    asyncio.run(unreported_hits_count_and_refuse(settings, 8201))
    assert any("8201" in key.decode() for key in redis_layer.keys("*"))
