"""The API keys page (/settings/api-keys/): list, create, revoke, and the store switch.

One template serves the page and its htmx fragments. A new key exists in plain text only in
the response to the POST that created it: never in the session, messages, cookies, URLs or
logs, and that response is ``no-store``. Every view is ``never_cache``: the page is personal.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from api import selectors, services
from api.forms import KeyCreateForm
from api.models import ApiKey
from chat.forms import FlagForm
from inference.registry import model_name

PAGE = "api/keys.html"


def _get_key_for_user(request: HttpRequest, key_id: int) -> ApiKey:
    """404 for anything not the caller's: never confirm that someone else's key exists."""
    key = selectors.api_key_get(user=request.user, key_id=key_id)
    if key is None:
        raise Http404("No such key")
    return key


def _render(request: HttpRequest, *, status: int = 200, **extra: Any) -> HttpResponse:
    """The page, or for htmx just its body (form, new key and list): one template either way."""
    context: dict[str, Any] = {
        "form": KeyCreateForm(),
        "keys": selectors.api_key_list(user=request.user),
        "model_id": model_name(),
        **extra,
    }
    template = f"{PAGE}#keys-body" if request.htmx else PAGE
    response = render(request, template, context, status=status)
    response["Vary"] = "HX-Request"
    return response


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def key_list(request: HttpRequest) -> HttpResponse:
    """GET: the list. POST: create a key and show it, once, in this response."""
    if request.method == "GET":
        return _render(request)
    form = KeyCreateForm(request.POST)
    if not form.is_valid():
        return _refused(request, form)
    try:
        key, plain = services.api_key_create(
            user=request.user,
            name=form.cleaned_data["name"],
            store_conversations=form.cleaned_data["store_conversations"],
        )
    except services.KeyLimitReached:
        form.add_error(None, _limit_message())
        return _refused(request, form)
    return _render(request, new_key=key, plain_key=plain, status=201)


def _refused(request: HttpRequest, form: KeyCreateForm) -> HttpResponse:
    """The form again, with its errors: 400, except for htmx, which swaps only 2xx answers."""
    return _render(request, form=form, status=200 if request.htmx else 400)


def _limit_message() -> str:
    return gettext("You have %(limit)d active keys, the most allowed; revoke one first.") % {
        "limit": services.MAX_ACTIVE_KEYS
    }


@never_cache
@login_required
@require_POST
def key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    """Without ``confirm=1`` (a form posted without JavaScript) this asks first; htmx asks
    with ``hx-confirm`` and sends it."""
    key = _get_key_for_user(request, key_id)
    if request.POST.get("confirm") != "1":
        return _render(request, confirm_revoke=key)
    services.api_key_revoke(key=key)
    return _after_change(request, key)


@never_cache
@login_required
@require_POST
def key_store(request: HttpRequest, key_id: int) -> HttpResponse:
    key = _get_key_for_user(request, key_id)
    form = FlagForm(request.POST)
    if not form.is_valid() or not key.active:
        return HttpResponse(status=400)
    services.api_key_set_store(key=key, store_conversations=form.cleaned_data["value"])
    return _after_change(request, key)


def _after_change(request: HttpRequest, key: ApiKey) -> HttpResponse:
    """htmx gets the fresh row; a plain form post goes back to the list."""
    if request.htmx:
        return render(request, f"{PAGE}#key-row", {"k": key})
    return redirect("api_keys:list")
