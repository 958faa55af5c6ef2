"""Reads. Every read of chat data is scoped to its owner here, so views and consumers cannot
forget to: someone else's conversation simply does not exist for the caller."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import date
from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _

from chat.models import Conversation, Message, Preferences, Vote
from stellarchat.prepared import Prepared


def _as_uuid(value: Any) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        return None


def conversation_list(*, user: Any, archived: bool = False) -> QuerySet[Conversation]:
    """The user's chat conversations, pinned first, then by last activity. Programs' (API)
    conversations stay out of the sidebar: a script can make thousands."""
    if not getattr(user, "is_authenticated", False):
        return Conversation.objects.none()
    return Conversation.objects.filter(
        owner=user, archived=archived, source=Conversation.Source.CHAT
    ).order_by("-pinned", "-updated_at")


def conversation_get(*, user: Any, conversation_id: Any) -> Conversation | None:
    """The user's conversation with that id, or None (unknown, malformed or not theirs)."""
    pk = _as_uuid(conversation_id)
    if pk is None or not getattr(user, "is_authenticated", False):
        return None
    found = _conversation_of_owner(pk=pk, owner=user.pk)
    return found[0] if found else None


# Every chat frame reads its conversation this way (stellarchat/prepared.py: why).
_conversation_of_owner = Prepared(
    Conversation,
    lambda pk, owner: Conversation.objects.filter(pk=pk, owner_id=owner)[:1],
    pk=Conversation._meta.pk,
    owner=Conversation._meta.get_field("owner"),
)


def message_list(*, conversation: Conversation) -> QuerySet[Message]:
    """Messages of one conversation in their strict order."""
    return Message.objects.filter(conversation=conversation).order_by("position")


def current_messages(*, conversation: Conversation) -> QuerySet[Message]:
    """The current thread: what is shown and what the model sees (no superseded versions)."""
    return message_list(conversation=conversation).filter(superseded=False)


def streaming_messages(*, conversation_id: Any) -> list[Message]:
    """The replies being generated in this conversation: one, or a compare group's."""
    return _streaming(conversation=conversation_id)


# Read by every subscribe (the page's, and a script's up to its frame limit).
_streaming = Prepared(
    Message,
    lambda conversation: Message.objects.filter(
        conversation_id=conversation, status=Message.Status.STREAMING
    ).order_by("position"),
    conversation=Message._meta.get_field("conversation"),
)


def context_turns(*, message: Message, max_chars: int | None = None) -> list[dict[str, str]] | None:
    """The turns a reply answers: system prompt, then the current thread before ``message``
    (failed replies, the reply itself and the other replies of its compare group left out).

    With ``max_chars``, None once the turns' text grows past it (the web side hands small
    contexts to the worker in the job and leaves long ones for the worker to read).
    """
    conversation = message.conversation
    rows = (
        current_messages(conversation=conversation)
        .filter(position__lt=message.position)
        .exclude(status__in=[Message.Status.FAILED, Message.Status.STREAMING])
    )
    if message.group is not None:  # side by side: each reply answers the turn, not its peers
        rows = rows.exclude(group=message.group)
    rows = rows.values_list("role", "content")
    return thread_turns(conversation.system_prompt, rows, max_chars=max_chars)


def thread_turns(
    system_prompt: str, rows: Iterable[tuple[str, str]], *, max_chars: int | None = None
) -> list[dict[str, str]] | None:
    """Turns from a system prompt and (role, content) rows in thread order.

    Empty turns are left out; consecutive turns of one role are merged, since many chat
    templates insist on strict user/assistant alternation. None past ``max_chars``.
    """
    turns: list[dict[str, str]] = []
    size = 0
    if system_prompt.strip():
        turns.append({"role": "system", "content": system_prompt})
        size = len(system_prompt)
    if max_chars is not None and size > max_chars:
        return None
    for role, content in rows:
        if not content or role == Message.Role.SYSTEM:
            continue
        role = str(role)  # a plain string, for the job's wire format too
        merge = bool(turns) and turns[-1]["role"] == role
        size += len(content) + (2 if merge else 0)  # the turns' text exactly, separators too
        if max_chars is not None and size > max_chars:
            return None
        if merge:
            turns[-1] = {"role": role, "content": turns[-1]["content"] + "\n\n" + content}
        else:
            turns.append({"role": role, "content": content})
    return turns


def message_content(*, message_id: Any) -> str:
    """The saved text of one message (for a socket catching up on a reply's end)."""
    return Message.objects.filter(pk=message_id).values_list("content", flat=True).first() or ""


def preferences_for(*, user: Any) -> Preferences:
    """The user's preferences (unsaved defaults when they never changed any)."""
    if not getattr(user, "is_authenticated", False):
        return Preferences()
    cached = getattr(user, "_chat_preferences", None)
    if cached is None:
        cached = Preferences.objects.filter(user=user).first() or Preferences(user=user)
        user._chat_preferences = cached
    return cached


