"""Production's shape, natively: two daphne web processes, two inference workers, Redis and
PostgreSQL. Any web process serves any conversation; replies spread over the workers."""

from __future__ import annotations

import asyncio
import re
from contextlib import ExitStack
from typing import Any

import pytest

from tests import services
from tests.e2e import livedaphne
from tests.e2e.wsclient import LiveSocket, signup

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(f["delta"] for f in frames if f["type"] == "stream.delta")


async def test_two_web_processes_two_workers(tmp_path: Any) -> None:
    services.require("PostgreSQL", services.postgres_available())
    services.require("Redis", services.redis_available())
    env = {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "topology-secret-0123456789-abcdefghijklmnopqrstuvwxyz",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "STELLARCHAT_DATA_DIR": str(tmp_path),
        "STELLARCHAT_BACKEND": "test",
        # One person starts six replies at once below: above the default per-user limit.
        "STELLARCHAT_MAX_CONCURRENT_STREAMS": "0",
    }
    with livedaphne.postgres_database() as db_url, livedaphne.redis_db(9) as redis_url:
        env.update(DATABASE_URL=db_url, REDIS_URL=redis_url)
        with ExitStack() as stack:
            web_a = stack.enter_context(livedaphne.daphne(env))
            web_b = stack.enter_context(livedaphne.daphne(env, run_migrations=False))
            workers = [stack.enter_context(livedaphne.worker(env)) for _ in range(2)]
            cookie = signup(web_a.url, "twoplaces")

            # A conversation started through one web process continues through the other,
            # and a tab on the other process follows the reply live.
            ws_a = await LiveSocket.open(web_a.url, cookie)
            await ws_a.send({"type": "chat.send", "conversation": None, "content": "hello"})
            first = await ws_a.until("stream.end")
            conversation = first[0]["conversation"]
            ws_b = await LiveSocket.open(web_b.url, cookie)
            await ws_b.send({"type": "chat.subscribe", "conversation": conversation})
            await ws_b.until("subscribed")
            await ws_b.send({"type": "chat.send", "conversation": conversation, "content": "again"})
            on_b, on_a = await ws_b.until("stream.end"), await ws_a.until("stream.end")
            assert text_of(on_b) == text_of(on_a) == "You said: again (turn 2)"

            # Several replies at once spread over both workers.
            sockets = [await LiveSocket.open(url, cookie) for url in (web_a.url, web_b.url) * 3]
            for ws in sockets:
                await ws.send(
                    {
                        "type": "chat.send",
                        "conversation": None,
                        "content": "[[slow 30]] [[long 40]]",
                    }
                )
            ends = await asyncio.gather(*(ws.until("stream.end", timeout=60) for ws in sockets))
            assert all(e[-1]["finish_reason"] == "stop" for e in ends)
            served = [len(re.findall(r"reply \S+: generating", w.output())) for w in workers]
            logs = "\n=====\n".join(w.output() for w in workers)
            assert sum(served) == 8 and min(served) >= 1, (served, logs)
            for ws in [ws_a, ws_b, *sockets]:
                await ws.close()
