"""channels-redis counts capacity per Redis key, and all sockets of one web process share one
key: a process lagging a moment behind some sockets' deltas must not drop another socket's
frames. Run with production's settings (REDIS_URL set) in a subprocess, against real Redis."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.e2e import livedaphne

SCENARIO = textwrap.dedent(
    """
    import asyncio, django
    django.setup()
    from channels.layers import get_channel_layer
    from channels_redis.core import RedisChannelLayer
    from django.conf import settings

    async def delivered(layer):
        await layer.flush()
        busy, other = await layer.new_channel(), await layer.new_channel()  # one process
        await layer.group_add("conversation.busy", busy)
        await layer.group_add("conversation.other", other)
        for i in range(300):  # deltas waiting for a socket whose process lags behind
            await layer.group_send("conversation.busy", {"type": "stream.delta", "i": i})
        await layer.group_send("conversation.other", {"type": "stream.start"})
        try:
            await asyncio.wait_for(layer.receive(other), 3)
            return True
        except TimeoutError:
            return False
        finally:
            await layer.flush()

    async def main():
        hosts = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
        print("stock", await delivered(RedisChannelLayer(hosts=hosts)))
        print("ours", await delivered(get_channel_layer()))

    asyncio.run(main())
    """
)


def test_a_lagging_socket_does_not_make_the_process_drop_anothers_frames() -> None:
    env = livedaphne.clean_env(
        DJANGO_DEBUG="1",
        REDIS_URL="redis://127.0.0.1:6379/4",
        DJANGO_SETTINGS_MODULE="stellarchat.settings",
    )
    out = subprocess.run(
        [sys.executable, "-c", SCENARIO],
        cwd=livedaphne.BASE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    # channels-redis's default capacity (100) drops it: the trap is real...
    assert out[:2] == ["stock", "False"], out
    # ...and production's settings do not fall into it.
    assert out[2:] == ["ours", "True"], out
