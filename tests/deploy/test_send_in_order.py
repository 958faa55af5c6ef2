"""A reply's start in one go (``stellarchat.layers.send_in_order``): its announcements to the
conversation's groups, then its job, in two trips to Redis instead of ten. Against a real
Redis, it must deliver exactly what the plain calls on channels-redis's own layer do (who gets
what, a full queue missing its message, a full job queue refusing the job), keep every queue's
order, and never let the job be seen before the announcements queued with it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer as Stock

from stellarchat.layers import send_in_order
from stellarchat.redis_layer import RedisChannelLayer as Ours
from tests import services
from tests.deploy import layer_churn
from tests.e2e import livedaphne

pytestmark = pytest.mark.asyncio

Scenario = Callable[[Any, Any], Awaitable[Any]]
JOB = {"type": "inference.generate", "turns": [{"role": "user", "content": "héllo 🌍 <b>"}]}


async def drain(layer: Any, channel: str) -> list[Any]:
    return await layer_churn.drain(layer, channel, quiet=0.3)


def kinds(messages: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in messages]


async def start_of_a_reply(a: Any, b: Any) -> Any:
    """What a new conversation's first message sends: conversation.created to the person's
    tabs, message.saved and stream.start to the conversation's sockets (two in the sender's
    process, one in another), then the job."""
    tab, other_tab, elsewhere = await a.new_channel(), await a.new_channel(), await b.new_channel()
    await a.group_add("user.1", tab)
    await a.group_add("user.1", elsewhere)
    for channel in (tab, other_tab, elsewhere):
        await a.group_add("conversation.1", channel)
    queue = a.prefix + a.non_local_name(tab)
    waiting = b.connection(b.consistent_hash(a.non_local_name(tab)))

    async def worker() -> int:
        """Takes the job the moment it is queued: the tab's announcements are there already."""
        await b.receive("inference")
        return await waiting.zcard(queue)

    took = asyncio.create_task(worker())
    await asyncio.sleep(0.2)  # the worker is waiting on the job queue
    await send_in_order(
        a,
        [
            ("user.1", {"type": "conversation.created", "title": ""}),
            ("conversation.1", {"type": "message.saved", "content": "héllo 🌍 <b>"}),
            ("conversation.1", {"type": "stream.start", "n": [1, None]}),
        ],
        "inference",
        JOB,
    )
    queued_when_taken = await asyncio.wait_for(took, 5)
    return [
        await drain(a, tab),
        kinds(await drain(a, other_tab)),
        kinds(await drain(b, elsewhere)),
        queued_when_taken,
    ]


async def job_queue_full(a: Any, b: Any) -> Any:
    """A full job queue refuses the job (ChannelFull, as ``send``); the announcements before
    it went out all the same (the caller then ends the reply as failed)."""
    socket = await a.new_channel()
    await a.group_add("conversation.1", socket)
    for i in range(3):  # capacity 3 (set below)
        await b.send("inference", {"type": "inference.generate", "i": i})
    try:
        await send_in_order(a, [("conversation.1", {"type": "stream.start"})], "inference", JOB)
        refused = False
    except ChannelFull:
        refused = True
    return [refused, kinds(await drain(a, socket)), [m["i"] for m in await drain(b, "inference")]]


async def member_queue_full(a: Any, b: Any) -> Any:
    """A process whose queue is full misses the announcements (as with ``group_send``); the
    other process gets them and the job is queued."""
    full, free = await a.new_channel(), await b.new_channel()
    for channel in (full, free):
        await a.group_add("conversation.1", channel)
    for i in range(3):
        await b.send(full, {"type": "old", "i": i})
    events = [("conversation.1", {"type": "message.saved"}), ("conversation.1", {"type": "x"})]
    await send_in_order(a, events, "inference", JOB)
    return [
        kinds(await drain(a, full)),
        kinds(await drain(b, free)),
        kinds(await drain(b, "inference")),
    ]


async def many_in_one_queue(a: Any, b: Any) -> Any:
    """Forty messages to one process's queue, sent at one moment: they come out in order."""
    socket = await a.new_channel()
    await a.group_add("conversation.1", socket)
    events = [("conversation.1", {"type": "stream.delta", "i": i}) for i in range(40)]
    await send_in_order(a, events, "inference", JOB)
    return [[m["i"] for m in await drain(a, socket)], kinds(await drain(b, "inference"))]


async def job_to_a_process_channel(a: Any, b: Any) -> Any:
    """The job may go to one process's own channel (``name!...``): it names its channel."""
    target = await b.new_channel()
    await send_in_order(a, [], target, {"type": "direct", "x": "ü"})
    return await drain(b, target)


SCENARIOS = [
    start_of_a_reply,
    job_queue_full,
    member_queue_full,
    many_in_one_queue,
    job_to_a_process_channel,
]


async def run(cls: type, urls: list[str], scenario: Scenario) -> Any:
    """The scenario with two processes' layers (``a`` and ``b``) of ``cls`` on these hosts:
    three messages a queue (a hundred for the many), three jobs."""
    hosts = [{"address": url, "socket_timeout": None} for url in urls]
    capacity = 100 if scenario is many_in_one_queue else 3
    a, b = (cls(hosts=hosts, capacity=capacity, channel_capacity={"inference": 3}) for _ in "ab")
    try:
        return await scenario(a, b)
    finally:
        await a.flush()
        await a.close_pools()
        await b.close_pools()


# With several Redis hosts, ``send_in_order`` is the plain calls (tried here on two databases
# of one server). channels-redis puts a direct send to a process's channel on the host of its
# whole name and reads it from the host of the process's name, which differ at random with two
# hosts (its own doing; the app sends nothing directly to a process): those scenarios run on one.
CASES = [(scenario, 1) for scenario in SCENARIOS] + [
    (start_of_a_reply, 2),
    (job_queue_full, 2),
    (many_in_one_queue, 2),
]


@pytest.mark.parametrize(
    ("scenario", "hosts"), CASES, ids=[f"{s.__name__}-{n} host(s)" for s, n in CASES]
)
async def test_send_in_order_delivers_what_the_plain_calls_do(
    scenario: Scenario, hosts: int
) -> None:
    services.require("Redis", services.redis_available())
    with livedaphne.redis_db(8) as first, livedaphne.redis_db(12) as second:
        urls = [first, second][:hosts]
        stock = await run(Stock, urls, scenario)
        ours = await run(Ours, urls, scenario)
    assert ours == stock
    if hosts > 1:  # the plain calls, which spread the queues over the shards as they will
        return
    if scenario is start_of_a_reply:
        tab, other_tab, elsewhere, queued_when_taken = stock
        assert kinds(tab) == ["conversation.created", "message.saved", "stream.start"]
        assert tab[1]["content"] == "héllo 🌍 <b>" and tab[2]["n"] == [1, None]
        assert other_tab == ["message.saved", "stream.start"]
        assert elsewhere == ["conversation.created", "message.saved", "stream.start"]
        # the process's queue held all three (one copy for both its tabs) when the job was taken
        assert queued_when_taken == 3
    if scenario is job_queue_full:
        assert stock == [True, ["stream.start"], [0, 1, 2]]
    if scenario is member_queue_full:
        assert stock == [["old", "old", "old"], ["message.saved", "x"], ["inference.generate"]]
    if scenario is many_in_one_queue:
        assert stock == [list(range(40)), ["inference.generate"]]
    if scenario is job_to_a_process_channel:
        assert stock == [{"type": "direct", "x": "ü"}]
