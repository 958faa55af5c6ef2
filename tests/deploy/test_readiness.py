"""/healthz answers while the process lives; /readyz says whether a chat can be served."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from django.test import AsyncClient

from tests import services
from tests.e2e import livedaphne


def fetch(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def poll(url: str, want: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = fetch(url)
        if status == want:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} stayed {status}: {body}")
        time.sleep(0.3)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_embedded_readiness_starts_the_worker_and_goes_ready(settings: Any) -> None:
    settings.STELLARCHAT_BACKEND = "test"
    client = AsyncClient()
    assert (await client.get("/healthz")).content == b"ok"
    deadline = time.monotonic() + 10
    while True:
        response = await client.get("/readyz")
        body = json.loads(response.content)
        if response.status_code == 200:
            break
        assert response.status_code == 503 and body["missing"]
        assert time.monotonic() < deadline, body
        import asyncio

        await asyncio.sleep(0.2)
    assert body == {
        "ready": True,
        "checks": {"database": True, "channel_layer": True, "worker": True, "model": True},
        "missing": [],
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_readiness_names_what_is_missing(settings: Any, monkeypatch: Any) -> None:
    from stellarchat import health

    settings.STELLARCHAT_BACKEND = "test"
    monkeypatch.setattr(health, "_database_ok", lambda: False)
    response = await AsyncClient().get("/readyz")
    assert response.status_code == 503
    assert "database" in json.loads(response.content)["missing"]


@pytest.mark.slow
def test_readiness_follows_the_worker_in_production_shape(tmp_path: Any) -> None:
    services.require("PostgreSQL", services.postgres_available())
    services.require("Redis", services.redis_available())
    env = {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "readyz-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "DJANGO_SECURE_SSL_REDIRECT": "1",  # probes are exempt from the HTTPS redirect
        "STELLARCHAT_DATA_DIR": str(tmp_path),
        "STELLARCHAT_BACKEND": "test",
    }
    with livedaphne.postgres_database() as db_url, livedaphne.redis_db(10) as redis_url:
        env.update(DATABASE_URL=db_url, REDIS_URL=redis_url)
        with livedaphne.daphne(env) as server:
            url = server.url + "/readyz"
            body = poll(url, 503, 5)
            assert body["checks"]["database"] and body["checks"]["channel_layer"]
            assert set(body["missing"]) == {"worker", "model"}
            with livedaphne.worker(env) as worker:
                poll(url, 200, 30)
                os.kill(worker.pid, signal.SIGKILL)
                body = poll(url, 503, 20)  # its heartbeat goes stale
                assert "worker" in body["missing"]
            with livedaphne.worker(env):
                poll(url, 200, 30)  # a restarted worker: ready again, no web restart


@pytest.mark.asyncio
async def test_a_model_that_just_loaded_is_ready_at_once(monkeypatch: Any) -> None:
    """The worker's warm-up announces the loaded model itself: /readyz's check turns true the
    moment the load ends, not on the heartbeat after (up to INTERVAL later)."""
    from django.core.cache import cache

    from inference import backends, heartbeat, worker

    class Slow:
        ready = False

        def load(self) -> None:
            time.sleep(0.2)
            self.ready = True

    await cache.adelete_many([heartbeat.ALIVE_KEY, heartbeat.READY_KEY])
    monkeypatch.setattr(backends, "get_backend", lambda: Slow())
    assert await heartbeat.status() == {"worker": False, "model": False}
    await worker.warm_up()  # no beat_forever running: only the warm-up beats
    assert await heartbeat.status() == {"worker": True, "model": True}


@pytest.mark.asyncio
async def test_a_model_that_failed_to_load_is_not_announced(monkeypatch: Any) -> None:
    from django.core.cache import cache

    from inference import backends, heartbeat, worker

    class Broken:
        ready = False

        def load(self) -> None:
            raise RuntimeError("no such model")

    await cache.adelete_many([heartbeat.ALIVE_KEY, heartbeat.READY_KEY])
    monkeypatch.setattr(backends, "get_backend", lambda: Broken())
    await worker.warm_up()
    assert await heartbeat.status() == {"worker": False, "model": False}
