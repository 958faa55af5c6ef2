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


def current_messages(*, conversation: Conversation) -> QuerySet[Message]:
    """The current thread: what is shown and what the model sees (no superseded versions)."""
    return message_list(conversation=conversation).filter(superseded=False)


def streaming_message(*, conversation_id: Any) -> Message | None:
    """The reply being generated in this conversation, if any (at most one by design)."""
    return (
        Message.objects.filter(conversation_id=conversation_id, status=Message.Status.STREAMING)
        .order_by("-position")
        .first()
    )


def context_turns(*, message: Message) -> list[dict[str, str]]:
    """The turns a reply answers: system prompt, then the current thread before ``message``.

    Failed and empty replies are left out; consecutive turns of one role are merged, since
    many chat templates insist on strict user/assistant alternation.
    """
    conversation = message.conversation
    turns: list[dict[str, str]] = []
    if conversation.system_prompt.strip():
        turns.append({"role": "system", "content": conversation.system_prompt})
    rows = (
        current_messages(conversation=conversation)
        .filter(position__lt=message.position)
        .exclude(status__in=[Message.Status.FAILED, Message.Status.STREAMING])
        .values_list("role", "content")
    )
    for role, content in rows:
        if not content or role == Message.Role.SYSTEM:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1] = {"role": role, "content": turns[-1]["content"] + "\n\n" + content}
        else:
            turns.append({"role": role, "content": content})
    return turns


def message_content(*, message_id: Any) -> str:
    """The saved text of one message (for a socket catching up on a reply's end)."""
    return Message.objects.filter(pk=message_id).values_list("content", flat=True).first() or ""
