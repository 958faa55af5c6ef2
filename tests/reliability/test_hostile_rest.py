"""The hostile-input corpus through the REST API (POST /v1/chat/completions, GET /v1/models),
in-process with the embedded worker: every field, raw bodies, and headers. Each request gets a
4xx in OpenAI's error shape naming the problem, or a real completion; never a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient

from chat.models import Message
from tests import factories
from tests.api.test_rest_api import MODEL, MODELS, URL, call
from tests.reliability import hostile

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.usefixtures("fresh_layer", "no_limits"),
]

FIELDS = [
    "model",
    "messages",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "response_format",
    "n",
    "tools",
    "user",
]
CORE = [h.value for h in hostile.core()]


@pytest.fixture
def no_limits(settings: Any) -> None:
    settings.STELLARCHAT_RATE_LIMIT_PER_MINUTE = 0
    settings.STELLARCHAT_TOKENS_PER_DAY = 0


async def send(plain: str, body: bytes | str, **headers: str) -> Any:
    return await call(
        AsyncClient(),
        "post",
        URL,
        data=body,
        content_type=headers.pop("content_type", "application/json"),
        headers={"authorization": f"Bearer {plain}", **headers},
    )


def body(content: Any = "hi", **fields: Any) -> str:
    """A request body; ``json.dumps`` escapes lone surrogates as ``\\ud800``, as clients do."""
    return json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": content}], **fields}
    )


def answered(response: Any) -> dict[str, Any]:
    """A completion (200, or a stream) or a 4xx error in OpenAI's shape; never a 5xx."""
    assert response.status_code < 500, response.status_code
    if response.status_code == 200:
        if response.get("Content-Type", "").startswith("text/event-stream"):
            return {}
        return dict(response.json())
    assert 400 <= response.status_code < 500
    error = response.json()["error"]
    assert error["message"] and error["type"], error
    return dict(error)


@database_sync_to_async
def key_for(name: str) -> str:
    return factories.user_with_key(name)[2]


async def test_every_message_text_is_refused_clearly_or_completed(settings: Any) -> None:
    plain = await key_for("texts")
    for entry in hostile.texts():
        text = entry.value
        response = await send(plain, body(text))
        result = answered(response)
        if hostile.storable(text) and len(text) <= settings.STELLARCHAT_MAX_MESSAGE_CHARS:
            assert response.status_code == 200, (entry.name, result)
            assert result["choices"][0]["message"]["content"].startswith("You said: ")
        else:
            assert response.status_code == 400, entry.name
            assert result["param"].startswith("messages[0]"), (entry.name, result)


async def test_every_field_with_wrong_types_or_hostile_text_is_a_clear_answer() -> None:
    plain = await key_for("fields")
    for name in FIELDS:
        # Short replies (max_tokens 2) keep the accepted variants quick.
        short = {} if name.startswith("max_") else {"max_tokens": 2}
        values = [*hostile.WRONG_TYPES, *CORE[::3], CORE]
        # "user" is accepted and ignored whatever it holds: a few values show that.
        for value in values[:4] if name == "user" else values:
            response = await send(plain, body(**{**short, name: value}))
            result = answered(response)
            if response.status_code == 400:
                assert result["param"] is None or result["param"].startswith(name.split("_")[0])
    for value in [*hostile.WRONG_TYPES, *CORE]:  # inside the messages too
        for message in ({"role": value, "content": "hi"}, {"role": "user", "content": [value]}):
            answered(await send(plain, json.dumps({"model": MODEL, "messages": [message]})))
        answered(await send(plain, json.dumps({"model": MODEL, "messages": value})))


async def test_hostile_documents_and_bytes_are_invalid_json() -> None:
    plain = await key_for("documents")
    for entry in [*hostile.entries("document"), *hostile.entries("bytes")]:
        value = entry.value
        response = await send(plain, value)
        result = answered(response)
        assert response.status_code == 400, entry.name
        if not isinstance(parsed(value), dict):
            assert result["code"] == "invalid_json", (entry.name, result)


def parsed(value: str | bytes) -> Any:
    """What Python's JSON reader makes of a body (None: not JSON at all)."""
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return None


async def test_hostile_headers_are_refused_clearly() -> None:
    plain = await key_for("headers")
    for value in [
        "",
        "Bearer",
        "Bearer  ",
        "Basic " + plain,
        "Bearer sc_x",
        plain,
        "Bearer " + "a" * 100_000,
    ]:
        for path, method, extra in (
            (URL, "post", {"data": body(), "content_type": "application/json"}),
            (MODELS, "get", {}),
        ):
            response = await call(
                AsyncClient(), method, path, headers={"authorization": value}, **extra
            )
            assert response.status_code == 401, (value[:20], path)
            assert response.json()["error"]["code"] in ("missing_api_key", "invalid_api_key")
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "application/json; charset=utf-16",
        "nonsense",
    ]:
        response = await send(plain, body(), content_type=content_type)
        assert answered(response) and response.status_code in (200, 400), content_type
    for language in ["x" * 10_000, "\x00", "*;q=nan"]:
        response = await send(plain, body(), **{"accept-language": language})
        assert response.status_code == 200


async def test_the_same_process_still_completes_afterwards() -> None:
    plain = await key_for("after")
    response = await send(plain, body("still fine?"))
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "You said: still fine? (turn 1)"
    assert await database_sync_to_async(Message.objects.count)() == 2
