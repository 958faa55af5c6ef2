"""Production's channel layer (stellarchat.redis_layer): a group send of two trips to Redis must
deliver exactly what channels-redis's own four-trip one does, against a real Redis: every
member process gets the message once, a full queue misses it (and only that one), a member
whose membership expired is dropped, expired messages no longer count against capacity, and a
join (one trip here, two there) renews the group's expiry.
A socket that closes while its receive is popping the process's queue must not take another
socket's message with it (stock channels-redis does: shown here). And a worker on it says it
listens only once Redis answers (tests and operators wait for that)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from channels_redis.core import RedisChannelLayer as Stock
from redis.exceptions import ConnectionError as RedisConnectionError

from stellarchat.redis_layer import RedisChannelLayer as Ours
from tests import services
from tests.deploy.layer_churn import churn, drain, make
from tests.e2e import livedaphne

pytestmark = pytest.mark.asyncio

Scenario = Callable[[Any, Any], Awaitable[Any]]


async def two_processes(a: Any, b: Any) -> Any:
    """Members in two processes (two queues) and two on one process (one shared queue)."""
    x, y, z = await a.new_channel(), await a.new_channel(), await b.new_channel()
    for channel in (x, y, z):
        await a.group_add("conversation.1", channel)
    await a.group_send("conversation.1", {"type": "stream.delta", "delta": "héllo 🌍", "n": [1]})
    await b.group_send("conversation.1", {"type": "stream.end"})
    return [
        [m["type"] for m in await drain(a, x)],
        [m["type"] for m in await drain(a, y)],
        await drain(b, z),
    ]


async def full_queue(a: Any, b: Any) -> Any:
    """A process whose queue is at capacity misses the message; the other still gets it."""
    full, free = await a.new_channel(), await b.new_channel()
    await a.group_add("g", full)
    await a.group_add("g", free)
    for i in range(3):  # capacity 3 (set below)
        await a.send(full, {"type": "old", "i": i})
    await a.group_send("g", {"type": "new"})
    return [[m["type"] for m in await drain(a, full)], [m["type"] for m in await drain(b, free)]]


async def expired(a: Any, b: Any) -> Any:
    """An expired membership is dropped; expired messages leave room under the capacity."""
    gone, stays = await a.new_channel(), await b.new_channel()
    await a.group_add("g", gone)
    await a.group_add("g", stays)
    conn = a.connection(a.consistent_hash("g"))
    await conn.zadd(a._group_key("g"), {gone: int(time.time()) - a.group_expiry - 10})
    for i in range(3):
        await b.send(stays, {"type": "old", "i": i})
    queue = b.prefix + b.non_local_name(stays)
    old = await conn.zrange(queue, 0, -1)
    await conn.zadd(queue, dict.fromkeys(old, 1))  # queued long ago: expired
    await a.group_send("g", {"type": "new"})
    members = sorted(m.decode() for m in await conn.zrange(a._group_key("g"), 0, -1))
    return [members == [stays], [m["type"] for m in await drain(b, stays)]]


async def joined(a: Any, b: Any) -> Any:
    """A join (``group_add``, one trip here) adds the member and renews the group's expiry."""
    first, second = await a.new_channel(), await b.new_channel()
    await a.group_add("g", first)
    conn = a.connection(a.consistent_hash("g"))
    await conn.expire(a._group_key("g"), 5)  # about to expire: the next join renews it
    await b.group_add("g", second)
    members = sorted(m.decode() for m in await conn.zrange(a._group_key("g"), 0, -1))
    ttl = await conn.ttl(a._group_key("g"))
    return [members == sorted([first, second]), a.group_expiry - 5 < ttl <= a.group_expiry]


@pytest.mark.parametrize("scenario", [two_processes, full_queue, expired, joined])
async def test_group_send_delivers_exactly_what_channels_redis_does(scenario: Scenario) -> None:
    services.require("Redis", services.redis_available())
    outcomes = []
    with livedaphne.redis_db(8) as url:  # an index no other test uses
        for cls in (Stock, Ours):
            a, b = make(cls, url, capacity=3), make(cls, url, capacity=3)
            try:
                outcomes.append(await scenario(a, b))
            finally:
                await a.flush()
                await a.close_pools()
                await b.close_pools()
    stock, ours = outcomes
    assert ours == stock
    if scenario is two_processes:  # and what that is: every member once, in order
        assert stock[0] == stock[1] == ["stream.delta", "stream.end"]
        assert stock[2][0]["delta"] == "héllo 🌍" and stock[2][1]["type"] == "stream.end"
    if scenario is full_queue:
        assert stock == [["old", "old", "old"], ["new"]]
    if scenario is expired:
        assert stock == [True, ["new"]]
    if scenario is joined:
        assert stock == [True, True]


async def test_a_worker_says_it_listens_only_once_redis_answers(caplog: Any) -> None:
    """Operators and tests wait for "listening on channel" before counting on a worker: with
    Redis unreachable it keeps trying (and says so) instead; once Redis answers, it listens."""
    from inference.worker import InferenceWorker

    services.require("Redis", services.redis_available())
    dead = make(Ours, f"redis://127.0.0.1:{livedaphne.free_port()}/0")
    worker = InferenceWorker(application=None, channels=["inference"], channel_layer=dead)
    caplog.set_level("INFO", logger="inference.worker")
    listening = asyncio.create_task(worker.listener("inference"))
    await asyncio.sleep(1.0)
    assert not listening.done()
    assert "channel layer unreachable" in caplog.text and "listening" not in caplog.text
    listening.cancel()
    await dead.close_pools()

    with livedaphne.redis_db(8) as url:
        alive = make(Ours, url)
        worker = InferenceWorker(application=None, channels=["inference"], channel_layer=alive)
        listening = asyncio.create_task(worker.listener("inference"))
        try:
            for _ in range(100):
                if "listening on channel 'inference'" in caplog.text:
                    break
                await asyncio.sleep(0.02)
            assert "listening on channel 'inference'" in caplog.text
            assert not listening.done()  # and now it waits for jobs
        finally:
            listening.cancel()
            await alive.close_pools()


