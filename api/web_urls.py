"""Pages where people manage their API keys (under /settings/api-keys/)."""

from __future__ import annotations

from django.urls import path

from api import web_views

app_name = "api_keys"

urlpatterns = [
    path("", web_views.key_list, name="list"),
    path("<int:key_id>/revoke/", web_views.key_revoke, name="revoke"),
    path("<int:key_id>/store/", web_views.key_store, name="store"),
]
