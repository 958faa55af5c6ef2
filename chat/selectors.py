"""Reads. Every read of chat data is scoped to its owner here, so views and consumers cannot
forget to: someone else's conversation simply does not exist for the caller."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet

from chat.models import Conversation, Message


def _as_uuid(value: Any) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        return None


def conversation_list(*, user: Any, archived: bool = False) -> QuerySet[Conversation]:
    """The user's conversations, pinned first, then by last activity."""
    if not getattr(user, "is_authenticated", False):
        return Conversation.objects.none()
    return Conversation.objects.filter(owner=user, archived=archived).order_by(
        "-pinned", "-updated_at"
    )


def conversation_get(*, user: Any, conversation_id: Any) -> Conversation | None:
    """The user's conversation with that id, or None (unknown, malformed or not theirs)."""
    pk = _as_uuid(conversation_id)
    if pk is None or not getattr(user, "is_authenticated", False):
        return None
    return Conversation.objects.filter(pk=pk, owner=user).first()


def message_list(*, conversation: Conversation) -> QuerySet[Message]:
    """Messages of one conversation in their strict order."""
    return Message.objects.filter(conversation=conversation).order_by("position")
