"""Prometheus metrics: replies, sockets and the model counted once each, /metrics behind its
token, and — with real processes — several daphne and worker processes adding up."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.test import Client
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from chat import replies
from inference.backends.base import Result
from stellarchat import config, metrics
from tests import factories, services
from tests.chat.wsclient import Socket, communicator, connect
from tests.e2e import livedaphne
from tests.e2e.wsclient import LiveSocket, signup

GENERATIONS = "stellarchat_generations_total"
TOKENS = "stellarchat_generated_tokens_total"
TTFT_COUNT = "stellarchat_time_to_first_token_seconds_count"
TPS_COUNT = "stellarchat_tokens_per_second_count"
ACTIVE = "stellarchat_active_streams"
QUEUED = "stellarchat_inference_queue_depth"
SOCKETS = "stellarchat_websocket_connections"
HTTP_BY_METHOD = "django_http_requests_total_by_method_total"
DB_EXECUTE = "django_db_execute_total"
NAMES = (GENERATIONS, TOKENS, TTFT_COUNT, TPS_COUNT, ACTIVE, QUEUED, SOCKETS)
TOKEN = "metrics-token-0123456789abcdef"


def value(name: str, **labels: str) -> float:
    """This process's current value of a sample (0 when it has none yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def snapshot() -> dict[str, float]:
    values = {name: value(name) for name in NAMES if name != GENERATIONS}
    for reason in metrics.FINISH_REASONS:
        values[reason] = value(GENERATIONS, finish_reason=reason)
    return values


def grew(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before if after[k] != before[k]}


# --- replies through the real WebSocket stack (embedded worker, test backend) ----------------


@pytest_asyncio.fixture
async def chat_layer(settings: Any) -> Any:
    settings.STELLARCHAT_BACKEND = "test"
    settings.STELLARCHAT_TEST_BACKEND_DELAY_MS = 0
    await get_channel_layer().flush()
    yield
    await get_channel_layer().flush()


async def connected(name: str) -> Socket:
    return await connect(await database_sync_to_async(factories.make_user)(name))


async def send(sock: Socket, content: str) -> list[dict[str, Any]]:
    await sock.send({"type": "chat.send", "conversation": None, "content": content})
    return await sock.until("stream.end")


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_finished_reply_is_counted_once(chat_layer: None) -> None:
    sock = await connected("mia")
    before = snapshot()
    end = (await send(sock, "[[slow 5]] [[long 12]]"))[-1]
    assert end["finish_reason"] == "stop"
    tokens = end["usage"]["completion_tokens"]
    assert tokens == 12
    await sock.until("conversation.updated")  # finish() is all done, title included
    assert grew(before, snapshot()) == {"stop": 1, TOKENS: tokens, TTFT_COUNT: 1, TPS_COUNT: 1}
    await sock.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_stopped_reply_counts_as_cancelled(chat_layer: None) -> None:
    sock = await connected("noa")
    before = snapshot()
    await sock.send(
        {"type": "chat.send", "conversation": None, "content": "[[slow 30]] [[long 500]]"}
    )
    head = await sock.until("stream.delta")
    assert value(ACTIVE) == before[ACTIVE] + 1  # generating now
    assert value(QUEUED) == before[QUEUED]
    await sock.send({"type": "chat.stop", "conversation": head[0]["conversation"]})
    end = (await sock.until("stream.end"))[-1]
    assert end["finish_reason"] == "cancelled"
    changed = grew(before, snapshot())
    assert changed.pop("cancelled") == 1
    assert changed.pop(TOKENS) == end["usage"]["completion_tokens"] > 0
    assert changed.pop(TTFT_COUNT) == 1
    changed.pop(TPS_COUNT, None)  # a decode speed when there were two tokens or more
    assert changed == {}  # not also stop or error; nothing left active or queued
    # The stop fallback and the sweeper call finish() too; the reply has ended, so neither counts.
    job = replies.Job(conversation=end["conversation"], message=end["message"], options={})
    before = snapshot()
    for reason in ("cancelled", "error"):
        result = Result(finish_reason=reason, completion_tokens=3, ttft_ms=5.0, duration_ms=9.0)
        await replies.finish(job, layer=get_channel_layer(), text="late", result=result)
    assert grew(before, snapshot()) == {}
    await sock.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_failed_reply_counts_as_error(chat_layer: None) -> None:
    sock = await connected("oli")
    before = snapshot()
    end = (await send(sock, "[[fail]] now"))[-1]
    assert end["finish_reason"] == "error"
    changed = grew(before, snapshot())
    assert changed.pop("error") == 1
    assert changed.pop(TOKENS) == end["usage"]["completion_tokens"]
    changed.pop(TTFT_COUNT, None)
    changed.pop(TPS_COUNT, None)
    assert changed == {}
    await sock.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_socket_gauge_follows_accepted_sockets(chat_layer: None) -> None:
    base = value(SOCKETS)
    first = await connected("pia")
    assert value(SOCKETS) == base + 1
    second = await connected("quin")
    assert value(SOCKETS) == base + 2
    refused = communicator(cookie=None)  # anonymous: refused before accept
    assert (await refused.connect())[0] is False
    await refused.disconnect()  # its disconnect must not take an accepted socket's count
    assert value(SOCKETS) == base + 2
    await first.close()
    assert value(SOCKETS) == base + 1
    await second.close()
    assert value(SOCKETS) == base


