"""Staff see every share link and revoke them (for a link that shares what it should not):
read-only otherwise, no adding, no editing."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from sharing import services
from sharing.models import ShareLink


@admin.register(ShareLink)
class ShareLinkAdmin(admin.ModelAdmin):
    list_display = ("conversation", "owner", "created_at", "updated_at", "show_name")
    list_select_related = ("conversation", "owner")
    list_filter = ("show_name", "created_at")
    search_fields = ("owner__username", "conversation__title")
    date_hierarchy = "created_at"
    fields = ("conversation", "owner", "show_name", "created_at", "updated_at", "page")
    readonly_fields = fields
    actions = ("revoke_selected",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # "Revoke" says what deleting a link means
        return actions

    @admin.display(description=_("shared page"))
    def page(self, obj: ShareLink) -> str:
        url = reverse("sharing:shared", args=[obj.token])
        return format_html('<a href="{}" rel="noreferrer">{}</a>', url, url)

    @admin.action(description=_("Revoke selected links"), permissions=["delete"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ShareLink]) -> None:
        count = services.share_links_revoke(links=queryset)
        self.message_user(
            request,
            ngettext("%(count)d link revoked.", "%(count)d links revoked.", count)
            % {"count": count},
            messages.SUCCESS,
        )
