"""Settings → Delete my account."""

from __future__ import annotations

import math

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from chat import throttle
from portability import account
from portability.forms import DeleteAccountForm

TEMPLATE = "portability/delete_account.html"


@login_required
@sensitive_post_parameters("password")
@csrf_protect
@never_cache
@require_http_methods(["GET", "POST"])
def delete_account(request: HttpRequest) -> HttpResponse:
    """Asks for the password again. Wrong guesses count with the log-in's (``chat.throttle``,
    same username and address counters): an open session is no way around that limit."""
    form = DeleteAccountForm(request.user, request.POST or None)
    if request.method == "POST":
        attempt = throttle.LoginAttempt(
            username=request.user.get_username(), address=throttle.client_address(request)
        )
        wait = attempt.locked_for()
        if wait:
            minutes = math.ceil(wait / 60)
            locked = ngettext(
                "Too many wrong passwords. For your account's safety, deleting it is paused; "
                "try again in %(count)d minute.",
                "Too many wrong passwords. For your account's safety, deleting it is paused; "
                "try again in %(count)d minutes.",
                minutes,
            ) % {"count": minutes}
            context = {"form": DeleteAccountForm(request.user), "locked_message": locked}
            response = render(request, TEMPLATE, context, status=429)
            response["Retry-After"] = str(wait)
            return response
        if form.is_valid():
            name = request.user.get_username()
            account.account_delete(user=request.user)
            logout(request)
            messages.success(
                request,
                _("The account %(name)s and all its data were deleted. Goodbye.") % {"name": name},
            )
            return redirect(settings.LOGIN_URL)
        if form.has_error("password", "password_incorrect"):
            attempt.failed()
    return render(request, TEMPLATE, {"form": form})
