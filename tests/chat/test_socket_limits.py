"""The chat socket's abuse limits, in process: the frame bucket by its clock (it runs inside
daphne's protocol, so frames per socket are tested through real daphne processes only), the
socket limit through the real ASGI application (consumer, embedded worker), and the
cross-process socket count in a real Redis (two "processes" told apart by their id). All of
them through real daphne processes: tests/reliability/test_abuse_live.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async

from chat import socket_limits
from stellarchat import config
from stellarchat.wsserver import FrameBucket
from tests import factories, services
from tests.chat.wsclient import communicator, connect, session_cookie

REDIS_DB = 4


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- the bucket ----------------------------------------------------------------------------


def test_it_lets_a_burst_through_then_the_rate() -> None:
    clock = Clock()
    bucket = FrameBucket(20, 100, clock=clock)
    assert all(bucket.take() is None for _ in range(100))
    refusal = bucket.take()
    assert refusal is not None and refusal.retry_after == 1 and refusal.notify and refusal.first
    clock.now += 0.5  # 10 frames' worth
    assert [bucket.take() is None for _ in range(11)] == [True] * 10 + [False]


def test_it_answers_at_most_one_refusal_a_second() -> None:
    clock = Clock()
    bucket = FrameBucket(1, 1, clock=clock)
    bucket.take()
    notices = []
    for _ in range(30):  # 3 s of refusals, 10 a second
        refusal = bucket.take()
        if refusal is not None:
            notices.append(refusal.notify)
        clock.now += 0.1
    assert sum(notices) == 3, notices


def test_it_closes_a_socket_that_keeps_going_even_while_the_refill_lets_some_through() -> None:
    clock = Clock()
    bucket = FrameBucket(20, 100, clock=clock)
    closed_at = None
    passed = 0
    for step in range(12_000):  # 1,000 frames a second for 12 s
        refusal = bucket.take()
        passed += refusal is None
        if refusal is not None and refusal.close:
            closed_at = clock.now - 100.0
            break
        clock.now += 0.001 if step else 0.0
    assert closed_at is not None and 10.0 <= closed_at < 10.2, closed_at
    assert passed <= 100 + 20 * 10.2 + 1


def test_it_forgives_a_client_that_slows_down() -> None:
    clock = Clock()
    bucket = FrameBucket(2, 2, clock=clock)
    for _ in range(10):  # 30 s, bursting 4 frames every 3 s: refused each time, never closed
        refusals = [bucket.take() for _ in range(4)]
        assert not any(r is not None and r.close for r in refusals)
        assert any(r is not None and r.first for r in refusals)  # each spell is a new one
        clock.now += 3.0


def test_the_variables_are_read_and_refused_when_bad(tmp_path: Any) -> None:
    env = {"DJANGO_DEBUG": "1", "STELLARCHAT_DATA_DIR": str(tmp_path)}
    loaded = config.load(env, base_dir=tmp_path)
    assert (loaded.ws_frames_per_second, loaded.ws_frame_burst) == (20, 100)
    assert (loaded.max_sockets_per_user, loaded.ws_handshakes_per_minute) == (30, 60)
    assert loaded.ws_send_buffer_kb == 1024
    for name, bad in [
        ("STELLARCHAT_WS_FRAMES_PER_SECOND", "fast"),
        ("STELLARCHAT_WS_FRAME_BURST", "0"),
        ("STELLARCHAT_MAX_SOCKETS_PER_USER", "-1"),
        ("STELLARCHAT_WS_HANDSHAKES_PER_MINUTE", "1e9"),
        ("STELLARCHAT_WS_SEND_BUFFER_KB", "1 MB"),
    ]:
        with pytest.raises(config.ConfigError, match=name):
            config.load({**env, name: bad}, base_dir=tmp_path)


def test_the_handshake_address_trusts_forwarded_for_only_as_far_as_configured(
    settings: Any,
) -> None:
    scope = {"client": ["10.0.0.9", 5000], "headers": [(b"x-forwarded-for", b"6.6.6.6, 1.2.3.4")]}
    settings.STELLARCHAT_TRUSTED_PROXIES = 0
    assert socket_limits.handshake_address(scope) == "10.0.0.9"
    settings.STELLARCHAT_TRUSTED_PROXIES = 1
    assert socket_limits.handshake_address(scope) == "1.2.3.4"
    assert socket_limits.handshake_address({"headers": []}) == "unknown"


@pytest.mark.asyncio
async def test_handshakes_are_counted_per_address(settings: Any) -> None:
    settings.STELLARCHAT_WS_HANDSHAKES_PER_MINUTE = 3
    assert [(await socket_limits.handshake_allowed("a"))[0] for _ in range(4)] == [True] * 3 + [
        False
    ]
    allowed, retry_after = await socket_limits.handshake_allowed("a")
    assert not allowed and 1 <= retry_after <= 60
    assert (await socket_limits.handshake_allowed("b"))[0]
    settings.STELLARCHAT_WS_HANDSHAKES_PER_MINUTE = 0
    assert (await socket_limits.handshake_allowed("a"))[0]


# --- through the application ---------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fresh_layer")
async def test_a_person_gets_so_many_sockets_and_the_next_is_closed_with_4429(
    settings: Any,
) -> None:
    settings.STELLARCHAT_MAX_SOCKETS_PER_USER = 2
    user = await factories.amake_user("tabs")
    first, second = await connect(user), await connect(user)
    cookie = await database_sync_to_async(session_cookie)(user)
    third = communicator(cookie)
    connected, _ = await third.connect()
    assert connected  # accepted, then closed with a code the page can tell apart
    assert (await third.receive_output(timeout=5)) == {"type": "websocket.close", "code": 4429}
    # The open ones are untouched.
    await first.send({"type": "chat.send", "conversation": None, "content": "still here"})
    assert (await first.until("stream.end"))[-1]["finish_reason"] == "stop"
    # Another person is not affected, and a closed socket frees its place.
    other = await connect(await factories.amake_user("someone"))
    await second.close()
    again = await connect(user)
    await asyncio.gather(first.close(), again.close(), other.close())
    assert socket_limits._mine.get(user.pk, 0) == 0


# --- across processes, in Redis ------------------------------------------------------------


@pytest.fixture
def redis_slots(settings: Any) -> Any:
    settings.STELLARCHAT_MAX_SOCKETS_PER_USER = 3
    yield from services.redis_channel_layer(settings, REDIS_DB)


def as_process(monkeypatch: pytest.MonkeyPatch, name: str, mine: dict[int, int]) -> None:
    """Be another web process: its id and its own sockets in memory."""
    from collections import Counter

    monkeypatch.setattr(socket_limits, "PROCESS_ID", name)
    monkeypatch.setattr(socket_limits, "_mine", Counter(mine))


@pytest.mark.asyncio
@pytest.mark.redis
async def test_sockets_are_counted_across_processes_and_a_dead_ones_slots_heal(
    redis_slots: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    a: dict[int, int] = {}
    b: dict[int, int] = {}
    as_process(monkeypatch, "web-a", a)
    assert await socket_limits.socket_acquire(user_id=7)
    assert await socket_limits.socket_acquire(user_id=7)
    a = dict(socket_limits._mine)
    as_process(monkeypatch, "web-b", b)
    assert await socket_limits.socket_acquire(user_id=7)
    assert not await socket_limits.socket_acquire(user_id=7)  # 2 on a + 1 on b
    assert await socket_limits.socket_acquire(user_id=8)  # per person
    assert dict(socket_limits._mine) == {7: 1, 8: 1}
    # One closes on b: room again, from either process.
    await socket_limits.socket_release(user_id=7)
    as_process(monkeypatch, "web-a", a)
    assert await socket_limits.socket_acquire(user_id=7)
    assert not await socket_limits.socket_acquire(user_id=7)
    # web-a dies: nothing renews its hash, so its slots go with its lease.
    redis_slots.expire(f"{socket_limits.PREFIX}process:web-a", 1)
    await asyncio.sleep(1.2)
    as_process(monkeypatch, "web-b", {8: 1})
    assert await socket_limits.socket_acquire(user_id=7)
    assert redis_slots.smembers(socket_limits.PROCESSES) == {b"web-b"}


@pytest.mark.asyncio
@pytest.mark.redis
async def test_the_heartbeat_puts_the_counts_back_after_redis_lost_them(
    redis_slots: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_process(monkeypatch, "web-a", {})
    for _ in range(3):
        assert await socket_limits.socket_acquire(user_id=5)
    redis_slots.flushdb()  # a Redis restart
    as_process(monkeypatch, "web-b", {})
    assert await socket_limits.socket_acquire(user_id=5)  # web-a's sockets are forgotten...
    await socket_limits.socket_release(user_id=5)
    as_process(monkeypatch, "web-a", {5: 3})
    await socket_limits._rewrite(socket_limits._redis(socket_limits.shared_redis_url()))
    assert redis_slots.hgetall(f"{socket_limits.PREFIX}process:web-a") == {b"5": b"3"}
    assert 0 < redis_slots.ttl(f"{socket_limits.PREFIX}process:web-a") <= socket_limits.LEASE
    as_process(monkeypatch, "web-b", {})
    assert not await socket_limits.socket_acquire(user_id=5)  # ...until the next beat


@pytest.mark.asyncio
@pytest.mark.redis
async def test_without_redis_sockets_are_let_through(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:1/0"}]},
        }
    }
    settings.STELLARCHAT_MAX_SOCKETS_PER_USER = 1
    as_process(monkeypatch, "web-x", {})
    assert await socket_limits.socket_acquire(user_id=1)
    assert await socket_limits.socket_acquire(user_id=1)  # unchecked, with a warning
    assert (await socket_limits.handshake_allowed("somewhere"))[0]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fresh_layer")
async def test_a_socket_that_fails_to_open_gives_its_place_back(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker outage during the handshake must not leak places until the person is locked
    out (the socket never opens, so nothing else would release it)."""
    from channels.layers import get_channel_layer

    settings.STELLARCHAT_MAX_SOCKETS_PER_USER = 1
    user = await factories.amake_user("unlucky")
    cookie = await database_sync_to_async(session_cookie)(user)
    layer = get_channel_layer()

    async def broken(*args: Any) -> None:
        raise ConnectionError("Redis is away")

    monkeypatch.setattr(layer, "group_add", broken)
    for _ in range(3):
        with pytest.raises(ConnectionError):  # the handshake fails (daphne: HTTP 500)
            await communicator(cookie).connect()
    assert socket_limits._mine.get(user.pk, 0) == 0
    monkeypatch.undo()
    sock = await connect(user)  # the one place is free
    await sock.close()