SIDEBAR_PAGE = 30
MESSAGE_PAGE = 50


def conversation_page(
    *,
    user: Any,
    archived: bool = False,
    query: str = "",
    offset: int = 0,
    limit: int = SIDEBAR_PAGE,
) -> tuple[list[Conversation], bool]:
    """One page of the sidebar (pinned first, then last activity), optionally searched over
    titles and message text. Returns the page and whether more follow."""
    qs = conversation_list(user=user, archived=archived)
    # NUL cannot reach PostgreSQL (it refuses it in text); it means nothing in a search anyway.
    query = query.replace("\x00", "").strip()[:200]
    if query:
        in_messages = Message.objects.filter(
            conversation=OuterRef("pk"), content__icontains=query, superseded=False
        )
        qs = qs.filter(Q(title__icontains=query) | Exists(in_messages))
    rows = list(qs[offset : offset + limit + 1])
    return rows[:limit], len(rows) > limit


def group_by_day(
    conversations: list[Conversation], *, today: date
) -> list[tuple[str, list[Conversation]]]:
    """Sidebar groups: Pinned, Today, Yesterday, Previous 7 days, Previous 30 days, then months."""
    groups: dict[str, list[Conversation]] = {}
    for c in conversations:
        if c.pinned:
            label = str(_("Pinned"))
        else:
            day = timezone.localdate(c.updated_at)
            age = (today - day).days
            if age <= 0:
                label = str(_("Today"))
            elif age == 1:
                label = str(_("Yesterday"))
            elif age < 7:
                label = str(_("Previous 7 days"))
            elif age < 30:
                label = str(_("Previous 30 days"))
            else:
                label = date_format(day, "YEAR_MONTH_FORMAT")
        groups.setdefault(label, []).append(c)
    return list(groups.items())


def message_window(
    *, conversation: Conversation, before: int | None = None, limit: int = MESSAGE_PAGE
) -> tuple[list[Message], bool]:
    """The newest ``limit`` current messages (before ``before``, a position), oldest first,
    and whether older ones exist: long conversations open fast and page in on scroll-up."""
    qs = current_messages(conversation=conversation)
    if before is not None:
        qs = qs.filter(position__lt=before)
    rows = list(qs.order_by("-position")[: limit + 1])
    has_more = len(rows) > limit
    return list(reversed(rows[:limit])), has_more


def model_picker(*, user: Any, conversation: Conversation | None) -> dict[str, Any]:
    """The models ``user`` may pick (name, label, description) and the one picked: the
    conversation's, or for a new chat their default model, while they may still use it (else
    the server's default)."""
    from inference import registry

    if conversation is not None:
        current = conversation.model_name
    else:
        current = preferences_for(user=user).default_model
    usable = registry.usable(user)
    picked = registry.choose(user, None, current=current)
    return {
        "models": [
            {"name": s.name, "label": s.label or s.name, "description": s.description}
            for s in usable
        ],
        "arena": len(registry.arena_pool(user)) >= 2,
        "current": picked,
        "description": next((s.description for s in usable if s.name == picked), ""),
    }


def compare_group(*, conversation: Conversation, group_id: Any) -> dict[str, Any] | None:
    """One compare group of the conversation as the page shows it: every reply (the losers
    of a vote too, until the page reloads), its vote if any, and whether it can be voted on
    (every reply ended, at least two still in the thread, no vote yet). None if unknown."""
    pk = _as_uuid(group_id)
    if pk is None:
        return None
    replies = list(
        message_list(conversation=conversation)
        .filter(group=pk, role=Message.Role.ASSISTANT)
        .order_by("slot")
    )
    if not replies:
        return None
    vote = Vote.objects.filter(group=pk).first()
    return _group(pk, replies, vote)


def _group(pk: uuid.UUID, replies: list[Message], vote: Vote | None) -> dict[str, Any]:
    ended = all(r.status != Message.Status.STREAMING for r in replies)
    return {
        "id": pk,
        "replies": replies,
        "vote": vote,
        "blind": any(r.blind for r in replies),
        "can_vote": vote is None and ended and sum(not r.superseded for r in replies) > 1,
    }


def thread_items(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages for the page, the replies of an open compare group gathered into one item
    (shown side by side, with the vote): ``{"message": m}`` or ``{"group": {...}}``."""
    items: list[dict[str, Any]] = []
    open_groups = [m.group for m in messages if m.group is not None]
    votes = {v.group: v for v in Vote.objects.filter(group__in=open_groups)} if open_groups else {}
    for m in messages:
        if m.group is None or m.role != Message.Role.ASSISTANT:
            items.append({"message": m})
            continue
        last = items[-1].get("group") if items else None
        if last is not None and last["id"] == m.group:
            last["replies"].append(m)
            continue
        items.append({"group": {"id": m.group, "replies": [m]}})
    for item in items:
        group = item.get("group")
        if group is not None:
            item["group"] = _group(group["id"], group["replies"], votes.get(group["id"]))
    return items
