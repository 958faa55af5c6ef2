"""Production's channel layer: channels-redis's, with a group send of two trips to Redis, not four.

channels-redis's ``group_send`` makes four trips one after another: drop expired members, read
the members, drop expired messages of their queues, then a script that queues the message. Every
delta of every reply is a group send, and three of them (conversation.created, message.saved,
stream.start) come before a new reply's job is queued, so each trip is on the path to the first
token. Here the first two trips are one pipeline and the last two one script (it drops the
expired messages itself, as the separate pipeline did, then queues with the same capacity rule);
what is sent where, and what counts as over capacity, is unchanged: the rest is channels-redis's
own code (``_map_channel_keys_to_connection``), so this depends on its pinned version
(requirements.txt; tests/deploy/test_layer_capacity.py runs against a real Redis).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from channels_redis.core import RedisChannelLayer as ChannelsRedisLayer

logger = logging.getLogger(__name__)

# KEYS: the member channels' queues. ARGV: one message per key, one capacity per key, then the
# time now, the queue expiry and the oldest score to keep.
GROUP_SEND_LUA = """
local n = #KEYS
local now = ARGV[2 * n + 1]
local expiry = ARGV[2 * n + 2]
local oldest = ARGV[2 * n + 3]
local over_capacity = 0
for i = 1, n do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, oldest)
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[i + n]) then
        redis.call('ZADD', KEYS[i], now, ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        over_capacity = over_capacity + 1
    end
end
return over_capacity
"""


class RedisChannelLayer(ChannelsRedisLayer):  # type: ignore[misc]
    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """channels-redis's group send (same checks, deliveries and log line), in two trips."""
        assert self.require_valid_group_name(group), "Group name not valid"
        key = self._group_key(group)
        connection = self.connection(self.consistent_hash(group))
        pipe = connection.pipeline(transaction=False)
        pipe.zremrangebyscore(key, min=0, max=int(time.time()) - self.group_expiry)
        pipe.zrange(key, 0, -1)
        _, members = await pipe.execute()
        channel_names = [x.decode("utf8") for x in members]
        by_connection, messages, capacities = self._map_channel_keys_to_connection(
            channel_names, message
        )
        for index, keys in by_connection.items():
            now = time.time()
            args = [messages[k] for k in keys] + [capacities[k] for k in keys]
            args += [now, self.expiry, int(now) - int(self.expiry)]
            over = await self.connection(index).eval(GROUP_SEND_LUA, len(keys), *keys, *args)
            if over > 0:
                logger.info(
                    "%s of %s channels over capacity in group %s", over, len(channel_names), group
                )
