"""The embedded default's channel layer: channels' in-memory layer without its per-message
sweep of every channel and group.

channels' ``InMemoryChannelLayer`` walks every channel queue and every group membership on each
``send``-to-group and ``receive`` to drop expired ones, and ``group_send`` starts one task per
member. Every socket stays in the group of each conversation it opened, so that walk grows
with use, and a streaming reply group-sends about 33 deltas a second: at 16 conversations at
once the sweep alone took a quarter of the web process's event loop (py-spy, bench/
concurrency.py), the loop was at 100% CPU and starved the inference thread of the GIL. Here
the sweep runs at most once a second (expiry is a minute for messages and a day for group
memberships, so a second late changes nothing), and ``group_send`` sends in place, with one
copy of the message for all members (as channels-redis hands one dict to every socket of a
process; receivers only read it): a copy per member was half of a group message's cost to
each of them (10 against 5.6 us a member, 30 members, measured), and a reply's deltas go to
every socket following its conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from copy import deepcopy
from typing import Any

from channels import layers


class InMemoryChannelLayer(layers.InMemoryChannelLayer):
    CLEAN_INTERVAL = 1.0  # seconds between sweeps for expired messages and memberships

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cleaned = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._cleaned < self.CLEAN_INTERVAL:
            return
        self._cleaned = now
        super()._clean_expired()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """As channels' own (a full member channel misses the message; the others get it), one
        member after the other: a queue put never waits, so tasks would only add overhead."""
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        members = list(self.groups.get(group, ()))
        if not members:
            return
        shared = deepcopy(message)  # one copy for every member: receivers only read it
        expires = time.time() + self.expiry
        for channel in members:
            queue = self.channels.get(channel)
            if queue is None:
                queue = self.channels.setdefault(
                    channel, asyncio.Queue(maxsize=self.get_capacity(channel))
                )
            with contextlib.suppress(asyncio.QueueFull):  # a full member misses it
                queue.put_nowait((expires, shared))

    async def flush(self) -> None:
        await super().flush()
        self._cleaned = 0.0


async def group_size(layer: Any, group: str) -> int | None:
    """How many channels are in ``group`` (for a conversation's group: the sockets following
    it), or None where the layer cannot tell cheaply. channels' layers have no call for it:
    the in-memory layer's table and channels-redis' sorted set (one ``ZCARD``) are read."""
    groups = getattr(layer, "groups", None)
    if isinstance(groups, dict):
        return len(groups.get(group, ()))
    key = getattr(layer, "_group_key", None)
    connection = getattr(layer, "connection", None)
    shard = getattr(layer, "consistent_hash", None)
    if key is None or connection is None or shard is None:
        return None
    return int(await connection(shard(group)).zcard(key(group)))


async def send_in_order(
    layer: Any,
    group_messages: Sequence[tuple[str, dict[str, Any]]],
    channel: str,
    message: dict[str, Any],
) -> None:
    """``group_send`` of each of ``group_messages``, then ``send(channel, message)``, in order.

    A reply's announcements and its job: the Redis layer does them in two trips
    (``stellarchat.redis_layer``), and they are on the path to the first token. Other layers
    (in memory, a stock one named in settings) get the plain calls."""
    in_order = getattr(layer, "send_in_order", None)
    if in_order is not None:
        await in_order(group_messages, channel, message)
    else:
        await send_one_by_one(layer, group_messages, channel, message)


async def send_one_by_one(
    layer: Any,
    group_messages: Sequence[tuple[str, dict[str, Any]]],
    channel: str,
    message: dict[str, Any],
) -> None:
    """``send_in_order`` as the plain calls, one after another."""
    for group, group_message in group_messages:
        await layer.group_send(group, group_message)
    await layer.send(channel, message)
