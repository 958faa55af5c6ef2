"""Reads for share links. The owner's reads are scoped to them; the one read by token is for
anyone the server's sharing mode lets in (the view decides who)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils.text import Truncator

from chat import selectors as chat_selectors
from chat.models import Conversation, Message
from sharing.models import ShareLink

TOKEN_MAX = 64  # longer is no token of ours: answered without a query
DESCRIPTION_CHARS = 200  # a link preview's description, from the first user message


def share_link_for(*, user: Any, conversation: Conversation) -> ShareLink | None:
    """The live link of ``user``'s conversation, if any."""
    if not getattr(user, "is_authenticated", False):
        return None
    return ShareLink.objects.filter(owner=user, conversation=conversation).first()


def share_link_list(*, user: Any) -> QuerySet[ShareLink]:
    """Every link of ``user``, the most recently updated first."""
    if not getattr(user, "is_authenticated", False):
        return ShareLink.objects.none()
    return (
        ShareLink.objects.filter(owner=user).select_related("conversation").order_by("-updated_at")
    )


def share_link_by_token(*, token: str) -> ShareLink | None:
    """The link with that token, or None. Whatever came in the URL is only compared for
    equality; control characters (PostgreSQL refuses NUL) and overlong strings never reach
    the database."""
    if not token or len(token) > TOKEN_MAX or not token.isprintable():
        return None
    return ShareLink.objects.filter(token=token).select_related("owner").first()


def conversation_snapshot(*, conversation: Conversation) -> dict[str, Any]:
    """What a link shows: the title and the current thread as it is now. Failed and still
    streaming replies, system turns and empty texts are left out; a stopped reply keeps its
    text. A reply of an arena still blind is named by its slot only ("Model A"), as the chat
    page names it (``letter``): its model is not in the snapshot at all."""
    from inference import registry

    rows = (
        chat_selectors.current_messages(conversation=conversation)
        .exclude(status__in=[Message.Status.FAILED, Message.Status.STREAMING])
        .exclude(role=Message.Role.SYSTEM)
        .exclude(content="")
        .only("role", "content", "status", "model_name", "blind", "slot", "created_at")
    )
    labels: dict[str, str] = {}
    messages = []
    for m in rows.iterator():
        model, label, letter = "", "", ""
        if m.role == Message.Role.ASSISTANT:
            if m.blind:  # the page says "Model A", translated for whoever reads it
                letter = "ABC"[m.slot] if m.slot is not None and 0 <= m.slot < 3 else "?"
            elif m.model_name:
                model = m.model_name
                if model not in labels:
                    spec = registry.get(model)
                    labels[model] = (spec.label or spec.name) if spec is not None else model
                label = labels[model]
        messages.append(
            {
                "role": m.role,
                "content": m.content,
                "status": m.status,
                "model": model,
                "model_label": label,
                "letter": letter,
                "created_at": m.created_at.isoformat(),
            }
        )
    return {"version": 1, "title": conversation.title, "messages": messages}


def shared_page(*, link: ShareLink) -> dict[str, Any]:
    """The shared page's context: the snapshot's messages, the owner's name only when they
    chose to show it, and a bounded preview text for link previews."""
    snapshot = link.snapshot if isinstance(link.snapshot, dict) else {}
    messages = [m for m in snapshot.get("messages", []) if isinstance(m, dict)]
    first = next((m for m in messages if m.get("role") == Message.Role.USER), None)
    description = " ".join(str(first.get("content", "")).split()) if first else ""
    return {
        "link": link,
        "title": str(snapshot.get("title") or ""),
        "shared_messages": messages,
        "owner_name": link.owner.get_username() if link.show_name else "",
        "description": Truncator(description).chars(DESCRIPTION_CHARS),
        "last_model": next((m.get("model", "") for m in reversed(messages) if m.get("model")), ""),
    }
