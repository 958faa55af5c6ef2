"""Chat pages and their htmx fragments. Views stay thin: reads through selectors, writes
through services, one template per page with named partials for the fragments."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.utils import timezone, translation
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from chat import selectors, services
from chat.forms import FeedbackForm, FlagForm, PreferencesForm, RenameForm
from chat.models import Conversation, Message

PAGE = "chat/page.html"


def _get_conversation_for_user(request: HttpRequest, conversation_id: uuid.UUID) -> Conversation:
    """404 for anything not the caller's: never confirm that someone else's exists."""
    conversation = selectors.conversation_get(user=request.user, conversation_id=conversation_id)
    if conversation is None:
        raise Http404("No such conversation")
    return conversation


def _get_message(conversation: Conversation, message_id: uuid.UUID) -> Message:
    message = selectors.message_list(conversation=conversation).filter(pk=message_id).first()
    if message is None:
        raise Http404("No such message")
    return message


def _int(value: str | None, default: int = 0, *, limit: int = 10**9) -> int:
    try:
        return max(0, min(int(value or default), limit))
    except ValueError:
        return default


def _sidebar(request: HttpRequest, *, archived: bool = False) -> dict[str, Any]:
    query = request.GET.get("q", "")
    offset = _int(request.GET.get("offset"))
    rows, more = selectors.conversation_page(
        user=request.user, archived=archived, query=query, offset=offset
    )
    return {
        "groups": selectors.group_by_day(rows, today=timezone.localdate()),
        "more": more,
        "next_offset": offset + len(rows),
        "query": query,
        "archived": archived,
    }


def _page(request: HttpRequest, conversation: Conversation | None, **extra: Any) -> HttpResponse:
    context: dict[str, Any] = {
        "conversation": conversation,
        "sidebar": _sidebar(request, archived=bool(extra.pop("archived_view", False))),
        "max_chars": settings.STELLARCHAT_MAX_MESSAGE_CHARS,
        "picker": selectors.model_picker(user=request.user, conversation=conversation),
        **extra,
    }
    if conversation is not None:
        messages, more = selectors.message_window(conversation=conversation)
        context.update(chat_messages=messages, items=selectors.thread_items(messages), older=more)
    return render(request, PAGE, context)


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return _page(request, None)


@login_required
@require_GET
def archive(request: HttpRequest) -> HttpResponse:
    return _page(request, None, archived_view=True)


@login_required
@require_GET
def conversation_detail(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    return _page(request, _get_conversation_for_user(request, conversation_id))


@login_required
@require_GET
def older_messages(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    conversation = _get_conversation_for_user(request, conversation_id)
    before = _int(request.GET.get("before"), limit=2**31)
    messages, more = selectors.message_window(conversation=conversation, before=before)
    return render(
        request,
        f"{PAGE}#older",
        {
            "conversation": conversation,
            "chat_messages": messages,
            "items": selectors.thread_items(messages),
            "older": more,
        },
    )


@login_required
@require_GET
def message_fragment(
    request: HttpRequest, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> HttpResponse:
    """One rendered message: swapped in when its stream ends."""
    conversation = _get_conversation_for_user(request, conversation_id)
    message = _get_message(conversation, message_id)
    return render(request, f"{PAGE}#message", {"conversation": conversation, "m": message})


@login_required
@require_GET
def group_fragment(
    request: HttpRequest, conversation_id: uuid.UUID, group_id: uuid.UUID
) -> HttpResponse:
    """A compare group, rendered: swapped in when its replies have ended and after its vote."""
    conversation = _get_conversation_for_user(request, conversation_id)
    group = selectors.compare_group(conversation=conversation, group_id=group_id)
    if group is None:
        raise Http404("No such comparison")
    return render(request, f"{PAGE}#group", {"conversation": conversation, "g": group})


@login_required
@require_GET
def sidebar(request: HttpRequest) -> HttpResponse:
    archived = request.GET.get("archived") == "1"
    response = render(
        request, f"{PAGE}#sidebar-items", {"sidebar": _sidebar(request, archived=archived)}
    )
    response["Vary"] = "HX-Request"
    return response


def _after_change(request: HttpRequest, conversation: Conversation) -> HttpResponse:
    """htmx gets the fresh sidebar item; a plain form post goes back to the conversation."""
    if request.htmx:
        return render(request, f"{PAGE}#sidebar-item", {"c": conversation, "sidebar": {}})
    return redirect("chat:conversation", conversation.pk)


@login_required
@require_POST
def rename(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    conversation = _get_conversation_for_user(request, conversation_id)
    form = RenameForm(request.POST)
    if not form.is_valid():
        return HttpResponse(
            "; ".join(e for errors in form.errors.values() for e in errors), status=400
        )
    services.conversation_rename(conversation=conversation, title=form.cleaned_data["title"])
    return _after_change(request, conversation)


@login_required
@require_POST
def pin(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    conversation = _get_conversation_for_user(request, conversation_id)
    form = FlagForm(request.POST)
    if not form.is_valid():
        return HttpResponse(status=400)
    services.conversation_set_flags(conversation=conversation, pinned=form.cleaned_data["value"])
    return _after_change(request, conversation)


@login_required
@require_POST
def archive_flag(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    conversation = _get_conversation_for_user(request, conversation_id)
    form = FlagForm(request.POST)
    if not form.is_valid():
        return HttpResponse(status=400)
    services.conversation_set_flags(conversation=conversation, archived=form.cleaned_data["value"])
    if request.htmx:
        return HttpResponse("")  # the item leaves this list
    return redirect("chat:home")


@login_required
@require_POST
def delete(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    conversation = _get_conversation_for_user(request, conversation_id)
    services.conversation_delete(conversation=conversation)
    if request.htmx:
        return HttpResponse("")
    return redirect("chat:home")


@login_required
@require_POST
def feedback(
    request: HttpRequest, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> HttpResponse:
    conversation = _get_conversation_for_user(request, conversation_id)
    message = _get_message(conversation, message_id)
    form = FeedbackForm(request.POST)
    if not form.is_valid() or message.role != Message.Role.ASSISTANT:
        return HttpResponse(status=400)
    services.message_set_feedback(message=message, feedback=form.cleaned_data["value"])
    if request.htmx:
        return render(request, f"{PAGE}#feedback", {"conversation": conversation, "m": message})
    return redirect("chat:conversation", conversation.pk)


@login_required
@require_http_methods(["GET", "POST"])
def preferences(request: HttpRequest) -> HttpResponse:
    prefs = selectors.preferences_for(user=request.user)
    initial = {
        "theme": prefs.theme,
        "language": prefs.language,
        "default_model": prefs.default_model,
        "system_prompt": prefs.system_prompt,
        "training_opt_out": prefs.training_opt_out,
        **prefs.options,
    }
    form = PreferencesForm(request.POST or None, initial=initial, user=request.user)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        services.preferences_update(
            user=request.user,
            theme=data["theme"],
            language=data["language"],
            default_model=data.get("default_model", prefs.default_model),
            system_prompt=data["system_prompt"],
            options=data["options"],
            training_opt_out=data["training_opt_out"],
        )
        response = redirect("chat:preferences")
        language = data["language"] or translation.get_language_from_request(request)
        response.set_cookie(settings.LANGUAGE_COOKIE_NAME, language, samesite="Lax")
        if data["language"]:
            translation.activate(data["language"])
        from django.contrib import messages

        messages.success(request, translation.gettext("Settings saved."))
        return response
    return render(request, "chat/preferences.html", {"form": form})


@login_required
@require_POST
def set_language(request: HttpRequest) -> HttpResponse:
    """The language switcher: saved on the person (and in the cookie), then back where they were."""
    from django.utils.http import url_has_allowed_host_and_scheme

    language = request.POST.get("language", "")
    if language not in dict(settings.LANGUAGES) and language != "":
        return HttpResponse(status=400)
    services.preferences_update(user=request.user, language=language)
    target = request.POST.get("next", "/")
    if not url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        target = "/"
    # A URL, never a view name: redirect() would try to reverse "home" and crash on "x y".
    response = HttpResponseRedirect(target)
    if language:
        response.set_cookie(settings.LANGUAGE_COOKIE_NAME, language, samesite="Lax")
    else:
        response.delete_cookie(settings.LANGUAGE_COOKIE_NAME)
    return response
