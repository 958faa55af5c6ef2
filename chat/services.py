"""Writes. Named <entity>_<action>, keyword-only, so every change to chat data is easy to find."""

from __future__ import annotations

import re
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from chat import limits
from chat.models import Conversation, Message, Preferences

TITLE_MAX = 200


def conversation_create(
    *,
    owner: Any,
    title: str = "",
    system_prompt: str = "",
    options: dict[str, Any] | None = None,
    model_name: str = "",
    api_key: Any = None,
    retain_text: bool = True,
    next_position: int = 0,
) -> Conversation:
    """A new conversation; one made with an API key is marked as API traffic."""
    return Conversation.objects.create(
        next_position=next_position,
        owner=owner,
        title=title[:TITLE_MAX],
        system_prompt=system_prompt,
        options=options or {},
        model_name=model_name,
        source=Conversation.Source.API if api_key is not None else Conversation.Source.CHAT,
        api_key=api_key,
        retain_text=retain_text,
    )


def message_append(
    *,
    conversation: Conversation,
    role: str,
    content: str,
    status: str = Message.Status.COMPLETE,
    model_name: str = "",
) -> Message:
    """Append a message at the next position and mark the conversation active."""
    message = Message(
        conversation=conversation, role=role, content=content, status=status, model_name=model_name
    )
    with transaction.atomic():
        _append(conversation, [message])
    return message


def _append(conversation: Conversation, messages: list[Message]) -> None:
    """Save ``messages`` at the end of the conversation, in order, and mark it active: two
    statements whatever their number (a follow-up turn is on its reply's time to first token).

    Call inside a transaction. The positions come from one UPDATE ... RETURNING on the
    conversation row, which takes the write lock first (row lock on PostgreSQL, database lock
    on SQLite), so concurrent appends queue up instead of colliding on the same position.
    """
    for message in messages:
        if message.role not in Message.Role.values:
            raise ValueError(f"unknown role {message.role!r}")
        if message.status not in Message.Status.values:
            raise ValueError(f"unknown status {message.status!r}")
    first = _reserve_positions(conversation, len(messages))
    for offset, message in enumerate(messages):
        message.conversation = conversation
        message.position = first + offset
    Message.objects.bulk_create(messages)


def _reserve_positions(conversation: Conversation, count: int) -> int:
    """The first of ``count`` positions taken at the conversation's end, in one round trip
    (Django's update() cannot return the new value; the ORM way was an UPDATE, then a SELECT)."""
    meta, quote = Conversation._meta, connection.ops.quote_name
    table, pk = quote(meta.db_table), meta.pk
    counter = quote(meta.get_field("next_position").column)
    updated = meta.get_field("updated_at")
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {counter} = {counter} + %s, {quote(updated.column)} = %s "
            f"WHERE {quote(pk.column)} = %s RETURNING {counter}",
            [
                count,
                updated.get_db_prep_value(timezone.now(), connection),
                pk.get_db_prep_value(conversation.pk, connection),
            ],
        )
        row = cursor.fetchone()
    if row is None:
        raise Conversation.DoesNotExist("the conversation is gone")
    return int(row[0]) - count


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


# --- The reply lifecycle -------------------------------------------------------------------


class ConversationBusy(Exception):
    """A reply is already streaming in this conversation."""


class NothingToAnswer(Exception):
    """Regenerate or edit found no user turn to answer."""


def _lock(conversation: Conversation) -> None:
    """Serialize reply starts per conversation (row lock on PostgreSQL; SQLite's write lock),
    then check the owner's limits: a refusal rolls the whole start back."""
    Conversation.objects.select_for_update().filter(pk=conversation.pk).values_list("pk").get()
    if Message.objects.filter(conversation=conversation, status=Message.Status.STREAMING).exists():
        raise ConversationBusy
    limits.check_capacity(owner_id=conversation.owner_id)


def _placeholder(*, model_name: str, replaces: Message | None = None) -> Message:
    """The streaming reply, unsaved: ``_append`` saves it with the turn it answers."""
    return Message(
        role=Message.Role.ASSISTANT,
        content="",
        status=Message.Status.STREAMING,
        model_name=model_name,
        replaces=replaces,
    )


def reply_request(
    *, conversation: Conversation, content: str, model_name: str = ""
) -> tuple[Message, Message]:
    """Save the user's turn and the (streaming) reply placeholder, atomically."""
    with transaction.atomic():
        _lock(conversation)
        user_turn = Message(role=Message.Role.USER, content=content)
        reply = _placeholder(model_name=model_name)
        _append(conversation, [user_turn, reply])
    return user_turn, reply


def conversation_start(
    *,
    owner: Any,
    content: str,
    model_name: str = "",
    system_prompt: str = "",
    options: dict[str, Any] | None = None,
    api_key: Any = None,
) -> tuple[Conversation, Message, Message]:
    """A new conversation with its first user turn and the reply placeholder, all or nothing
    (a refused start leaves no empty conversation behind).

    The first message of every chat, on its time to first token: nobody else can know a
    conversation that does not exist yet, so there is nothing to lock or to find busy, and
    the positions are 0 and 1 (three INSERTs; reply_request locks and counts first)."""
    with transaction.atomic():
        limits.check_capacity(owner_id=owner.pk)
        conversation = conversation_create(
            owner=owner,
            system_prompt=system_prompt,
            options=options,
            model_name=model_name,
            api_key=api_key,
            next_position=2,
        )
        user_turn = Message(
            conversation=conversation, position=0, role=Message.Role.USER, content=content
        )
        reply = Message(
            conversation=conversation,
            position=1,
            role=Message.Role.ASSISTANT,
            content="",
            status=Message.Status.STREAMING,
            model_name=model_name,
        )
        Message.objects.bulk_create([user_turn, reply])
    return conversation, user_turn, reply


