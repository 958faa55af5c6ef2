"""Redis goes away mid-reply and comes back: clear errors while it is gone, recovery without
restarting anything, nothing lost. Uses a redis-server of its own, so the shared one stays up."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests import services
from tests.e2e import livedaphne
from tests.e2e.wsclient import LiveSocket, get, signup

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]


@contextmanager
def redis_server(port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while (
        subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip()
        != b"PONG"
    ):
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.1)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def ready(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def wait_ready(url: str, want: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = await asyncio.to_thread(ready, url)
        if status == want:
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.3)


async def test_redis_restart_mid_reply(tmp_path: Any) -> None:
    if not shutil.which("redis-server"):
        services.require("redis-server binary", False)
    services.require("PostgreSQL", services.postgres_available())
    port = livedaphne.free_port()
    env = {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "redis-outage-secret-0123456789-abcdefghijklmnopqrstuvwxyz",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "STELLARCHAT_DATA_DIR": str(tmp_path),
        "STELLARCHAT_BACKEND": "test",
        "STELLARCHAT_STREAM_TIMEOUT": "5",
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
    }
    with livedaphne.postgres_database() as db_url:
        env["DATABASE_URL"] = db_url
        with (
            redis_server(port) as redis_proc,
            livedaphne.daphne(env) as server,
            livedaphne.worker(env),
        ):
            await wait_ready(server.url, 200, 30)
            cookie = signup(server.url, "outage")
            ws = await LiveSocket.open(server.url, cookie)
            await ws.send(
                {"type": "chat.send", "conversation": None, "content": "[[slow 40]] [[long 100]]"}
            )
            head = await ws.until("stream.delta")
            conversation = head[0]["conversation"]

            redis_proc.terminate()  # Redis goes away mid-reply
            redis_proc.wait(timeout=10)
            body = await wait_ready(server.url, 503, 15)
            assert "channel_layer" in body["missing"]  # a clear answer while it is gone
            status, page = await asyncio.to_thread(get, server.url, f"/c/{conversation}/", cookie)
            assert status == 200  # pages that need only the database still work

            with redis_server(port):  # it comes back, same address
                await wait_ready(server.url, 200, 30)  # recovered, nothing restarted
                # The interrupted reply was generated to the end and saved, not left hanging.
                deadline = time.monotonic() + 20
                while True:
                    _, page = await asyncio.to_thread(
                        get, server.url, f"/c/{conversation}/", cookie
                    )
                    if "w99" in page and "status-streaming" not in page:
                        break
                    assert time.monotonic() < deadline, "the reply never finished"
                    await asyncio.sleep(0.5)
                fresh = await LiveSocket.open(server.url, cookie)
                await fresh.send({"type": "chat.send", "conversation": None, "content": "back?"})
                frames = await fresh.until("stream.end", timeout=30)
                assert frames[-1]["finish_reason"] == "stop"
                assert "".join(f["delta"] for f in frames if f["type"] == "stream.delta") == (
                    "You said: back? (turn 1)"
                )
                await fresh.close()
