"""Writes. Named <entity>_<action>, keyword-only, so every change to chat data is easy to find."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from chat.models import Conversation, Message

TITLE_MAX = 200


def conversation_create(
    *,
    owner: Any,
    title: str = "",
    system_prompt: str = "",
    options: dict[str, Any] | None = None,
    model_name: str = "",
) -> Conversation:
    return Conversation.objects.create(
        owner=owner,
        title=title[:TITLE_MAX],
        system_prompt=system_prompt,
        options=options or {},
        model_name=model_name,
    )


def message_append(
    *,
    conversation: Conversation,
    role: str,
    content: str,
    status: str = Message.Status.COMPLETE,
    model_name: str = "",
) -> Message:
    """Append a message at the next position and mark the conversation active.

    The position comes from an UPDATE on the conversation row, which takes the write lock
    first (row lock on PostgreSQL, database lock on SQLite), so concurrent appends queue up
    instead of colliding on the same position.
    """
    if role not in Message.Role.values:
        raise ValueError(f"unknown role {role!r}")
    if status not in Message.Status.values:
        raise ValueError(f"unknown status {status!r}")
    with transaction.atomic():
        Conversation.objects.filter(pk=conversation.pk).update(
            next_position=F("next_position") + 1, updated_at=timezone.now()
        )
        position = (
            Conversation.objects.filter(pk=conversation.pk)
            .values_list("next_position", flat=True)
            .get()
            - 1
        )
        message = Message.objects.create(
            conversation=conversation,
            position=position,
            role=role,
            content=content,
            status=status,
            model_name=model_name,
        )
    conversation.next_position = position + 1
    return message


def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    conversation.title = title.strip()[:TITLE_MAX]
    conversation.save(update_fields=["title", "updated_at"])
    return conversation


def conversation_set_flags(
    *, conversation: Conversation, pinned: bool | None = None, archived: bool | None = None
) -> Conversation:
    """Pin or archive without touching last activity (the sidebar order stays honest)."""
    changes: dict[str, bool] = {}
    if pinned is not None:
        changes["pinned"] = pinned
    if archived is not None:
        changes["archived"] = archived
    if changes:
        Conversation.objects.filter(pk=conversation.pk).update(**changes)
        for name, value in changes.items():
            setattr(conversation, name, value)
    return conversation


def conversation_delete(*, conversation: Conversation) -> None:
    conversation.delete()


def message_set_feedback(*, message: Message, feedback: int) -> Message:
    if feedback not in (-1, 0, 1):
        raise ValueError("feedback must be -1, 0 or 1")
    message.feedback = feedback
    message.save(update_fields=["feedback"])
    return message
