"""A remote model in the registry, for real: StellarChat B serves /v1 with the bundled model;
StellarChat A's models file has a local model (the test backend), B's model by name
(``backend = "openai"``) and B as a provider (every model B lists, under ``b/``). A person on
A compares the local model with B's side by side, and the arena draws from the two, over real
HTTP between two daphne processes.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from tests.e2e import livedaphne
from tests.e2e.test_remote_live import BASE_ENV, upstream_with_key
from tests.e2e.wsclient import LiveSocket, signup

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

UPSTREAM_MODEL = "stellarbyte-mini"
GREEDY = {"temperature": 0, "max_new_tokens": 40}


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = BASE_ENV
    with upstream_with_key(tmp_path_factory) as (upstream, _, key):
        folder = Path(tmp_path_factory.mktemp("front"))
        (folder / "models.toml").write_text(
            f"""
            default = "echo"
            arena = ["echo", "far"]
            [models.echo]
            backend = "test"
            [models.far]
            label = "B's model"
            backend = "openai"
            url = "{upstream.url}/v1"
            remote_model = "{UPSTREAM_MODEL}"
            api_key_env = "B_KEY"
            [providers.b]
            url = "{upstream.url}/v1"
            api_key_env = "B_KEY"
            prefix = "b/"
            """
        )
        front_env = {
            **base,
            "STELLARCHAT_DATA_DIR": str(folder),
            "STELLARCHAT_MODELS_FILE": str(folder / "models.toml"),
            "B_KEY": key,
            "STELLARCHAT_TEST_BACKEND_DELAY_MS": "5",
        }
        with livedaphne.daphne(front_env) as server:
            yield {"front": server, "upstream": upstream, "key": key}


def direct(front: dict[str, Any], content: str) -> str:
    """What B's model answers, asked straight (greedy)."""
    client = OpenAI(base_url=front["upstream"].url + "/v1", api_key=front["key"], max_retries=0)
    answer = client.chat.completions.create(
        model=UPSTREAM_MODEL,
        messages=[{"role": "user", "content": content}],
        temperature=0,
        max_tokens=GREEDY["max_new_tokens"],
    )
    return answer.choices[0].message.content or ""


async def ended(ws: LiveSocket, count: int) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while sum(f["type"] == "stream.end" for f in frames) < count:
        frames += await ws.until("stream.end", timeout=120)
    return frames


def text_of(frames: list[dict[str, Any]], message: str) -> str:
    parts = [f for f in frames if f["type"] == "stream.delta" and f["message"] == message]
    return "".join(f["delta"] for f in parts)


def picker_names(front: dict[str, Any], cookie: str) -> list[str]:
    request = urllib.request.Request(front["front"].url + "/", headers={"Cookie": cookie})
    with urllib.request.urlopen(request, timeout=30) as response:
        page = response.read().decode()
    start = page.index('id="model-picker"')
    return [
        chunk.split('"', 1)[0]
        for chunk in page[start : page.index("</select>", start)].split('value="')[1:]
    ]


async def test_compare_a_local_model_with_a_remote_one(front: dict[str, Any]) -> None:
    cookie = signup(front["front"].url, "ada")
    # B's models, listed by B itself, join the registry within a moment (never on a request)
    deadline = time.monotonic() + 30
    while "b/stellarbyte-mini" not in picker_names(front, cookie):
        assert time.monotonic() < deadline, picker_names(front, cookie)
        time.sleep(0.5)
    assert picker_names(front, cookie)[:2] == ["echo", "far"]

    ws = await LiveSocket.open(front["front"].url, cookie)
    await ws.send(
        {
            "type": "chat.send",
            "conversation": None,
            "content": "What can you do?",
            "models": ["echo", "far"],
            "options": GREEDY,
        }
    )
    frames = await ended(ws, 2)
    starts = {f["model"]: f for f in frames if f["type"] == "stream.start"}
    assert {s["group"] for s in starts.values()} == {starts["echo"]["group"]}
    ends = {f["message"]: f for f in frames if f["type"] == "stream.end"}
    assert all(e["finish_reason"] in ("stop", "length") for e in ends.values()), ends
    assert text_of(frames, starts["echo"]["message"]).startswith("You said: What can you do?")
    assert text_of(frames, starts["far"]["message"]) == direct(front, "What can you do?")

    # a model B lists, under the provider's prefix
    conversation = next(f for f in frames if f["type"] == "conversation.created")["conversation"]
    await ws.send(
        {
            "type": "chat.send",
            "conversation": conversation,
            "content": "Tell me more.",
            "model": "b/stellarbyte-mini",
            "options": GREEDY,
        }
    )
    frames = await ended(ws, 1)
    start = next(f for f in frames if f["type"] == "stream.start")
    assert start["model"] == "b/stellarbyte-mini" and frames[-1]["finish_reason"] != "error"
    assert text_of(frames, start["message"]).strip()
    await ws.close()


async def test_the_arena_draws_the_local_and_the_remote_model_blind(front: dict[str, Any]) -> None:
    cookie = signup(front["front"].url, "bea")
    ws = await LiveSocket.open(front["front"].url, cookie)
    await ws.send(
        {
            "type": "chat.send",
            "conversation": None,
            "content": "Hello!",
            "arena": True,
            "options": GREEDY,
        }
    )
    frames = await ended(ws, 2)
    starts = [f for f in frames if f["type"] == "stream.start"]
    assert [s["model"] for s in starts] == [None, None]
    raw = json.dumps(frames)
    assert '"far"' not in raw and '"echo"' not in raw and front["upstream"].url not in raw
    conversation = starts[0]["conversation"]
    await ws.send(
        {
            "type": "chat.vote",
            "conversation": conversation,
            "group": starts[0]["group"],
            "winner": starts[1]["message"],
        }
    )
    saved = (await ws.until("vote.saved"))[-1]
    assert sorted(saved["models"].values()) == ["echo", "far"]
    far = next(m for m, name in saved["models"].items() if name == "far")
    assert text_of(frames, far) == direct(front, "Hello!")
    await ws.close()
