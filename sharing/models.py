"""Share links: a read-only snapshot of one conversation behind an unguessable token.

Writes go through ``sharing.services``, reads through ``sharing.selectors``.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

TOKEN_BYTES = 32  # 256 random bits; token_urlsafe gives 43 characters


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


class ShareLink(models.Model):
    """One conversation's live link. Revoking deletes the row, so the link answers 404 at
    once everywhere; deleting the conversation (or the owner) deletes it too.

    ``snapshot`` is a copy taken when the link was made or last updated, not a view of the
    conversation: what the owner says afterwards stays theirs until they press Update."""

    token = models.CharField(max_length=64, unique=True, default=new_token, editable=False)
    conversation = models.ForeignKey(
        "chat.Conversation",
        on_delete=models.CASCADE,
        related_name="share_links",
        verbose_name=_("conversation"),
        db_index=False,  # the one-link-per-conversation constraint is its index
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="share_links",
        verbose_name=_("owner"),
        db_index=False,  # sharelink_owner_idx starts with it
    )
    show_name = models.BooleanField(_("show the owner's name"), default=False)
    snapshot = models.JSONField(default=dict, editable=False)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("shared link")
        verbose_name_plural = _("shared links")
        ordering = ["-updated_at"]
        constraints = [
            # One live link per conversation: Share again shows it, Update refreshes it.
            models.UniqueConstraint(fields=["conversation"], name="sharelink_one_per_conversation"),
        ]
        indexes = [models.Index(fields=["owner", "-updated_at"], name="sharelink_owner_idx")]

    def __str__(self) -> str:
        return str(self.snapshot.get("title") or _("Untitled conversation"))
