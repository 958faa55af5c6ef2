"""Choosing a model, through the real ASGI stack and the embedded worker: two real local
models (the bundled one and a tiny one built here, each in its own model process) and a
group-restricted one. A reply comes from the model asked for, a conversation keeps its model
and switches when asked, and a model that does not exist and one a person may not use get the
same answer on the WebSocket and the API, with nothing saved."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import Group

from chat.models import Conversation, Message
from tests import factories
from tests.api.test_rest_api import auth, call, post
from tests.chat.registry_support import GREEDY, alone, backends_of, use
from tests.chat.wsclient import Socket, connect, reply_text
from tests.inference import tinymodels

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.usefixtures("fresh_layer"),
]


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The models file, read as start-up reads it, and its backends for the whole module (a
    model process each, started on first use)."""
    tiny = tinymodels.build(tmp_path_factory.mktemp("models") / "tiny", "llama")
    text = f"""
        default = "mini"
        [models.mini]
        backend = "transformers"
        path = "inference/bundled/stellarbyte-mini"
        max_batch = 4
        [models.tiny]
        label = "Tiny"
        backend = "transformers"
        path = "{tiny}"
        system_prompt = "You are tiny."
        [models.echo]
        backend = "test"
        groups = ["research"]
    """
    yield from backends_of(text)


@pytest.fixture(autouse=True)
def registry_file(backends: dict[str, Any], settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    use(backends, settings, monkeypatch)


async def chat(sock: Socket, content: str, conversation: str | None = None, **extra: Any) -> Any:
    frame = {"type": "chat.send", "conversation": conversation, "content": content}
    await sock.send({**frame, "options": GREEDY, **extra})
    return await sock.until("stream.end", timeout=60)


def start_of(frames: list[dict[str, Any]]) -> dict[str, Any]:
    return next(f for f in frames if f["type"] == "stream.start")


@database_sync_to_async
def saved(conversation: str) -> tuple[str, list[tuple[str, str]]]:
    conv = Conversation.objects.get(pk=conversation)
    rows = Message.objects.filter(conversation=conv, role="assistant").order_by("position")
    return conv.model_name, [(m.model_name, m.content) for m in rows]


async def test_a_reply_comes_from_the_model_asked_for_and_the_conversation_keeps_it() -> None:
    sock = await connect(await factories.amake_user("ada"))
    frames = await chat(sock, "Hello there", model="tiny")
    conv = next(f for f in frames if f["type"] == "conversation.created")["conversation"]
    assert start_of(frames)["model"] == "tiny"
    # the model's own system prompt applies (the conversation has none)
    system = {"role": "system", "content": "You are tiny."}
    tiny_text = alone("tiny", [system, {"role": "user", "content": "Hello there"}])
    assert reply_text(frames) == tiny_text

    frames = await chat(sock, "And again", conversation=conv)  # no model: it keeps "tiny"
    assert start_of(frames)["model"] == "tiny"

    frames = await chat(sock, "Now you", conversation=conv, model="mini")  # switches
    assert start_of(frames)["model"] == "mini"
    history = [
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": tiny_text},
        {"role": "user", "content": "And again"},
        {"role": "assistant", "content": (await saved(conv))[1][1][1]},
        {"role": "user", "content": "Now you"},
    ]
    assert reply_text(frames) == alone("mini", history)  # mini's system prompt: none
    model, replies = await saved(conv)
    assert model == "mini" and [m for m, _ in replies] == ["tiny", "tiny", "mini"]

    frames = await chat(sock, "A new one")  # no model asked for: the default
    assert start_of(frames)["model"] == "mini"
    await sock.close()


async def test_unknown_and_forbidden_models_get_the_same_answer_and_save_nothing() -> None:
    user = await factories.amake_user("bob")
    sock = await connect(user)
    answers = []
    for name in ("echo", "gpt-4o", "../../etc/passwd", "x" * 200):
        await sock.send({"type": "chat.send", "conversation": None, "content": "hi", "model": name})
        error = await sock.recv()
        assert error["type"] == "error" and error["code"] == "unknown_model", error
        answers.append(error["detail"].replace(repr(name), "NAME"))
    assert len(set(answers)) == 1  # nothing tells a restricted model from a missing one
    for bad in (7, "", ["mini"], None):
        frame = {"type": "chat.send", "conversation": None, "content": "hi", "model": bad}
        await sock.send(frame)
        if bad is None:  # null is "no model asked for": the default answers
            assert start_of(await sock.until("stream.end", timeout=60))["model"] == "mini"
        else:
            assert (await sock.recv())["code"] == "invalid_frame"
    count = await database_sync_to_async(Conversation.objects.filter(owner=user).count)()
    assert count == 1  # only the one the default answered

    # a member of the group may use it, in a new conversation and by switching
    group = await database_sync_to_async(Group.objects.create)(name="research")
    await database_sync_to_async(user.groups.add)(group)
    frames = await chat(sock, "hi", model="echo")
    assert start_of(frames)["model"] == "echo" and reply_text(frames).startswith("You said: hi")
    await sock.close()


async def test_the_api_lists_and_routes_by_what_the_key_s_owner_may_use() -> None:
    from api.services import api_key_create

    user = await factories.amake_user("cy")
    _, plain = await database_sync_to_async(api_key_create)(user=user, name="k")
    from django.test import AsyncClient

    listing = await call(AsyncClient(), "get", "/v1/models", headers=auth(plain))
    assert [m["id"] for m in json.loads(listing.content)["data"]] == ["mini", "tiny"]

    def completion(model: str) -> dict[str, Any]:
        turns = [{"role": "user", "content": "Hello there"}]
        return {"model": model, "messages": turns, "temperature": 0, "max_tokens": 12}

    for model in ("echo", "gpt-4o"):
        response = await post(plain, completion(model))
        assert response.status_code == 404
        error = json.loads(response.content)["error"]
        assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error"
        assert "'echo'" not in error["message"].split("yours")[1]  # not listed to a non-member
    response = await post(plain, completion("tiny"))
    assert response.status_code == 200, response.content
    answer = json.loads(response.content)
    assert answer["model"] == "tiny"
    system = {"role": "system", "content": "You are tiny."}
    expected = alone("tiny", [system, {"role": "user", "content": "Hello there"}])
    assert answer["choices"][0]["message"]["content"] == expected