def test_a_refused_address_is_refused_in_daphne_until_its_window_moves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stellarchat import wsserver

    clock = Clock()
    monkeypatch.setattr(wsserver.time, "monotonic", clock)
    monkeypatch.setattr(wsserver, "_blocked", {})
    assert not wsserver.handshakes_blocked("10.0.0.1")
    monkeypatch.setattr(wsserver, "_refusals", {})
    wsserver.handshake_refused("10.0.0.1", "10.9.9.9", 30)
    assert wsserver.handshakes_blocked("10.0.0.1")
    assert not wsserver.handshakes_blocked("10.0.0.2")
    clock.now += 30.5
    assert not wsserver.handshakes_blocked("10.0.0.1")
    assert wsserver._blocked == {}  # forgotten, not kept


def test_an_address_hammering_while_refused_is_dropped_for_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stellarchat import wsserver

    clock = Clock()
    monkeypatch.setattr(wsserver.time, "monotonic", clock)
    monkeypatch.setattr(wsserver, "_refusals", {})
    monkeypatch.setattr(wsserver, "_dropping", {})
    for _ in range(wsserver.DROP_AFTER):  # as many as a second allows: still parsed
        wsserver.refused_again("10.0.0.1")
    assert not wsserver.dropping("10.0.0.1")
    clock.now += 1.0  # a new second starts the count again
    for _ in range(wsserver.DROP_AFTER + 1):
        wsserver.refused_again("10.0.0.1")
    assert wsserver.dropping("10.0.0.1") and not wsserver.dropping("10.0.0.2")
    clock.now += wsserver.DROP_SECONDS + 0.01
    assert not wsserver.dropping("10.0.0.1")


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fresh_layer")
async def test_a_full_persons_session_is_refused_before_it_is_looked_up_until_there_is_room(
    settings: Any,
) -> None:
    settings.STELLARCHAT_MAX_SOCKETS_PER_USER = 1
    user = await factories.amake_user("fullhouse")
    cookie = await database_sync_to_async(session_cookie)(user)
    first = communicator(cookie)
    assert (await first.connect())[0]
    for _ in range(2):  # the second time, by the session it is known to be full
        extra = communicator(cookie)
        assert (await extra.connect())[0]
        assert (await extra.receive_output(timeout=5)) == {"type": "websocket.close", "code": 4429}
    assert list(socket_limits._full_sessions.values()) == [user.pk]
    await first.disconnect()
    await asyncio.sleep(0.1)
    again = communicator(cookie)  # room again: the same session is looked up and let in
    assert (await again.connect())[0]
    assert await again.receive_nothing(timeout=0.2)
    assert socket_limits._full_sessions == {}
    await again.disconnect()
