"""Staff review of conversations and votes: read-only, searchable, exportable; the models'
leaderboard."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from asgiref.sync import sync_to_async
from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from chat import leaderboard, preference_data, transcripts
from chat.models import Conversation, Message, Vote


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


class LeaderboardFilterForm(forms.Form):
    since = forms.DateField(
        label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        label=_("Until"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    arena = forms.BooleanField(label=_("Arena (blind) votes only"), required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            raise forms.ValidationError(_("“From” is after “Until”."))
        return data


async def _streamed(lines: Iterable[str], batch: int = 200) -> AsyncIterator[str]:
    """Lines from a synchronous (database-reading) generator, a batch at a time on the ORM's
    thread: the ASGI server then sends them as they come instead of reading all of them first."""
    source = iter(lines)

    def next_batch() -> str:
        return "".join(itertools.islice(source, batch))

    while chunk := await sync_to_async(next_batch)():
        yield chunk


@admin.register(Vote)
class VoteAdmin(admin.ModelAdmin):
    list_display = ("created_at", "conversation", "outcome", "arena", "voter")
    list_filter = (("created_at", admin.DateFieldListFilter), "outcome", "arena")
    list_select_related = ("conversation", "voter")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    list_per_page = 100
    fields = ("created_at", "conversation", "voter", "group", "outcome", "winner", "arena")
    readonly_fields = fields
    actions = ("export_preferences",)
    change_list_template = "admin/chat/vote/change_list.html"

    # A vote is what a person said: nobody edits or adds one here. Staff with the delete
    # permission may remove one (a spammer's, say): the ratings are fitted again from the rest.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.leaderboard_view)
        return [path("leaderboard/", view, name="chat_vote_leaderboard"), *super().get_urls()]

    def leaderboard_view(self, request: HttpRequest) -> TemplateResponse:
        """The models' ratings from the votes (chat/leaderboard.py), filtered by day and kind."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = LeaderboardFilterForm(request.GET or None)
        rows = chart = None
        if not form.is_bound or form.is_valid():
            data = form.cleaned_data if form.is_bound else {}
            rows = leaderboard.leaderboard(
                since=data.get("since"),
                until=data.get("until"),
                arena_only=bool(data.get("arena")),
            )
            chart = leaderboard.chart(rows)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Leaderboard"),
            "form": form,
            "rows": rows,
            "chart": chart,
        }
        return TemplateResponse(request, "admin/chat/leaderboard.html", context)

    @admin.action(
        description=_("Export selected votes as preference data (JSONL)"), permissions=["view"]
    )
    def export_preferences(self, request: HttpRequest, queryset: QuerySet[Vote]) -> Any:
        lines = preference_data.jsonl(preference_data.preference_lines(votes=queryset))
        response = StreamingHttpResponse(
            _streamed(lines), content_type="application/jsonl; charset=utf-8"
        )
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="preferences-{stamp}.jsonl"'
        return response
