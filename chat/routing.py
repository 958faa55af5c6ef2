"""WebSocket routes (the chat consumer arrives with the real-time chat issue)."""

from __future__ import annotations

from django.urls import URLPattern

websocket_urlpatterns: list[URLPattern] = []
