"""Share links' pages: the owner's (make, update, revoke; Settings → Shared links) and the
shared page itself at /s/<token>/ with its "Continue this conversation".

Who may open a link is the server's STELLARCHAT_SHARING: "off" (every link 404s, nothing new
is shared), "users" (anyone logged in here who has the link) or "public" (anyone who has it).
Every page is ``never_cache``: a revoked link must not live on in a cache.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from chat import selectors as chat_selectors
from chat.models import Conversation
from sharing import selectors, services
from sharing.forms import ShareForm
from sharing.models import ShareLink

ROBOTS = "noindex, nofollow"


def _mode() -> str:
    return str(settings.STELLARCHAT_SHARING)


def _get_conversation_for_user(request: HttpRequest, conversation_id: uuid.UUID) -> Conversation:
    """404 for anything not the caller's: never confirm that someone else's exists."""
    conversation = chat_selectors.conversation_get(
        user=request.user, conversation_id=conversation_id
    )
    if conversation is None:
        raise Http404("No such conversation")
    return conversation


def _get_link(token: str) -> ShareLink:
    """The link behind ``token`` while sharing is on; 404 otherwise (unknown, revoked, off)."""
    link = selectors.share_link_by_token(token=token) if _mode() != "off" else None
    if link is None:
        raise Http404("No such link")
    return link


def _sharing_off(request: HttpRequest) -> HttpResponse:
    return render(request, "sharing/off.html", status=403)


def _link_url(request: HttpRequest, link: ShareLink) -> str:
    return request.build_absolute_uri(reverse("sharing:shared", args=[link.token]))


def _back(form: ShareForm, conversation: Conversation) -> HttpResponse:
    if form.is_valid() and form.cleaned_data.get("next") == "list":
        return redirect("sharing:list")
    return redirect("sharing:share", conversation.pk)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def share(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    """GET: the conversation's link (or the button that makes one). POST: make it; a
    conversation that has one keeps it, so sharing again shows the same link."""
    conversation = _get_conversation_for_user(request, conversation_id)
    if _mode() == "off":
        return _sharing_off(request)
    link = selectors.share_link_for(user=request.user, conversation=conversation)
    if request.method == "POST":
        form = ShareForm(request.POST)
        if not form.is_valid():
            return HttpResponse(status=400)
        link, created = services.share_link_create(
            conversation=conversation, show_name=form.cleaned_data["show_name"]
        )
        if created:
            messages.success(request, gettext("Link created."))
        return redirect("sharing:share", conversation.pk)
    context = {
        "conversation": conversation,
        "link": link,
        "url": _link_url(request, link) if link else "",
        "form": ShareForm(initial={"show_name": link.show_name if link else False}),
        "mode": _mode(),
    }
    return render(request, "sharing/share.html", context)


@never_cache
@login_required
@require_POST
def update(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    """Put the newest messages and the name choice into the link; its address stays."""
    conversation = _get_conversation_for_user(request, conversation_id)
    if _mode() == "off":
        return _sharing_off(request)
    form = ShareForm(request.POST)
    if not form.is_valid():
        return HttpResponse(status=400)
    link = selectors.share_link_for(user=request.user, conversation=conversation)
    if link is None:  # revoked meanwhile (another tab): Update never brings a link back
        messages.info(request, gettext("This conversation has no link (any more)."))
    else:
        services.share_link_update(link=link, show_name=form.cleaned_data["show_name"])
        messages.success(request, gettext("Link updated."))
    return _back(form, conversation)


@never_cache
@login_required
@require_POST
def revoke(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    """The link answers 404 from now on. Allowed even with sharing off."""
    conversation = _get_conversation_for_user(request, conversation_id)
    form = ShareForm(request.POST)
    link = selectors.share_link_for(user=request.user, conversation=conversation)
    if link is not None:
        services.share_link_revoke(link=link)
        messages.success(request, gettext("Link revoked: it no longer opens."))
    return _back(form, conversation)


@never_cache
@login_required
@require_GET
def link_list(request: HttpRequest) -> HttpResponse:
    """Settings → Shared links: every link of the person, with Update and Revoke."""
    links = [
        (link, _link_url(request, link)) for link in selectors.share_link_list(user=request.user)
    ]
    return render(request, "sharing/links.html", {"links": links, "mode": _mode()})


@never_cache
@require_GET
def shared(request: HttpRequest, token: str) -> HttpResponse:
    """The shared page: read-only, no socket, no composer; kept out of search engines."""
    if _mode() == "off":
        raise Http404("Sharing is off")
    if _mode() == "users" and not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    link = _get_link(token)
    context = selectors.shared_page(link=link)
    context["is_owner"] = request.user.is_authenticated and link.owner_id == request.user.pk
    response = render(request, "sharing/shared.html", context)
    response["X-Robots-Tag"] = ROBOTS
    return response


@never_cache
@require_POST
def continue_shared(request: HttpRequest, token: str) -> HttpResponse:
    """A copy of the shared conversation lands in the viewer's own account, and opens."""
    if _mode() == "off":
        raise Http404("Sharing is off")
    if not request.user.is_authenticated:  # back to the page after logging in, not to a POST
        return redirect_to_login(reverse("sharing:shared", args=[token]))
    link = _get_link(token)
    copy = services.share_link_continue(link=link, viewer=request.user)
    return redirect("chat:conversation", copy.pk)
