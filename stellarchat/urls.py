"""Top-level URLs: accounts, admin, metrics, chat."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from chat import account_views
from stellarchat import metrics

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("accounts/signup/", account_views.signup, name="signup"),
    path("accounts/login/", account_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", account_views.logout_view, name="logout"),
    path("accounts/password/", account_views.PasswordChangeView.as_view(), name="password_change"),
    path(
        "accounts/password/done/",
        account_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path("settings/api-keys/", include("api.web_urls")),
    path("v1/", include("api.urls")),
    path("", include("sharing.urls")),
    path("", include("portability.urls")),
    path("", include("chat.urls")),
]

handler400 = "stellarchat.errors.bad_request"
handler403 = "stellarchat.errors.permission_denied"
handler404 = "stellarchat.errors.not_found"
handler500 = "stellarchat.errors.server_error"