def test_the_reply_tracker_moves_from_queued_to_active_to_done() -> None:
    queued, active = value(QUEUED), value(ACTIVE)
    with metrics.ReplyTracker() as tracker:
        assert (value(QUEUED), value(ACTIVE)) == (queued + 1, active)
        tracker.started()
        assert (value(QUEUED), value(ACTIVE)) == (queued, active + 1)
        tracker.done()
        tracker.started()  # the inference thread getting to it late changes nothing
    assert (value(QUEUED), value(ACTIVE)) == (queued, active)
    with metrics.ReplyTracker():  # ended before it ever started (stopped while queued)
        assert value(QUEUED) == queued + 1
    assert (value(QUEUED), value(ACTIVE)) == (queued, active)


def test_loading_a_model_records_how_long_it_took(tmp_path: Path) -> None:
    from inference.backends.hf import TransformersBackend
    from tests.inference import tinymodels

    metrics.model_loaded(-1.0)
    loaded = TransformersBackend(str(tinymodels.build(tmp_path, "llama")), device="cpu").load()
    assert value("stellarchat_model_load_seconds") == loaded.load_seconds > 0


# --- /metrics ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_serves_metrics_openly_without_a_token(settings: Any) -> None:
    settings.STELLARCHAT_METRICS_TOKEN = ""
    response = Client().get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    body = response.content.decode()
    for name in (GENERATIONS, SOCKETS, ACTIVE, QUEUED, "django_http_requests_total_by_method"):
        assert name in body


@pytest.mark.django_db
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer"])
def test_it_rejects_a_missing_or_wrong_token(settings: Any, header: str | None) -> None:
    settings.STELLARCHAT_METRICS_TOKEN = TOKEN
    extra = {"HTTP_AUTHORIZATION": header} if header is not None else {}
    response = Client().get("/metrics", **extra)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert GENERATIONS not in response.content.decode()


@pytest.mark.django_db
def test_it_serves_metrics_with_the_right_token(settings: Any) -> None:
    settings.STELLARCHAT_METRICS_TOKEN = TOKEN
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    body = response.content.decode()
    for name in (GENERATIONS, TOKENS, "stellarchat_time_to_first_token_seconds", SOCKETS):
        assert name in body