def api_completion_start(
    *,
    owner: Any,
    api_key: Any,
    system_prompt: str,
    turns: list[tuple[str, str]],
    model_name: str,
) -> tuple[Conversation, Message]:
    """Save a REST completion request (its whole history, as sent) as an API conversation,
    plus the reply placeholder, all or nothing. The last turn is the user's."""
    with transaction.atomic():
        conversation = conversation_create(
            owner=owner,
            system_prompt=system_prompt,
            model_name=model_name,
            api_key=api_key,
            retain_text=bool(getattr(api_key, "store_conversations", True)),
        )
        _lock(conversation)
        history = [Message(role=role, content=content) for role, content in turns]
        reply = _placeholder(model_name=model_name)
        _append(conversation, [*history, reply])
    return conversation, reply


def reply_regenerate(
    *, conversation: Conversation, model_name: str = ""
) -> tuple[Message, Message]:
    """A new reply to the last user turn; earlier replies to it stay as superseded versions."""
    with transaction.atomic():
        _lock(conversation)
        current = Message.objects.filter(conversation=conversation, superseded=False)
        last_user = current.filter(role=Message.Role.USER).order_by("-position").first()
        if last_user is None:
            raise NothingToAnswer
        later = current.filter(position__gt=last_user.position)
        previous = later.filter(role=Message.Role.ASSISTANT).order_by("-position").first()
        later.update(superseded=True)
        reply = _placeholder(model_name=model_name, replaces=previous)
        _append(conversation, [reply])
    return last_user, reply


def reply_edit(
    *, conversation: Conversation, message_id: Any, content: str, model_name: str = ""
) -> tuple[Message, Message]:
    """Replace a user turn with a new version and answer it; later turns leave the thread."""
    with transaction.atomic():
        _lock(conversation)
        current = Message.objects.filter(conversation=conversation, superseded=False)
        original = current.filter(pk=message_id, role=Message.Role.USER).first()
        if original is None:
            raise NothingToAnswer
        current.filter(position__gte=original.position).update(superseded=True)
        user_turn = Message(role=Message.Role.USER, content=content, replaces=original)
        reply = _placeholder(model_name=model_name)
        _append(conversation, [user_turn, reply])
    return user_turn, reply


def reply_flush(*, message_id: Any, content: str) -> None:
    """Save the text so far of a streaming reply (every couple of seconds, never per token)."""
    Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(content=content)


def reply_finish(
    *,
    message_id: Any,
    content: str,
    status: str,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    ttft_ms: float | None = None,
    tokens_per_second: float | None = None,
) -> bool:
    """Write a reply's final text and status. Only the first finisher wins (True).

    In a conversation that keeps no text (an API key that does not store conversations),
    every text of it is erased right here, in the same transaction: only counts remain."""
    if status == Message.Status.STREAMING or status not in Message.Status.values:
        raise ValueError(f"not a final status: {status!r}")
    with transaction.atomic():
        updated = Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(
            content=content,
            status=status,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            ttft_ms=ttft_ms,
            tokens_per_second=tokens_per_second,
        )
        if updated:
            conversation_id = (
                Message.objects.filter(pk=message_id).values_list("conversation_id").get()[0]
            )
            if Conversation.objects.filter(pk=conversation_id, retain_text=False).exists():
                conversation_erase_text(conversation_id=conversation_id)
    return updated == 1


def conversation_erase_text(*, conversation_id: Any) -> None:
    """Blank every text of a conversation (title, system prompt, messages); keep the counts."""
    Conversation.objects.filter(pk=conversation_id).update(title="", system_prompt="")
    Message.objects.filter(conversation_id=conversation_id).update(content="")


def conversation_autotitle(*, conversation_id: Any) -> tuple[str, int] | None:
    """Title an untitled conversation after its first turn: (the new title, the owner's id,
    for telling their other tabs), or None when it keeps the title it has.

    Two statements, a read and a guarded write: this runs after every completed reply (on
    the embedded server's one database thread, where four statements took 2.4 ms and
    delayed the replies ending after it)."""
    first = (
        Message.objects.filter(
            conversation_id=conversation_id,
            role=Message.Role.USER,
            conversation__title="",
            conversation__retain_text=True,
        )
        .order_by("position")
        .values_list("content", "conversation__owner_id")
        .first()
    )
    if first is None:
        return None
    content, owner_id = first
    title = make_title(content or "")
    if not title:
        return None
    if not Conversation.objects.filter(pk=conversation_id, title="").update(title=title):
        return None  # titled meanwhile (renamed by its owner): theirs stands
    return title, owner_id


def make_title(text: str, *, limit: int = 60) -> str:
    """A short title from a user's first message: Markdown syntax and code blocks dropped,
    whitespace collapsed, cut at a word."""
    plain = re.sub(r"```.*?(```|$)", " ", text, flags=re.S)
    plain = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", plain)
    plain = re.sub(r"[`*_#>|~]+", " ", plain)
    words = " ".join(plain.split()).strip(" .,:;!?-") or " ".join(text.split())
    if len(words) <= limit:
        return words
    cut = words[:limit].rsplit(" ", 1)[0] if " " in words[:limit] else words[:limit]
    return cut.rstrip(" .,:;!?-") + "…"


def preferences_update(*, user: Any, **fields: Any) -> Preferences:
    """Save a person's preferences (theme, language, default system prompt and options)."""
    prefs, _ = Preferences.objects.get_or_create(user=user)
    for name, value in fields.items():
        setattr(prefs, name, value)
    prefs.save()
    user._chat_preferences = prefs
    return prefs
