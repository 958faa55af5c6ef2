"""Chat pages. Views stay thin: read through selectors, write through services."""

from __future__ import annotations

import uuid

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from chat import selectors
from chat.models import Conversation


def _get_conversation_for_user(request: HttpRequest, conversation_id: uuid.UUID) -> Conversation:
    """404 for anything not the caller's: never confirm that someone else's exists."""
    conversation = selectors.conversation_get(user=request.user, conversation_id=conversation_id)
    if conversation is None:
        raise Http404("No such conversation")
    return conversation


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers. Readiness (database, layer, worker) is /readyz, later."""
    return HttpResponse("ok", content_type="text/plain")


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "chat/home.html",
        {"conversations": selectors.conversation_list(user=request.user)[:100]},
    )


@login_required
@require_GET
def conversation_detail(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    conversation = _get_conversation_for_user(request, conversation_id)
    return render(
        request,
        "chat/conversation.html",
        {
            "conversation": conversation,
            "conversations": selectors.conversation_list(user=request.user)[:100],
            "chat_messages": selectors.message_list(conversation=conversation),
        },
    )
