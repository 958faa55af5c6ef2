"""The embedded channel layer: channels' in-memory semantics, without a sweep per message."""

from __future__ import annotations

import time
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer as ChannelsLayer

from stellarchat.layers import InMemoryChannelLayer

pytestmark = pytest.mark.asyncio


async def test_group_send_reaches_every_member_and_skips_a_full_one() -> None:
    layer = InMemoryChannelLayer(capacity=2)
    a, b = await layer.new_channel(), await layer.new_channel()
    for channel in (a, b):
        await layer.group_add("room", channel)
    await layer.send(b, {"type": "x"})
    await layer.send(b, {"type": "x"})  # b is full now
    await layer.group_send("room", {"type": "hello", "n": 1})
    assert await layer.receive(a) == {"type": "hello", "n": 1}
    assert [await layer.receive(b) for _ in range(2)] == [{"type": "x"}] * 2
    message = {"type": "hello", "nested": {"k": 1}}
    await layer.group_send("room", message)
    message["nested"]["k"] = 2  # the sender's dict is copied: changing it later changes nothing
    got_a, got_b = await layer.receive(a), await layer.receive(b)
    assert got_a == got_b == {"type": "hello", "nested": {"k": 1}}
    # One copy for all members, as channels-redis hands one dict to every socket of a
    # process: receivers only read it (chat.consumers.ChatConsumer.stream_end).
    assert got_a is got_b
    await layer.group_send("nobody", {"type": "x"})  # no such group: nothing happens


async def test_expired_messages_and_memberships_still_go(monkeypatch: Any) -> None:
    layer = InMemoryChannelLayer(expiry=60, group_expiry=100)
    a, b = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room", a)
    await layer.send(b, {"type": "old"})
    later = time.time() + 120
    monkeypatch.setattr(time, "time", lambda: later)
    layer._cleaned = 0.0  # a second has passed since the last sweep
    await layer.group_send("room", {"type": "x"})
    assert "room" not in layer.groups or a not in layer.groups["room"]  # membership expired
    assert b not in layer.channels  # its expired message was dropped


async def test_a_burst_of_group_sends_sweeps_at_most_once_a_second(monkeypatch: Any) -> None:
    """channels' own sweeps every channel and membership on every group_send: with a socket
    in hundreds of conversation groups, that walk dominated the event loop."""
    sweeps = 0
    real = ChannelsLayer._clean_expired

    def counting(self: Any) -> None:
        nonlocal sweeps
        sweeps += 1
        real(self)

    monkeypatch.setattr(ChannelsLayer, "_clean_expired", counting)
    layer = InMemoryChannelLayer(capacity=10_000)
    channel = await layer.new_channel()
    for i in range(300):
        await layer.group_add(f"conversation.{i}", channel)
    for i in range(1000):
        await layer.group_send(f"conversation.{i % 300}", {"type": "delta", "i": i})
    assert sweeps <= 2
    assert (await layer.receive(channel))["i"] == 0


async def test_group_size_counts_a_conversation_s_sockets_in_memory_and_in_redis() -> None:
    """What a reply's deltas cost the web processes grows with the sockets following it
    (``chat.replies._ReplyState.interval``): both layers tell how many there are."""
    from channels.layers import BaseChannelLayer
    from channels_redis.core import RedisChannelLayer as Stock

    from stellarchat.layers import group_size
    from stellarchat.redis_layer import RedisChannelLayer
    from tests import services
    from tests.e2e import livedaphne

    memory = InMemoryChannelLayer()
    assert await group_size(memory, "conv") == 0
    for _ in range(3):
        await memory.group_add("conv", await memory.new_channel())
    await memory.group_add("other", await memory.new_channel())
    assert await group_size(memory, "conv") == 3
    assert await group_size(BaseChannelLayer(), "conv") is None  # a layer it cannot read

    services.require("Redis", services.redis_available())
    with livedaphne.redis_db(9) as url:
        for cls in (RedisChannelLayer, Stock):
            layer = cls(hosts=[{"address": url}])
            try:
                assert await group_size(layer, "conv") == 0
                channels = [await layer.new_channel() for _ in range(5)]
                for channel in channels:
                    await layer.group_add("conv", channel)
                await layer.group_add("other", channels[0])
                assert await group_size(layer, "conv") == 5
                await layer.group_discard("conv", channels[0])
                assert await group_size(layer, "conv") == 4
            finally:
                await layer.flush()
                await layer.close_pools()
