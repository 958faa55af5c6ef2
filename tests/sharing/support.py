"""Helpers for share-link tests (and the route table's sample link)."""

from __future__ import annotations

from typing import Any

from sharing import services
from sharing.models import ShareLink
from tests import factories

SHARED_TITLE = "A chat the owner chose to share"


def share_at_placeholder(owner: Any, token: str = "<str:token>") -> ShareLink:
    """A link the owner made to another conversation of theirs, whose token is the route's
    placeholder text: the route table fills no token into ``s/<str:token>/``, so the path it
    calls lands on this link. The owner's secret conversation stays unshared."""
    conversation = factories.make_conversation(owner, title=SHARED_TITLE, turns=1)
    link, _ = services.share_link_create(conversation=conversation)
    ShareLink.objects.filter(pk=link.pk).update(token=token)
    link.token = token
    return link
