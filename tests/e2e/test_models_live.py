"""Models split across workers, through real processes: daphne, Redis, PostgreSQL and two
``runworker inference`` processes, each given some models by ``STELLARCHAT_WORKER_MODELS``.
A reply goes only to a worker that serves its model; a model nobody serves ends its reply
with ``inference_unavailable`` naming it, and is answered once a worker for it starts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import services
from tests.e2e import livedaphne
from tests.e2e.wsclient import LiveSocket, signup

pytestmark = [pytest.mark.slow]

MODELS = """
default = "alpha"
[models.alpha]
backend = "test"
[models."team/beta"]
backend = "test"
system_prompt = "beta speaking"
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    services.require("PostgreSQL", services.postgres_available())
    services.require("Redis", services.redis_available())
    folder = Path(tmp_path_factory.mktemp("models"))
    (folder / "models.toml").write_text(MODELS)
    env = livedaphne.clean_env(
        DJANGO_SECRET_KEY="e2e-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        DJANGO_DEBUG="0",
        DJANGO_SECURE_SSL_REDIRECT="0",
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        STELLARCHAT_MODELS_FILE=str(folder / "models.toml"),
        STELLARCHAT_STREAM_TIMEOUT="2",
        STELLARCHAT_DATA_DIR=str(folder),
    )
    with livedaphne.postgres_database() as db, livedaphne.redis_db(12) as redis_url:
        env.update(DATABASE_URL=db, REDIS_URL=redis_url)
        with livedaphne.daphne(env) as web:
            yield {"env": env, "url": web.url}


async def ask(sock: LiveSocket, model: str) -> list[dict[str, Any]]:
    await sock.send({"type": "chat.send", "conversation": None, "content": "hi", "model": model})
    return await sock.until("stream.end", timeout=30)


def ending(frames: list[dict[str, Any]]) -> tuple[str, str]:
    end = next(f for f in frames if f["type"] == "stream.end")
    error = next((f["detail"] for f in frames if f["type"] == "error"), "")
    return end["finish_reason"], error


@pytest.mark.asyncio
async def test_a_reply_goes_only_to_a_worker_that_serves_its_model(stack: dict[str, Any]) -> None:
    only_alpha = {**stack["env"], "STELLARCHAT_WORKER_MODELS": "alpha"}
    sock = await LiveSocket.open(stack["url"], signup(stack["url"], "splitter"))
    with livedaphne.worker(only_alpha) as alpha_worker:
        assert "inference.alpha." in alpha_worker.output()
        assert "inference.team-beta." not in alpha_worker.output()
        frames = await ask(sock, "alpha")
        assert ending(frames) == ("stop", "")
        start = next(f for f in frames if f["type"] == "stream.start")
        assert start["model"] == "alpha"
        # nobody serves team/beta: its reply is ended, naming the model, not taken by alpha's
        reason, detail = ending(await ask(sock, "team/beta"))
        assert reason == "error" and "serving the model 'team/beta'" in detail
        only_beta = {**stack["env"], "STELLARCHAT_WORKER_MODELS": "team/beta"}
        with livedaphne.worker(only_beta) as beta_worker:
            frames = await ask(sock, "team/beta")
            assert ending(frames) == ("stop", "")
            assert "inference.team-beta." in beta_worker.output()
    await sock.close()


def test_a_worker_given_a_model_the_file_lacks_does_not_start(stack: dict[str, Any]) -> None:
    import subprocess
    import sys

    env = {**stack["env"], "STELLARCHAT_WORKER_MODELS": "alpha,gamma"}
    done = subprocess.run(
        [sys.executable, "manage.py", "runworker", "inference"],
        cwd=livedaphne.BASE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "STELLARCHAT_WORKER_MODELS names 'gamma'" in done.stderr
    assert "Traceback" not in done.stderr
