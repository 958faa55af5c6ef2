"""Share links' URLs (included at the site's root, before chat's)."""

from __future__ import annotations

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
