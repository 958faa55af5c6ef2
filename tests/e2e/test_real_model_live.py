"""The bundled model, for real, through the whole chat path in both topologies: what a person
gets from `make run` (embedded) and from production's shape (daphne + runworker + Redis +
PostgreSQL). The model lives in a model process of its own, started by the process that serves
inference (the web process embedded, the worker in production): neither of those loads torch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import livedaphne
from tests.e2e.wsclient import LiveSocket, get, signup

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

SECRET = "e2e-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"


def loaded_torch(pid: int) -> bool:
    """Whether a process has torch's shared libraries mapped (it imported torch)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "libtorch" in maps or "/torch/lib/" in maps


def model_processes(pid: int) -> list[int]:
    """The model processes ``pid`` started (its children running inference.model_process)."""
    found = []
    for child in livedaphne.children(pid):
        try:
            if b"inference.model_process" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:  # ended meanwhile
            continue
    return found


@pytest.fixture(scope="module", params=["embedded", "redis"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    env = {
        "DJANGO_SECRET_KEY": SECRET,
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "STELLARCHAT_DATA_DIR": str(tmp_path_factory.mktemp(request.param)),
        "HF_HUB_OFFLINE": "1",
    }
    with livedaphne.topology(request.param, env, redis_index=12) as (server, worker):
        yield server, worker


async def test_the_bundled_model_chats_end_to_end(live: Any) -> None:
    server, worker = live
    cookie = signup(server.url, "realmodel")
    ws = await LiveSocket.open(server.url, cookie)
    await ws.send({"type": "chat.send", "conversation": None, "content": "Hello! What can you do?"})
    frames = await ws.until("stream.end", timeout=120)
    deltas = [f for f in frames if f["type"] == "stream.delta"]
    text = ""
    for d in deltas:
        assert d["offset"] == len(text)
        text += d["delta"]
    end = frames[-1]
    assert end["finish_reason"] == "stop", end  # it ended by itself
    assert len(deltas) > 1 and len(text.split()) >= 3
    assert end["usage"]["completion_tokens"] > 3 and end["timings"]["tokens_per_second"] > 0
    conversation = frames[0]["conversation"]
    # Multi-turn with the real model: the second reply is generated with the first in context.
    await ws.send({"type": "chat.send", "conversation": conversation, "content": "Thanks!"})
    second = await ws.until("stream.end", timeout=120)
    assert second[-1]["finish_reason"] in ("stop", "length")
    await ws.close()
    status, page = get(server.url, f"/c/{conversation}/", cookie)
    assert status == 200
    first_words = " ".join(text.split()[:3])
    import html

    assert first_words in html.unescape(page)  # saved as streamed
    host = worker.pid if worker is not None else server.service.pid  # serves inference
    children = model_processes(host)
    assert len(children) == 1 and loaded_torch(children[0])
    assert not loaded_torch(host), "the process serving inference imported torch"
    assert not loaded_torch(server.service.pid), "the web process imported torch"
