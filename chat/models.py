"""Conversations and their messages.

Writes go through ``chat.services``, reads through ``chat.selectors``; nothing here saves
behind the caller's back.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class Conversation(models.Model):
    class Source(models.TextChoices):
        CHAT = "chat", _("chat")
        API = "api", _("API")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(_("title"), max_length=200, blank=True)
    system_prompt = models.TextField(_("system prompt"), blank=True)
    # Generation options (temperature, top_p, ...) validated by the inference app.
    options = models.JSONField(_("generation options"), default=dict, blank=True)
    model_name = models.CharField(_("model"), max_length=200, blank=True)
    pinned = models.BooleanField(_("pinned"), default=False)
    archived = models.BooleanField(_("archived"), default=False)
    # The next message's position: bumped with an UPDATE, which serializes concurrent
    # appends on both SQLite and PostgreSQL without relying on timestamps.
    next_position = models.PositiveIntegerField(default=0, editable=False)
    # Programs' traffic (REST completions, WebSocket with an API key) is kept apart from the
    # chat sidebar and marked for review in the admin.
    source = models.CharField(
        _("source"), max_length=8, choices=Source.choices, default=Source.CHAT
    )
    api_key = models.ForeignKey(
        "api.ApiKey",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="conversations",
        verbose_name=_("API key"),
    )
    # False for a key that does not store conversations: the texts are erased when the
    # reply ends; the rows stay, empty, so token counts (quotas, review) remain.
    retain_text = models.BooleanField(_("text kept"), default=True)
    # Where an imported conversation came from ("chatgpt:<id>", "openwebui:<id>",
    # "stellarchat:<id>"; blank: made here): importing the same file again adds nothing.
    import_source = models.CharField(_("imported from"), max_length=300, blank=True, default="")
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("last activity"), auto_now=True, db_index=False)

    class Meta:
        ordering = ["-pinned", "-updated_at"]
        indexes = [
            # "My conversations by last activity" (sidebar: pinned first, archived apart).
            models.Index(
                fields=["owner", "archived", "-pinned", "-updated_at"],
                name="conv_owner_activity_idx",
            ),
            models.Index(fields=["-updated_at"], name="conv_activity_idx"),
        ]
        constraints = [
            # Also the index behind "was this one imported already?" (portability/importers).
            models.UniqueConstraint(
                fields=["owner", "import_source"],
                condition=~models.Q(import_source=""),
                name="conv_owner_import_source_uniq",
            ),
        ]

    def __str__(self) -> str:
        return self.title or str(_("Untitled conversation"))


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", _("user")
        ASSISTANT = "assistant", _("assistant")
        SYSTEM = "system", _("system")

    class Status(models.TextChoices):
        COMPLETE = "complete", _("complete")
        STREAMING = "streaming", _("streaming")
        CANCELLED = "cancelled", _("cancelled")
        FAILED = "failed", _("failed")

    class Feedback(models.IntegerChoices):
        NEGATIVE = -1, _("thumbs down")
        NONE = 0, _("none")
        POSITIVE = 1, _("thumbs up")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    position = models.PositiveIntegerField(editable=False)
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.FloatField(_("time to first token (ms)"), null=True, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)
    model_name = models.CharField(max_length=200, blank=True)
    feedback = models.SmallIntegerField(choices=Feedback.choices, default=Feedback.NONE)
    # Regenerate and edit never delete: the older version stays, out of the current thread.
    superseded = models.BooleanField(default=False)
    replaces = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="replaced_by",
        help_text=_("The earlier version this message is a new version of."),
    )
    # Compare and arena: the replies to one turn share a group id, each in its slot (0, 1, 2).
    # A blind (arena) reply's model is named nowhere the person sees until the group is voted
    # on, or closed by the next turn (chat/services.py: vote_record, _settle_groups).
    group = models.UUIDField(null=True, blank=True, db_index=True)
    slot = models.PositiveSmallIntegerField(null=True, blank=True)
    blind = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["conversation", "position"]
        constraints = [
            # Also the index behind "messages of a conversation in order".
            models.UniqueConstraint(
                fields=["conversation", "position"], name="message_conversation_position_uniq"
            ),
            models.CheckConstraint(
                condition=models.Q(feedback__in=[-1, 0, 1]), name="message_feedback_range"
            ),
        ]
        indexes = [
            models.Index(fields=["status"], name="message_status_idx"),
            models.Index(fields=["feedback"], name="message_feedback_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.role} #{self.position}"


class Vote(models.Model):
    """A person's verdict on one compare or arena group: which reply was better, or a tie, or
    both bad. One per group (the database says so). The models are read from the group's
    replies, so a vote needs no copy of them."""

    class Outcome(models.TextChoices):
        WIN = "win", _("one reply won")
        TIE = "tie", _("tie")
        BOTH_BAD = "both_bad", _("both bad")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="votes")
    group = models.UUIDField(unique=True)
    voter = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_votes"
    )
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    winner = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.CASCADE, related_name="won_votes"
    )
    arena = models.BooleanField(_("arena (blind)"), default=False)
    created_at = models.DateTimeField(_("voted"), auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(outcome="win", winner__isnull=False)
                    | (~models.Q(outcome="win") & models.Q(winner__isnull=True))
                ),
                name="vote_winner_iff_win",
            ),
        ]

    def __str__(self) -> str:
        return f"vote on {self.group} ({self.outcome})"


class Preferences(models.Model):
    """A person's settings: applied server-side so pages render right on the first paint."""

    class Theme(models.TextChoices):
        SYSTEM = "system", _("Follow the system")
        LIGHT = "light", _("Light")
        DARK = "dark", _("Dark")
        STELLAR = "stellar", _("Stellar")

    class Language(models.TextChoices):
        AUTO = "", _("Follow the browser")
        EN = "en", "English"
        ZH_HANS = "zh-hans", "简体中文"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_preferences"
    )
    theme = models.CharField(max_length=16, choices=Theme.choices, default=Theme.SYSTEM)
    language = models.CharField(max_length=16, choices=Language.choices, default="", blank=True)
    system_prompt = models.TextField(_("default system prompt"), blank=True)
    options = models.JSONField(_("default generation options"), default=dict, blank=True)
    # A registry name (inference/registry.py); blank, or no longer served: the server's default.
    default_model = models.CharField(_("default model"), max_length=200, blank=True)
    # Left out of every preference-data export (votes and thumbs become nobody's training data).
    training_opt_out = models.BooleanField(_("keep my chats out of training data"), default=False)

    def __str__(self) -> str:
        return f"preferences of {self.user}"
