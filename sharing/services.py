"""Writes for share links: create, update, revoke, and continuing a shared conversation.
Named <entity>_<action>, keyword-only, like chat's services."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from chat import services as chat_services
from chat.models import Conversation
from sharing import selectors
from sharing.models import ShareLink


class SharingOff(Exception):
    """The server's STELLARCHAT_SHARING is "off": nothing new can be shared."""


def _check_on() -> None:
    if settings.STELLARCHAT_SHARING == "off":
        raise SharingOff


def share_link_create(
    *, conversation: Conversation, show_name: bool = False
) -> tuple[ShareLink, bool]:
    """The conversation's link: the live one if it has one (unchanged: Update refreshes it),
    else a new one with a snapshot of the conversation as it is now. (link, created)."""
    _check_on()
    existing = ShareLink.objects.filter(conversation=conversation).first()
    if existing is not None:
        return existing, False
    snapshot = selectors.conversation_snapshot(conversation=conversation)
    try:
        with transaction.atomic():
            link = ShareLink.objects.create(
                conversation=conversation,
                owner_id=conversation.owner_id,
                show_name=show_name,
                snapshot=snapshot,
            )
    except IntegrityError:  # a second tab made it at the same moment: that one stands
        return ShareLink.objects.get(conversation=conversation), False
    return link, True


def share_link_update(*, link: ShareLink, show_name: bool) -> ShareLink:
    """Put the conversation's newest messages (and the name choice) into the same link."""
    _check_on()
    link.snapshot = selectors.conversation_snapshot(conversation=link.conversation)
    link.show_name = show_name
    link.save(update_fields=["snapshot", "show_name", "updated_at"])
    return link


def share_link_revoke(*, link: ShareLink) -> None:
    """The link answers 404 from now on (the row is gone; a new Share makes a new token)."""
    link.delete()


def share_links_revoke(*, links: QuerySet[ShareLink]) -> int:
    """Revoke many at once (the admin's action); how many were revoked."""
    count, _ = links.delete()
    return count


def share_link_continue(*, link: ShareLink, viewer: Any) -> Conversation:
    """A copy of the shared messages as a new, ordinary conversation of ``viewer``, on the
    snapshot's last model when the viewer may use it (else their server's default)."""
    from inference import registry

    page = selectors.shared_page(link=link)
    turns = [
        {
            "role": str(m.get("role", "")),
            "content": str(m.get("content", "")),
            "status": str(m.get("status", "complete")),
            "model_name": str(m.get("model", "")),
        }
        for m in page["shared_messages"]
    ]
    return chat_services.conversation_copy(
        owner=viewer,
        title=page["title"],
        model_name=registry.choose(viewer, None, current=page["last_model"]),
        turns=turns,
    )
