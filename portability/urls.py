"""Export, import and account deletion URLs (included at the site's root, before chat's)."""

from __future__ import annotations

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []

# --- export and account (export_views, account_views) ---
urlpatterns += []

# --- import (import_views) ---
urlpatterns += []
