"""Top-level URLs: accounts, admin, chat."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from chat import account_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/signup/", account_views.signup, name="signup"),
    path("accounts/login/", account_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", account_views.logout_view, name="logout"),
    path("accounts/password/", account_views.PasswordChangeView.as_view(), name="password_change"),
    path(
        "accounts/password/done/",
        account_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path("", include("chat.urls")),
]
