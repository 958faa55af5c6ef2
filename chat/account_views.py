"""Accounts: sign up (switchable), log in, log out, change password.

Thin wrappers over django.contrib.auth so the pages share StellarChat's templates.
"""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.core.exceptions import NON_FIELD_ERRORS
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from chat import throttle


class LoginView(auth_views.LoginView):
    """Django's log-in, throttled (``chat.throttle``): while a username or address has failed
    too often, a POST answers 429 without checking the password, so even the right one waits."""

    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        self.attempt = throttle.LoginAttempt.from_request(request)
        wait = self.attempt.locked_for()
        if wait:
            return self.locked(wait)
        return super().post(request, *args, **kwargs)

    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        self.attempt.succeeded()
        return super().form_valid(form)

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        if form.has_error(NON_FIELD_ERRORS, "invalid_login"):
            self.attempt.failed()
        return super().form_invalid(form)

    def locked(self, wait: int) -> HttpResponse:
        minutes = math.ceil(wait / 60)
        message = ngettext(
            "Too many failed log-in attempts. For your account's safety, logging in is "
            "paused; try again in %(count)d minute.",
            "Too many failed log-in attempts. For your account's safety, logging in is "
            "paused; try again in %(count)d minutes.",
            minutes,
        ) % {"count": minutes}
        # A fresh form: nothing typed is echoed back.
        context = self.get_context_data(form=self.get_form_class()(self.request))
        response = self.render_to_response({**context, "locked_message": message}, status=429)
        response["Retry-After"] = str(wait)
        return response


class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "registration/password_change.html"


class PasswordChangeDoneView(auth_views.PasswordChangeDoneView):
    template_name = "registration/password_change_done.html"


class SignupForm(UserCreationForm):
    class Meta(UserCreationForm.Meta):
        fields = ("username",)


@sensitive_post_parameters("password1", "password2")
@csrf_protect
@never_cache
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if not settings.STELLARCHAT_ALLOW_SIGNUP:
        return render(request, "registration/signup_closed.html", status=404)
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, _("Welcome to StellarChat, %(name)s.") % {"name": user.username})
        return redirect(settings.LOGIN_REDIRECT_URL)
    return render(request, "registration/signup.html", {"form": form})


@csrf_protect
@never_cache
@require_http_methods(["GET", "POST"])
def logout_view(request: HttpRequest) -> HttpResponse:
    """GET asks to confirm (a link must not log anyone out); POST logs out."""
    if request.method == "POST":
        logout(request)
        return redirect(settings.LOGOUT_REDIRECT_URL)
    if not request.user.is_authenticated:
        return redirect(settings.LOGIN_URL)
    return render(request, "registration/logout_confirm.html")
