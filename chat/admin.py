"""Staff review of conversations: read-only, searchable, exportable."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from chat import transcripts
from chat.models import Conversation, Message


class MessageStatusFilter(admin.SimpleListFilter):
    """Conversations holding at least one message in the chosen status."""

    title = _("message status")
    parameter_name = "message_status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return list(Message.Status.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value not in Message.Status.values:
            return queryset
        return queryset.filter(
            Exists(Message.objects.filter(conversation=OuterRef("pk"), status=value))
        )


class NegativeFeedbackFilter(admin.SimpleListFilter):
    title = _("negative feedback")
    parameter_name = "negative_feedback"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("yes", _("Has a thumbs down")), ("no", _("No thumbs down"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        negative = Exists(Message.objects.filter(conversation=OuterRef("pk"), feedback=-1))
        if self.value() == "yes":
            return queryset.filter(negative)
        if self.value() == "no":
            return queryset.filter(~negative)
        return queryset


class MessageInline(admin.TabularInline):
    model = Message
    fields = (
        "position",
        "role",
        "content",
        "status",
        "feedback",
        "prompt_tokens",
        "completion_tokens",
        "ttft_ms",
        "tokens_per_second",
        "model_name",
        "created_at",
    )
    readonly_fields = fields
    ordering = ("position",)
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = (
        "display_title",
        "owner",
        "source",
        "api_key_label",
        "message_count",
        "updated_at",
        "thumbs_up",
        "thumbs_down",
    )
    list_filter = (
        ("created_at", admin.DateFieldListFilter),
        ("updated_at", admin.DateFieldListFilter),
        ("owner", admin.RelatedOnlyFieldListFilter),
        MessageStatusFilter,
        NegativeFeedbackFilter,
        "source",
        "archived",
    )
    search_fields = ("title", "messages__content")
    date_hierarchy = "updated_at"
    ordering = ("-updated_at",)
    list_select_related = ("owner", "api_key")
    list_per_page = 50
    fields = (
        "title",
        "owner",
        "source",
        "api_key_label",
        "retain_text",
        "model_name",
        "system_prompt",
        "options",
        "pinned",
        "archived",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields
    inlines = (MessageInline,)
    actions = ("download_markdown", "download_json")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        return (
            super()
            .get_queryset(request)
            .select_related("owner", "api_key")
            .annotate(
                n_messages=Count("messages", distinct=True),
                n_up=Count("messages", filter=Q(messages__feedback=1), distinct=True),
                n_down=Count("messages", filter=Q(messages__feedback=-1), distinct=True),
            )
        )

    @admin.display(description=_("title"), ordering="title")
    def display_title(self, obj: Conversation) -> str:
        return str(obj)

    @admin.display(description=_("API key"), ordering="api_key__name")
    def api_key_label(self, obj: Conversation) -> str | None:
        """Marks the programs' conversations: which key (name and prefix) made each one."""
        if obj.api_key is not None:
            return str(obj.api_key)
        if obj.source == Conversation.Source.API:
            return str(_("(key deleted)"))
        return None

    @admin.display(description=_("messages"), ordering="n_messages")
    def message_count(self, obj: Any) -> int:
        return int(obj.n_messages)

    @admin.display(description="👍", ordering="n_up")
    def thumbs_up(self, obj: Any) -> int:
        return int(obj.n_up)

    @admin.display(description="👎", ordering="n_down")
    def thumbs_down(self, obj: Any) -> int:
        return int(obj.n_down)

    # Review is read-only: nobody edits what a person or the model said.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def _download(self, body: str, *, ext: str, content_type: str) -> HttpResponse:
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response = HttpResponse(body, content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="transcripts-{stamp}.{ext}"'
        return response

    @admin.action(description=_("Download transcripts as Markdown"), permissions=["view"])
    def download_markdown(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> Any:
        conversations = queryset.select_related("owner").order_by("-updated_at")
        body = "\n\n---\n\n".join(transcripts.as_markdown(c) for c in conversations)
        return self._download(body, ext="md", content_type="text/markdown; charset=utf-8")

    @admin.action(description=_("Download transcripts as JSON"), permissions=["view"])
    def download_json(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> Any:
        conversations = queryset.select_related("owner").order_by("-updated_at")
        body = json.dumps(
            [transcripts.as_dict(c) for c in conversations], ensure_ascii=False, indent=2
        )
        return self._download(body, ext="json", content_type="application/json")
