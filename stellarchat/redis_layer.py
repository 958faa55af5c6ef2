"""Production's channel layer: channels-redis's, with a receive that loses nothing when a socket
closes, and a group send of two trips to Redis, not four.

Receiving: all sockets of a web process share one Redis queue, and whichever socket's
``receive`` holds channels-redis's receive lock pops it (BZPOPMIN) for all of them. When that
socket closes, Channels cancels its ``receive``; if Redis had already popped a message (for any
socket of the process), the cancelled read drops it: redis-py closes the connection under a
cancelled command, and channels-redis writes its backup copy only after the pop returns (the
loss of django/channels issue 1683 and channels_redis issue 366). Under load, with people
coming and going, another socket then misses a ``stream.start`` or ``message.saved`` and never
sees its reply (the load test failed so in CI; tests/deploy/test_redis_layer.py shows stock
channels-redis losing messages under churn, and this layer none). Here the pop runs in a task
of its own, which a cancelled caller leaves running: the lock's next holder takes it over and
hands out what it popped, in order, exactly as channels-redis does with its own. Nothing
cancels that pop but the layer's shutdown, so channels-redis's guard against cancelled pops
(a backup copy of each message, written after the pop and deleted after its delivery, and a
script that puts leftover copies back before each pop: three trips more per message, on every
delta's way) guards nothing here: the pop is BZPOPMIN alone, one trip. A queue several
processes share (the inference jobs) keeps channels-redis's read: there a copy left by a worker
that died with a job is put back by the next one's pop.

Group sends:

channels-redis's ``group_send`` makes four trips one after another: drop expired members, read
the members, drop expired messages of their queues, then a script that queues the message. Every
delta of every reply is a group send, and three of them (conversation.created, message.saved,
stream.start) come before a new reply's job is queued, so each trip is on the path to the first
token. Here the first two trips are one pipeline and the last two one script (it drops the
expired messages itself, as the separate pipeline did, then queues with the same capacity rule);
what is sent where, and what counts as over capacity, is unchanged: the rest is channels-redis's
own code (``_map_channel_keys_to_connection``), so this depends on its pinned version
(requirements.txt; tests/deploy/test_layer_capacity.py runs against a real Redis).

Starting a reply (``send_in_order``): its announcements (conversation.created, message.saved,
stream.start) and its job go to Redis as one read of the groups' members and one script, not
ten trips one after another; the script queues them in order (each a microsecond after the
one before: a queue pops the lowest score first), so the job is never seen before them. A
group join is one pipeline, not two trips.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer as ChannelsRedisLayer

from stellarchat.layers import send_one_by_one

logger = logging.getLogger(__name__)

# Queues messages in order. KEYS: the queues, one per delivery (a queue may come again: each
# delivery goes a microsecond after the one before). ARGV: one message, one capacity and one
# "must" flag per key, then the time now, the queue expiry and the oldest score to keep. Expired
# messages go first; a delivery whose queue is still full is skipped and counted, as in a group
# send; a "must" one (a job: ``send`` raises ChannelFull for it) ends the script there and its
# position is returned: {skipped, position or 0}.
QUEUE_LUA = """
local n = #KEYS
local now = tonumber(ARGV[3 * n + 1])
local expiry = ARGV[3 * n + 2]
local oldest = ARGV[3 * n + 3]
local over_capacity = 0
for i = 1, n do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, oldest)
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[i + n]) then
        redis.call('ZADD', KEYS[i], now + (i - 1) * 0.000001, ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    elseif ARGV[i + 2 * n] == '1' then
        return {over_capacity, i}
    else
        over_capacity = over_capacity + 1
    end
end
return {over_capacity, 0}
"""


class RedisChannelLayer(ChannelsRedisLayer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pops: dict[str, asyncio.Task[Any]] = {}  # a process queue's pop in flight

    async def receive_single(self, channel: str) -> Any:
        """The pop of one message, safe from a cancelled caller.

        For a process's queue (``specific.<prefix>!``) the caller is whichever socket holds the
        receive lock. The pop runs as a task of its own; if the caller is cancelled (its
        socket closed), the task goes on, and the next holder of the lock awaits that same
        task instead of popping again: nothing popped is dropped, and there is never more than
        one pop, so order is kept (``_pop``: BZPOPMIN alone). A shared queue (the inference
        jobs) keeps the stock read."""
        if "!" not in channel:
            return await super().receive_single(channel)
        loop = asyncio.get_running_loop()
        pop = self._pops.get(channel)
        if pop is None or pop.get_loop() is not loop or _failed(pop):
            # None in flight, one left by a closed event loop, or one that failed after its
            # caller was gone (nobody is left to tell): pop afresh.
            pop = loop.create_task(self._pop(channel))
            pop.add_done_callback(_failed)
            self._pops[channel] = pop
        try:
            result = await asyncio.shield(pop)
        except asyncio.CancelledError:
            raise  # the pop goes on; the lock's next holder (or the next receive) takes it over
        except BaseException:
            self._forget(channel, pop)  # Redis failed: the caller hears it, the next one retries
            raise
        self._forget(channel, pop)
        return result

    async def _pop(self, channel: str) -> tuple[Any, dict[str, Any]]:
        """The oldest message of a process's queue, waiting for one: (its channel or channels,
        the message), as channels-redis's ``receive_single`` returns it."""
        connection = self.connection(self.consistent_hash(channel))
        key = self.prefix + channel
        result = None
        while result is None:
            result = await connection.bzpopmin(key, timeout=self.brpop_timeout)
        message = self.deserialize(result[1])
        return message.pop("__asgi_channel__", channel), message

    async def close_pools(self) -> None:
        """channels-redis's, after ending the pops in flight (the layer is shutting down)."""
        for pop in self._pops.values():
            pop.cancel()
        self._pops.clear()
        await super().close_pools()

    def _forget(self, channel: str, pop: asyncio.Task[Any]) -> None:
        if self._pops.get(channel) is pop:
            del self._pops[channel]

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """channels-redis's group send (same checks, deliveries and log line), in two trips."""
        connection = self.connection(self.consistent_hash(group))
        channel_names = (await self._members(connection, [group]))[group]
        by_connection, messages, capacities = self._map_channel_keys_to_connection(
            channel_names, message
        )
        for index, keys in by_connection.items():
            over, _ = await self._queue(
                self.connection(index),
                keys,
                [messages[k] for k in keys],
                [capacities[k] for k in keys],
                [0] * len(keys),
            )
            if over > 0:
                logger.info(
                    "%s of %s channels over capacity in group %s", over, len(channel_names), group
                )

    async def _members(self, connection: Any, groups: list[str]) -> dict[str, list[str]]:
        """Each group's member channels, expired memberships dropped first, in one trip."""
        pipe = connection.pipeline(transaction=False)
        for group in groups:
            assert self.require_valid_group_name(group), "Group name not valid"
            key = self._group_key(group)
            pipe.zremrangebyscore(key, min=0, max=int(time.time()) - self.group_expiry)
            pipe.zrange(key, 0, -1)
        replies = await pipe.execute() if groups else []
        return {
            group: [x.decode("utf8") for x in replies[2 * i + 1]] for i, group in enumerate(groups)
        }

    async def _queue(
        self,
        connection: Any,
        keys: list[Any],
        payloads: list[Any],
        capacities: list[int],
        must: list[int],
    ) -> tuple[int, int]:
        """QUEUE_LUA: the deliveries, in order, in one trip: (skipped, refused position or 0)."""
        now = time.time()
        args = [*payloads, *capacities, *must, now, self.expiry, int(now) - int(self.expiry)]
        over, refused = await connection.eval(QUEUE_LUA, len(keys), *keys, *args)
        return over, refused

    async def group_add(self, group: str, channel: str) -> None:
        """channels-redis's (add with the time now, then renew the group's expiry), in one trip."""
        assert self.require_valid_group_name(group), "Group name not valid"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        key = self._group_key(group)
        pipe = self.connection(self.consistent_hash(group)).pipeline(transaction=False)
        pipe.zadd(key, {channel: time.time()})
        pipe.expire(key, self.group_expiry)
        await pipe.execute()

    async def send_in_order(
        self,
        group_messages: Sequence[tuple[str, dict[str, Any]]],
        channel: str,
        message: dict[str, Any],
    ) -> None:
        """Each ``group_send`` of ``group_messages``, then ``send(channel, message)``, in that
        order and with their semantics (a full member queue misses its message; a full
        ``channel`` raises ChannelFull after the group messages went out), in two trips.

        With several Redis hosts, the queues may live on different ones: then it is the plain
        calls one after another."""
        if self.ring_size > 1:
            await send_one_by_one(self, group_messages, channel, message)
            return
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        assert "__asgi_channel__" not in message
        connection = self.connection(0)
        groups = list(dict.fromkeys(group for group, _ in group_messages))
        members = await self._members(connection, groups)
        keys: list[Any] = []
        payloads: list[Any] = []
        capacities: list[int] = []
        for group, group_message in group_messages:
            _, serialized, capacity = self._map_channel_keys_to_connection(
                members[group], group_message
            )
            keys += list(serialized)
            payloads += list(serialized.values())
            capacities += [capacity[key] for key in serialized]
        if "!" in channel:  # as ``send``: a process queue's message names its channel
            message = {**message, "__asgi_channel__": channel}
        keys.append(self.prefix + (self.non_local_name(channel) if "!" in channel else channel))
        payloads.append(self.serialize(message))
        capacities.append(self.get_capacity(channel))
        must = [0] * (len(keys) - 1) + [1]
        over, refused = await self._queue(connection, keys, payloads, capacities, must)
        if over > 0:
            logger.info("%s of the channels of groups %s over capacity", over, groups)
        if refused:
            raise ChannelFull()


def _failed(task: asyncio.Task[Any]) -> bool:
    """Whether a pop ended without a message. Also its done callback: a pop may fail with
    nobody awaiting it (its caller cancelled); that marks the failure seen, so asyncio does
    not log it as never retrieved."""
    return task.done() and (task.cancelled() or task.exception() is not None)
