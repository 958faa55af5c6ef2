"""How a reply's deltas leave the worker: coalesced while it generates, at once at its end."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import pytest

from chat import replies, streams

pytestmark = pytest.mark.asyncio


class Layer:
    """Records group messages with the time they were sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, dict[str, Any]]] = []

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.sent.append((time.monotonic(), message))


def state() -> tuple[replies._ReplyState, Layer]:
    layer = Layer()
    job = replies.Job(conversation=str(uuid.uuid4()), message=str(uuid.uuid4()), options={})
    return replies._ReplyState(job=job, layer=layer), layer


async def test_deltas_are_coalesced_and_the_last_goes_out_at_once() -> None:
    reply, layer = state()
    reply.add("Hello")  # the first delta: at once
    await asyncio.sleep(0.005)
    for word in (",", " wide", " world"):  # within one interval: merged into one delta
        reply.add(word)
    while len(layer.sent) < 2:  # the merged delta went out one interval after the first
        await asyncio.sleep(0.001)
    reply.add("!")  # right after a flush: the next may only go one interval later...
    reply.add(" Bye.")
    await reply.drain()  # ...but the reply ended: what waits goes now
    deltas = [m for _, m in layer.sent]
    assert [d["delta"] for d in deltas] == ["Hello", ", wide world", "! Bye."]
    assert [d["offset"] for d in deltas] == [0, 5, 17]
    assert layer.sent[2][0] - layer.sent[1][0] < replies.FLUSH_INTERVAL
    assert await streams.get_text(reply.job.message) == "Hello, wide world! Bye."


async def test_a_delta_goes_out_before_its_state_and_after_the_state_of_the_parts_before(
    monkeypatch: Any,
) -> None:
    """The state's write is not on a delta's way (the first token's above all), yet a socket
    that finds a gap before a delta always finds that part in the state."""
    reply, layer = state()
    order: list[tuple[str, int]] = []  # ("delta", offset) or ("state", length) as they happen
    stored = ""
    set_text = streams.set_text

    async def group_send(group: str, message: dict[str, Any]) -> None:
        order.append(("delta", message["offset"]))
        assert stored == reply.text[: message["offset"]]  # the gap before it can be filled
        await asyncio.sleep(0.002)  # a trip to Redis

    async def recording_set_text(message_id: Any, text: str) -> None:
        nonlocal stored
        order.append(("state begun", len(text)))  # with Redis: a thread wakes from here
        await asyncio.sleep(0.002)
        await set_text(message_id, text)
        stored = text
        order.append(("state", len(text)))

    monkeypatch.setattr(layer, "group_send", group_send)
    monkeypatch.setattr(streams, "set_text", recording_set_text)
    reply.add("Hello")
    await asyncio.sleep(0.001)
    assert order == [("delta", 0)]  # out at once, its state not awaited first
    for word in (",", " wide", " world", "!"):
        await asyncio.sleep(0.012)
        reply.add(word)
    await reply.drain()
    deltas = [offset for kind, offset in order if kind == "delta"]
    assert len(deltas) >= 2 and order[-1] == ("state", len("Hello, wide world!"))
    for i, (kind, _) in enumerate(order):  # each delta's state follows it, before the next
        assert kind == ("delta", "state begun", "state")[i % 3]


async def test_waiting_for_the_model_to_load_is_not_overload() -> None:
    """A reply queued while the worker still loads its model waits for it; only time queued
    with the model loaded counts toward ending it as "busy"."""
    import threading

    reply, _ = state()
    cancel, started = threading.Event(), threading.Event()
    ready = False
    watcher = asyncio.create_task(
        replies._watch(reply.job, cancel, started, reply, stall=0.3, loaded=lambda: ready)
    )
    await asyncio.sleep(0.8)  # loading for longer than the timeout
    assert not watcher.done() and not reply.shed
    ready = True
    loaded_at = time.monotonic()
    await asyncio.wait_for(watcher, timeout=5)
    assert reply.shed and cancel.is_set()
    assert time.monotonic() - loaded_at >= 0.3 - replies.WATCH_INTERVAL  # its clock: loaded


async def test_a_reply_s_last_saves_keep_its_heartbeat_going(monkeypatch: Any) -> None:
    """A database slow to hand out a connection (its connections cut and being replaced) holds
    the final save for seconds: the sweepers must keep seeing a live worker meanwhile, not end
    the reply as 'the inference worker stopped answering' (the fault matrix's row 3, pooled)."""
    monkeypatch.setattr(replies, "BEAT_INTERVAL", 0.05)
    message = str(uuid.uuid4())
    beats: list[float | None] = []

    async def slow_save() -> str:
        for _ in range(6):
            await asyncio.sleep(0.05)
            beats.append(await streams.last_beat(message))
        return "saved"

    assert await replies.beating(message, slow_save()) == "saved"
    seen = [b for b in beats if b is not None]
    assert len(set(seen)) >= 3  # it beat again and again while the save waited
    last = await streams.last_beat(message)
    await asyncio.sleep(0.15)
    assert await streams.last_beat(message) == last  # and stopped with the save


@pytest.mark.parametrize(("followers", "fewer"), [(1, False), (4, False), (12, True)])
async def test_a_reply_many_sockets_follow_goes_out_in_fewer_larger_deltas(
    monkeypatch: Any, followers: int, fewer: bool
) -> None:
    """Each delta costs the web process a frame to every socket following the conversation:
    past ``FOLLOWERS_SHARE`` of them the interval grows in proportion (one account's 28
    sockets on one conversation), while a person's few tabs see the usual interval. The text
    and its offsets are the same either way."""
    from stellarchat.layers import InMemoryChannelLayer

    monkeypatch.setattr(replies, "FOLLOWERS_EVERY", 0.0)  # counted at every delta
    layer = InMemoryChannelLayer(capacity=1000)
    job = replies.Job(conversation=str(uuid.uuid4()), message=str(uuid.uuid4()), options={})
    channels = [await layer.new_channel() for _ in range(followers)]
    for channel in channels:
        await layer.group_add(streams.conversation_group(job.conversation), channel)
    reply = replies._ReplyState(job=job, layer=layer)
    words = [f" w{i}" for i in range(400)]
    started = time.monotonic()
    for word in words:  # a token every millisecond or so
        reply.add(word)
        await asyncio.sleep(0.001)
    elapsed = time.monotonic() - started
    await reply.drain()
    got = []
    with contextlib.suppress(TimeoutError):
        while True:
            got.append(await asyncio.wait_for(layer.receive(channels[0]), 0.05))
    assert "".join(d["delta"] for d in got) == "".join(words)
    assert [d["offset"] for d in got] == [
        sum(len(d["delta"]) for d in got[:i]) for i in range(len(got))
    ]
    usual = elapsed / replies.FLUSH_INTERVAL  # deltas at the usual interval
    if fewer:  # 12 sockets: 3x the interval
        assert reply.interval() == pytest.approx(3 * replies.FLUSH_INTERVAL)
        assert len(got) <= usual / 2
    else:
        assert reply.interval() == pytest.approx(replies.FLUSH_INTERVAL)
        assert usual / 3 < len(got) <= usual + 3
