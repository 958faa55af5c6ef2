"""Every HTML/htmx view: owner works, another user gets 404, anonymous goes to login, and bad
input gets a clear refusal that changes nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.test import Client

from chat.models import Conversation, Message, Preferences
from tests import factories

pytestmark = pytest.mark.django_db


def urls(conversation: Any, message: Any) -> dict[str, tuple[str, str, dict[str, str]]]:
    c, m = conversation.pk, message.pk
    return {
        "page": ("get", f"/c/{c}/", {}),
        "older": ("get", f"/c/{c}/older/?before=10", {}),
        "message": ("get", f"/c/{c}/m/{m}/", {}),
        "rename": ("post", f"/c/{c}/rename/", {"title": "taken over"}),
        "pin": ("post", f"/c/{c}/pin/", {"value": "1"}),
        "archive": ("post", f"/c/{c}/archive/", {"value": "1"}),
        "feedback": ("post", f"/c/{c}/m/{m}/feedback/", {"value": "-1"}),
        "delete": ("post", f"/c/{c}/delete/", {}),
    }


@pytest.fixture
def reply(conversation: Any) -> Message:
    return Message.objects.filter(conversation=conversation, role="assistant").first()


@pytest.mark.parametrize(
    "name", ["page", "older", "message", "rename", "pin", "archive", "feedback", "delete"]
)
def test_another_user_gets_not_found_and_changes_nothing(
    name: str, other_client: Client, conversation: Any, reply: Any
) -> None:
    method, url, data = urls(conversation, reply)[name]
    response = getattr(other_client, method)(url, data)
    assert response.status_code == 404
    conversation.refresh_from_db()
    reply.refresh_from_db()
    assert (conversation.title, conversation.pinned, conversation.archived) == (
        "Owner's chat",
        False,
        False,
    )
    assert reply.feedback == 0


@pytest.mark.parametrize(
    "name", ["page", "older", "message", "rename", "pin", "archive", "feedback", "delete"]
)
def test_anonymous_goes_to_login(
    name: str, anon_client: Client, conversation: Any, reply: Any
) -> None:
    method, url, data = urls(conversation, reply)[name]
    response = getattr(anon_client, method)(url, data)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_owner_renames_pins_archives_and_deletes(owner_client: Client, conversation: Any) -> None:
    hx = {"HTTP_HX_REQUEST": "true"}
    response = owner_client.post(
        f"/c/{conversation.pk}/rename/", {"title": "  New <b>name</b>  "}, **hx
    )
    assert (
        response.status_code == 200 and "New &lt;b&gt;name&lt;/b&gt;" in response.content.decode()
    )
    owner_client.post(f"/c/{conversation.pk}/pin/", {"value": "1"}, **hx)
    conversation.refresh_from_db()
    assert conversation.title == "New <b>name</b>" and conversation.pinned
    assert owner_client.post(f"/c/{conversation.pk}/archive/", {"value": "1"}, **hx).content == b""
    conversation.refresh_from_db()
    assert conversation.archived
    assert "New &lt;b&gt;name" in owner_client.get("/archive/").content.decode()
    assert "New &lt;b&gt;name" not in owner_client.get("/").content.decode()
    response = owner_client.post(f"/c/{conversation.pk}/delete/")  # no htmx: a plain redirect
    assert response.status_code == 302 and response["Location"] == "/"
    assert not Conversation.objects.filter(pk=conversation.pk).exists()


@pytest.mark.parametrize(
    ("url", "data"),
    [
        ("rename", {"title": ""}),
        ("rename", {"title": "x" * 201}),
        ("pin", {"value": "maybe"}),
        ("archive", {}),
        ("feedback", {"value": "5"}),
        ("feedback", {"value": "<script>"}),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    url: str, data: dict[str, str], owner_client: Client, conversation: Any, reply: Any
) -> None:
    method, path, _ = urls(conversation, reply)[url if url != "feedback" else "feedback"]
    response = owner_client.post(path, data)
    assert response.status_code == 400
    conversation.refresh_from_db()
    reply.refresh_from_db()
    assert (conversation.title, conversation.pinned, conversation.archived, reply.feedback) == (
        "Owner's chat",
        False,
        False,
        0,
    )


def test_feedback_is_for_replies_only(owner_client: Client, conversation: Any) -> None:
    question = Message.objects.filter(conversation=conversation, role="user").first()
    response = owner_client.post(f"/c/{conversation.pk}/m/{question.pk}/feedback/", {"value": "1"})
    assert response.status_code == 400


def test_feedback_round_trip(owner_client: Client, conversation: Any, reply: Any) -> None:
    response = owner_client.post(
        f"/c/{conversation.pk}/m/{reply.pk}/feedback/", {"value": "1"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200 and 'aria-pressed="true"' in response.content.decode()
    reply.refresh_from_db()
    assert reply.feedback == 1


def test_message_of_another_conversation_is_not_found(
    owner_client: Client, owner: Any, reply: Any
) -> None:
    mine = factories.make_conversation(owner)
    assert owner_client.get(f"/c/{mine.pk}/m/{reply.pk}/").status_code == 404
    assert owner_client.get(f"/c/{mine.pk}/m/{uuid.uuid4()}/").status_code == 404


def test_older_pages_back_through_history(owner_client: Client, owner: Any) -> None:
    conv = factories.make_conversation(owner, turns=60)  # 120 messages
    page = owner_client.get(f"/c/{conv.pk}/").content.decode()
    assert page.count('class="message ') == 50 and "answer 59" in page and "question 34" not in page
    older = owner_client.get(f"/c/{conv.pk}/older/?before=70").content.decode()
    assert older.count('class="message ') == 50 and "question 10" in older and "data-older" in older
    oldest = owner_client.get(f"/c/{conv.pk}/older/?before=20").content.decode()
    assert oldest.count('class="message ') == 20 and "data-older" not in oldest
    for junk in ("abc", "-5", "9" * 40):
        assert owner_client.get(f"/c/{conv.pk}/older/?before={junk}").status_code == 200


def test_sidebar_pages_searches_and_groups(
    owner_client: Client, owner: Any, other_user: Any
) -> None:
    for i in range(35):
        factories.make_conversation(owner, title=f"topic {i}")
    factories.make_conversation(other_user, title="topic secret")
    first = owner_client.get("/conversations/").content.decode()
    assert first.count('class="conversation-item') == 30 and "offset=30" in first
    assert "Today" in first
    rest = owner_client.get("/conversations/?offset=30").content.decode()
    assert rest.count('class="conversation-item') == 5 and "offset=" not in rest
    found = owner_client.get("/conversations/?q=topic 3").content.decode()
    assert found.count('class="conversation-item') == 6  # 3, 30..34
    assert "secret" not in owner_client.get("/conversations/?q=secret").content.decode()
    assert owner_client.get("/conversations/?offset=abc&q=" + "%00" * 10).status_code == 200


def test_preferences_are_saved_and_validated(owner_client: Client, owner: Any) -> None:
    page = owner_client.get("/settings/")
    assert page.status_code == 200
    response = owner_client.post(
        "/settings/",
        {
            "theme": "stellar",
            "language": "zh-hans",
            "system_prompt": "Be brief.",
            "temperature": "0.3",
            "max_new_tokens": "200",
        },
    )
    assert response.status_code == 302
    prefs = Preferences.objects.get(user=owner)
    assert (prefs.theme, prefs.language, prefs.system_prompt) == ("stellar", "zh-hans", "Be brief.")
    assert prefs.options == {"temperature": 0.3, "max_new_tokens": 200}
    home = owner_client.get("/").content.decode()
    assert 'data-theme="stellar"' in home and 'lang="zh-hans"' in home
    bad = owner_client.post("/settings/", {"theme": "neon", "temperature": "7", "top_p": "0"})
    assert bad.status_code == 200
    errors = bad.context["form"].errors
    assert "theme" in errors and ("temperature" in errors or "top_p" in errors)
    assert Preferences.objects.get(user=owner).theme == "stellar"


def test_language_switch_is_saved_on_the_person(owner_client: Client, owner: Any) -> None:
    response = owner_client.post(
        "/settings/language/", {"language": "zh-hans", "next": "/archive/"}
    )
    assert response.status_code == 302 and response["Location"] == "/archive/"
    assert Preferences.objects.get(user=owner).language == "zh-hans"
    evil = owner_client.post(
        "/settings/language/", {"language": "en", "next": "https://evil.example/"}
    )
    assert evil["Location"] == "/"
    assert owner_client.post("/settings/language/", {"language": "klingon"}).status_code == 400


def test_pages_send_a_strict_content_security_policy(owner_client: Client) -> None:
    policy = owner_client.get("/")["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    html = owner_client.get("/").content.decode()
    assert "<script>" not in html and " onclick=" not in html  # no inline script anywhere
