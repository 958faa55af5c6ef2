"""Staff management of API keys: list, search, revoke, create (the key is shown once).

A key is created through ``services.api_key_create`` and its plain text goes straight into the
page ``response_add`` renders: never into messages, the session, the log or the admin's
history (whose entry reads "name (prefix…)").
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from api import services
from api.forms import ApiKeyAdminForm
from api.models import ApiKey

CREATED_TEMPLATE = "admin/api/apikey/key_created.html"


class ActiveFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("active", _("Active")), ("revoked", _("Revoked"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyAdminForm
    list_display = (
        "name",
        "user",
        "display_prefix",
        "created_at",
        "last_used_at",
        "is_active",
        "store_conversations",
    )
    list_filter = (ActiveFilter, "store_conversations")
    search_fields = ("name", "prefix", "user__username")
    list_select_related = ("user",)
    ordering = ("-created_at",)
    list_per_page = 50
    autocomplete_fields = ("user",)
    actions = ("revoke_keys",)

    add_fields = ("user", "name", "store_conversations")
    change_fields = (
        "user",
        "name",
        "store_conversations",
        "prefix",
        "created_at",
        "last_used_at",
        "revoked_at",
    )

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.add_fields if obj is None else self.change_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ()
        # Only the name and the store switch change; a key is never moved to someone else.
        return ("user", "prefix", "created_at", "last_used_at", "revoked_at")

    @admin.display(description=_("prefix"), ordering="prefix")
    def display_prefix(self, obj: ApiKey) -> str:
        return f"{obj.prefix}…"

    @admin.display(description=_("active"), boolean=True, ordering="revoked_at")
    def is_active(self, obj: ApiKey) -> bool:
        return obj.active

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            fields = [f for f in ("name", "store_conversations") if f in form.changed_data]
            if fields:
                obj.save(update_fields=fields)
            return
        key, plain = services.api_key_create(
            user=obj.user, name=obj.name, store_conversations=obj.store_conversations
        )
        # The admin goes on with ``obj`` (history entry, response_add): make it the new row.
        obj.pk, obj.prefix, obj.hashed = key.pk, key.prefix, key.hashed
        obj.created_at, obj._state = key.created_at, key._state
        request._api_key_plain = plain  # type: ignore[attr-defined]  # this response only

    def response_add(
        self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None
    ) -> HttpResponse:
        plain = getattr(request, "_api_key_plain", None)
        if plain is None:  # pragma: no cover - every add goes through save_model
            return super().response_add(request, obj, post_url_continue)
        opts = self.opts
        context = {
            **self.admin_site.each_context(request),
            "title": _("API key created"),
            "opts": opts,
            "key": obj,
            "plain_key": plain,
            "change_url": reverse(
                f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]
            ),
            "list_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
            "add_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_add"),
        }
        response = TemplateResponse(request, CREATED_TEMPLATE, context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description=_("Revoke selected keys"), permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        for key in queryset.filter(revoked_at__isnull=True):
            services.api_key_revoke(key=key)
            revoked += 1
        self.message_user(
            request,
            ngettext("Revoked %(n)d key.", "Revoked %(n)d keys.", revoked) % {"n": revoked},
            messages.SUCCESS,
        )
