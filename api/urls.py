"""The OpenAI-compatible REST API: /v1/models and /v1/chat/completions."""

from __future__ import annotations

from django.urls import path

from api import views

app_name = "v1"

urlpatterns = [
    path("models", views.models, name="models"),
    path("chat/completions", views.chat_completions, name="chat_completions"),
]
