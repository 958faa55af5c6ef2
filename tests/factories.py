"""Tiny factories: plain functions over the services, so tests build data the app's way."""

from __future__ import annotations

import itertools
from typing import Any

from django.contrib.auth import get_user_model

from chat import services
from chat.models import Conversation, Message

PASSWORD = "correct-horse-battery-staple"
_seq = itertools.count(1)


def make_user(username: str | None = None, **extra: Any) -> Any:
    username = username or f"user{next(_seq)}"
    return get_user_model().objects.create_user(username=username, password=PASSWORD, **extra)


def make_conversation(owner: Any, *, title: str = "", turns: int = 0, **extra: Any) -> Conversation:
    conversation = services.conversation_create(owner=owner, title=title, **extra)
    for i in range(turns):
        services.message_append(conversation=conversation, role="user", content=f"question {i}")
        services.message_append(conversation=conversation, role="assistant", content=f"answer {i}")
    return conversation


def make_message(conversation: Conversation, **fields: Any) -> Message:
    fields.setdefault("role", "user")
    fields.setdefault("content", "hello")
    feedback = fields.pop("feedback", 0)
    message = services.message_append(conversation=conversation, **fields)
    if feedback:
        services.message_set_feedback(message=message, feedback=feedback)
    return message


def make_api_key(user: Any, name: str = "script", **extra: Any) -> tuple[Any, str]:
    """An active API key of ``user``: (the ApiKey row, the plain key to send)."""
    from api.services import api_key_create

    return api_key_create(user=user, name=name, **extra)


def user_with_key(name: str, **extra: Any) -> tuple[Any, Any, str]:
    """A new user with one API key: (user, the ApiKey row, the plain key)."""
    user = make_user(name)
    key, plain = make_api_key(user, **extra)
    return user, key, plain


async def amake_user(username: str) -> Any:
    """``make_user`` from async tests."""
    from channels.db import database_sync_to_async

    return await database_sync_to_async(make_user)(username)