@pytest.mark.django_db
def test_scrapes_are_not_redirected_to_https(settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.STELLARCHAT_METRICS_TOKEN = ""
    assert Client().get("/metrics").status_code == 200


def test_database_metrics_come_from_the_wrapped_engine() -> None:
    from django.db import connection

    assert connection.settings_dict["ENGINE"].startswith("django_prometheus.db.backends.")


# --- configuration -------------------------------------------------------------------------


def load(tmp_path: Path, **env: str) -> config.Config:
    env.setdefault("STELLARCHAT_DATA_DIR", str(tmp_path))
    env.setdefault("DJANGO_DEBUG", "1")
    return config.load(env, base_dir=Path(__file__).resolve().parents[2])


def test_the_metrics_variables_are_read(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    assert (cfg.metrics_token, cfg.worker_metrics_port) == ("", None)
    cfg = load(tmp_path, STELLARCHAT_METRICS_TOKEN=TOKEN, STELLARCHAT_WORKER_METRICS_PORT="9101")
    assert (cfg.metrics_token, cfg.worker_metrics_port) == (TOKEN, 9101)
    assert load(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(tmp_path)).debug is True


@pytest.mark.parametrize("port", ["abc", "0", "65536", "-1"])
def test_a_bad_worker_metrics_port_is_refused(tmp_path: Path, port: str) -> None:
    with pytest.raises(config.ConfigError, match="STELLARCHAT_WORKER_METRICS_PORT"):
        load(tmp_path, STELLARCHAT_WORKER_METRICS_PORT=port)


@pytest.mark.parametrize("where", ["", "missing"])
def test_a_missing_multiprocess_directory_is_refused(tmp_path: Path, where: str) -> None:
    with pytest.raises(config.ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        load(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / where) if where else "")


# --- real processes ------------------------------------------------------------------------


def scrape(url: str, token: str | None = None) -> dict[tuple[str, tuple[Any, ...]], float]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def stops(sample: dict[tuple[str, tuple[Any, ...]], float]) -> float:
    return sample.get((GENERATIONS, (("finish_reason", "stop"),)), 0.0)


def until(check: Any, what: str, timeout: float = 20.0) -> Any:
    """Poll ``check()`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as exc:  # not listening yet
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@contextmanager
def topology(env: dict[str, str]) -> Iterator[list[livedaphne.Server]]:
    """Two daphne web processes and one inference worker, on PostgreSQL and Redis db 11."""
    services.require("PostgreSQL", services.postgres_available())
    services.require("Redis", services.redis_available())
    with ExitStack() as stack:
        env["DATABASE_URL"] = stack.enter_context(livedaphne.postgres_database())
        env["REDIS_URL"] = stack.enter_context(livedaphne.redis_db(11))
        webs = [
            stack.enter_context(livedaphne.daphne(env)),
            stack.enter_context(livedaphne.daphne(env, run_migrations=False)),
        ]
        stack.enter_context(livedaphne.worker(env))
        yield webs


async def chat_once(web: livedaphne.Server, name: str) -> dict[str, Any]:
    ws = await LiveSocket.open(web.url, signup(web.url, name))
    try:
        await ws.send({"type": "chat.send", "conversation": None, "content": f"hi from {name}"})
        end = (await ws.until("stream.end"))[-1]
    finally:
        await ws.close()
    assert end["finish_reason"] == "stop", end
    return end


def base_env(tmp_path: Path) -> dict[str, str]:
    return {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "metrics-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "STELLARCHAT_DATA_DIR": str(tmp_path / "data"),
        "STELLARCHAT_BACKEND": "test",
        "STELLARCHAT_WORKER_METRICS_PORT": str(livedaphne.free_port()),
    }


@pytest.mark.slow
@pytest.mark.asyncio
async def test_every_web_process_reports_the_sum_of_all_processes(tmp_path: Path) -> None:
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()  # fresh and empty, as at every deployment start
    env = base_env(tmp_path)
    env.update(PROMETHEUS_MULTIPROC_DIR=str(multiproc), STELLARCHAT_METRICS_TOKEN=TOKEN)
    worker_url = f"http://127.0.0.1:{env['STELLARCHAT_WORKER_METRICS_PORT']}/metrics"
    with topology(env) as webs:
        ends = [await chat_once(web, f"metrics{i}") for i, web in enumerate(webs)]
        tokens = sum(end["usage"]["completion_tokens"] for end in ends)

        def settled(url: str, token: str | None = TOKEN) -> Any:
            sample = scrape(url, token)
            done = stops(sample) >= 2 and sample.get((SOCKETS, ()), -1) == 0
            return sample if done else None

        for web in webs:  # either web process sees the whole picture
            sample = until(lambda web=web: settled(web.url + "/metrics"), f"{web.url} to add up")
            assert stops(sample) == 2
            for reason in ("length", "cancelled", "error"):
                assert sample[(GENERATIONS, (("finish_reason", reason),))] == 0
            assert sample[(TOKENS, ())] == tokens
            assert sample[(TTFT_COUNT, ())] == 2
            assert sample[(SOCKETS, ())] == 0
            assert sample[(ACTIVE, ())] == 0 and sample[(QUEUED, ())] == 0
            assert sample[(HTTP_BY_METHOD, (("method", "GET"),))] > 0  # django-prometheus
            assert sample[(DB_EXECUTE, (("alias", "default"), ("vendor", "postgresql")))] > 0
            with pytest.raises(urllib.error.HTTPError) as refused:
                scrape(web.url + "/metrics")
            assert refused.value.code == 401
        # The worker's own port serves the same aggregate.
        assert stops(until(lambda: settled(worker_url, None), "the worker's port")) == 2


@pytest.mark.slow
@pytest.mark.asyncio
async def test_without_a_shared_directory_each_process_reports_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)  # not inherited either
    env = base_env(tmp_path)
    worker_url = f"http://127.0.0.1:{env['STELLARCHAT_WORKER_METRICS_PORT']}/metrics"
    with topology(env) as webs:
        for i, web in enumerate(webs):
            await chat_once(web, f"solo{i}")
        # The worker generated both replies; it serves them on its own port.
        until(lambda: stops(scrape(worker_url)) == 2, "the worker to count both replies")
        for web in webs:  # a web process generates nothing; it counts only its own sockets
            sample = until(
                lambda web=web: (s := scrape(web.url + "/metrics")).get((SOCKETS, ())) == 0 and s,
                f"{web.url} sockets to close",
            )
            assert stops(sample) == 0
            assert sample[(HTTP_BY_METHOD, (("method", "GET"),))] > 0