def send_from_elsewhere(url: str, channel: str, message: dict[str, Any]) -> None:
    """Send as another process would, while this thread's event loop stands still: the pop
    blocked in Redis returns, and its reply waits unread in the receiving socket."""

    async def send() -> None:
        sender = make(Stock, url)
        await sender.send(channel, message)
        await sender.close_pools()

    thread = threading.Thread(target=lambda: asyncio.run(send()))
    thread.start()
    thread.join()
    time.sleep(0.05)


async def closing_socket_takes_a_message(cls: type, url: str, waiting: bool) -> Any:
    """Two sockets of one process: ``closing`` holds the receive lock (its receive pops the
    process's queue) when a message for ``staying`` is popped, and closes (its receive is
    cancelled) before reading it. ``waiting``: ``staying`` is already waiting, else it starts
    receiving only afterwards."""
    layer = make(cls, url)
    try:
        staying, closing = await layer.new_channel(), await layer.new_channel()
        holder = asyncio.ensure_future(layer.receive(closing))
        await asyncio.sleep(0.2)  # it holds the lock and is blocked in BZPOPMIN
        waiter = asyncio.ensure_future(layer.receive(staying)) if waiting else None
        await asyncio.sleep(0.05)
        send_from_elsewhere(url, staying, {"type": "stream.start", "message": "m1"})
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder
        if waiter is None:
            waiter = asyncio.ensure_future(layer.receive(staying))
        try:
            return await asyncio.wait_for(waiter, 2)
        except TimeoutError:
            return None
    finally:
        await layer.close_pools()


@pytest.mark.parametrize("waiting", [True, False], ids=["waiting", "later"])
async def test_a_closing_socket_does_not_take_anothers_message(waiting: bool) -> None:
    services.require("Redis", services.redis_available())
    with livedaphne.redis_db(8) as url:
        stock = await closing_socket_takes_a_message(Stock, url, waiting)
        ours = await closing_socket_takes_a_message(Ours, url, waiting)
    assert stock is None  # channels-redis 4.3.0 loses it (if this fails, it no longer does)
    assert ours == {"type": "stream.start", "message": "m1"}


async def test_sockets_coming_and_going_make_no_other_socket_miss_anything() -> None:
    services.require("Redis", services.redis_available())
    with livedaphne.redis_db(8) as url:
        ours, closed = await churn(Ours, url, 1000)
        stock, _ = await churn(Stock, url, 1000)
    assert closed > 100  # it really was churn
    assert ours == list(range(1000))  # all of it, in order
    assert len(stock) < 1000  # what it fixes: stock channels-redis misses some


async def commands_to_receive(cls: type, url: str, count: int) -> tuple[list[Any], int]:
    """``count`` messages waiting in a process's queue, read by one socket: what it got and
    how many Redis commands the reading took."""
    from redis.asyncio.client import Redis

    layer, sender = make(cls, url), make(Stock, url)
    issued = 0
    real = Redis.execute_command

    async def counted(self: Any, *args: Any, **options: Any) -> Any:
        nonlocal issued
        issued += 1
        return await real(self, *args, **options)

    try:
        socket = await layer.new_channel()
        for i in range(count):
            await sender.send(socket, {"type": "stream.delta", "i": i})
        Redis.execute_command = counted  # type: ignore[method-assign]
        try:
            got = [(await layer.receive(socket))["i"] for _ in range(count)]
            await asyncio.sleep(0.1)  # stock's cleaners of its backup copies finish
        finally:
            Redis.execute_command = real  # type: ignore[method-assign]
        return got, issued
    finally:
        await layer.flush()
        await layer.close_pools()
        await sender.close_pools()


async def test_a_socket_reads_each_message_in_one_trip() -> None:
    """Each delta a web process reads costs one BZPOPMIN here; channels-redis adds a backup
    copy, its deletion and a clean-up script (four commands one after another), which guard
    against a cancelled pop that this layer's pop cannot suffer (test above)."""
    services.require("Redis", services.redis_available())
    with livedaphne.redis_db(8) as url:
        ours, ours_commands = await commands_to_receive(Ours, url, 20)
        stock, stock_commands = await commands_to_receive(Stock, url, 20)
    assert ours == stock == list(range(20))
    assert ours_commands == 20
    assert stock_commands >= 4 * 20


@pytest.mark.parametrize("cls", [Stock, Ours], ids=["stock", "ours"])
async def test_with_redis_away_a_receive_fails_each_time_as_channels_redis_does(cls: type) -> None:
    """A socket's receive that cannot reach Redis raises (its consumer ends; the browser
    reconnects and catches up), every time: a pop that failed is never handed on."""
    layer = make(cls, f"redis://127.0.0.1:{livedaphne.free_port()}/0")
    try:
        for _ in range(2):
            with pytest.raises(RedisConnectionError):
                await asyncio.wait_for(layer.receive(await layer.new_channel()), 5)
    finally:
        await layer.close_pools()
