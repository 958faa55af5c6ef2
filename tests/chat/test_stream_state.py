"""A reply's live state in the shared cache, against the real Redis: what an ended reply
leaves behind, and for how long (an hour's soak found Redis growing by each reply's claim)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from chat import streams
from chat.consumers import ChatConsumer
from tests import services

pytestmark = pytest.mark.asyncio


@pytest.fixture
def redis_cache(settings: Any) -> Iterator[Any]:
    import redis
    from django.core.cache import caches

    services.require("Redis", services.redis_available())
    url = services.REDIS_URL.rsplit("/", 1)[0] + "/10"
    client = redis.Redis.from_url(url)
    client.flushdb()
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": "stellarchat",
        }
    }
    caches["default"].close()
    yield client
    client.flushdb()
    client.close()


def ttls(client: Any, message: uuid.UUID) -> dict[str, int]:
    """Each of the reply's keys and its time to live in seconds (by kind)."""
    found = {}
    for key in client.scan_iter(match=f"*{message.hex}"):
        kind = key.decode().rsplit(":", 2)[-2]
        found[kind] = client.ttl(key)
    return found


async def test_an_ended_reply_keeps_its_claim_two_minutes_and_its_text_one(
    redis_cache: Any,
) -> None:
    message = uuid.uuid4()
    assert await streams.claim(message)
    await streams.set_text(message, "hello")
    await streams.beat(message)
    await streams.request_cancel(message)
    live = ttls(redis_cache, message)
    assert set(live) == {"claim", "stream", "hb", "cancel"}
    assert all(ttl > streams.CLAIM_AFTER_END for ttl in live.values())  # an hour while live

    await streams.clear(message)
    ended = ttls(redis_cache, message)
    assert set(ended) == {"claim", "stream"}  # the heartbeat and the stop request are gone
    assert 0 < ended["claim"] <= streams.CLAIM_AFTER_END
    assert 0 < ended["stream"] <= streams.RETIRED_TTL
    assert not await streams.claim(message)  # a job handed out again still finds it taken
    assert await streams.get_text(message) == "hello"


async def test_a_delta_is_sent_as_its_frame_encoded_once_for_every_socket() -> None:
    conversation, message = str(uuid.uuid4()), str(uuid.uuid4())
    text = 'a "quoted" \\ line\nwith ünïcode, 漢字 and </script>'
    sent = streams.delta_json(conversation, message, 7, text)
    assert sent == await ChatConsumer.encode_json(
        streams.delta_frame(conversation, message, 7, text)
    )
    assert json.loads(sent) == {
        "type": "stream.delta",
        "conversation": conversation,
        "message": message,
        "delta": text,
        "offset": 7,
    }
    assert "漢字" in sent  # as it is, not \u-escaped
    assert streams.delta_json(conversation, message, 7, text) is sent  # the next socket's
    assert streams.delta_json(conversation, message, 8, text) != sent
