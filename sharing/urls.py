"""Share links' URLs (included at the site's root, before chat's)."""

from __future__ import annotations

from django.urls import path

from sharing import views

app_name = "sharing"

urlpatterns = [
    path("s/<str:token>/", views.shared, name="shared"),
    path("s/<str:token>/continue/", views.continue_shared, name="continue"),
    path("settings/shared-links/", views.link_list, name="list"),
    path("c/<uuid:conversation_id>/share/", views.share, name="share"),
    path("c/<uuid:conversation_id>/share/update/", views.update, name="update"),
    path("c/<uuid:conversation_id>/share/revoke/", views.revoke, name="revoke"),
]
