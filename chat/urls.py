from __future__ import annotations

from django.urls import path

from chat import views
from stellarchat import health

app_name = "chat"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("archive/", views.archive, name="archive"),
    path("settings/", views.preferences, name="preferences"),
    path("settings/language/", views.set_language, name="set_language"),
    path("conversations/", views.sidebar, name="sidebar"),
    path("c/<uuid:conversation_id>/", views.conversation_detail, name="conversation"),
    path("c/<uuid:conversation_id>/older/", views.older_messages, name="older"),
    path("c/<uuid:conversation_id>/rename/", views.rename, name="rename"),
    path("c/<uuid:conversation_id>/pin/", views.pin, name="pin"),
    path("c/<uuid:conversation_id>/archive/", views.archive_flag, name="archive_flag"),
    path("c/<uuid:conversation_id>/delete/", views.delete, name="delete"),
    path(
        "c/<uuid:conversation_id>/m/<uuid:message_id>/",
        views.message_fragment,
        name="message",
    ),
    path(
        "c/<uuid:conversation_id>/g/<uuid:group_id>/",
        views.group_fragment,
        name="group",
    ),
    path(
        "c/<uuid:conversation_id>/m/<uuid:message_id>/feedback/",
        views.feedback,
        name="feedback",
    ),
]
