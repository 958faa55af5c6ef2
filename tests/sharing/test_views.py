"""Share links through the pages: who may make, update, revoke and open a link under each
STELLARCHAT_SHARING mode, what the shared page shows (and hides), and hostile input."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client

from chat.models import Conversation, Message
from sharing import services
from sharing.models import ShareLink
from tests import factories

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
NOT_FOUND = "There is nothing here, or it is not yours to see."


def share_path(conversation: Any, action: str = "") -> str:
    return f"/c/{conversation.pk}/share/" + (f"{action}/" if action else "")


def page_of(link: ShareLink) -> str:
    return f"/s/{link.token}/"


@pytest.fixture
def link(conversation: Any) -> ShareLink:
    return services.share_link_create(conversation=conversation)[0]


# --- the owner's side ------------------------------------------------------------------------


def test_the_menu_offers_share_unless_sharing_is_off(
    owner_client: Client, conversation: Any, settings: Any
) -> None:
    assert share_path(conversation) in owner_client.get("/").content.decode()
    settings.STELLARCHAT_SHARING = "off"
    assert share_path(conversation) not in owner_client.get("/").content.decode()


def test_it_makes_shows_updates_and_revokes_a_link(owner_client: Client, conversation: Any) -> None:
    page = owner_client.get(share_path(conversation))
    assert page.status_code == 200 and "Create link" in page.content.decode()
    assert page["Cache-Control"].startswith("max-age=0")

    made = owner_client.post(share_path(conversation), {"show_name": "on"})
    assert made.status_code == 302 and made["Location"] == share_path(conversation)
    link = ShareLink.objects.get(conversation=conversation)
    assert link.show_name
    body = owner_client.get(share_path(conversation)).content.decode()
    assert f"http://testserver/s/{link.token}/" in body and "Create link" not in body

    owner_client.post(share_path(conversation), {})  # sharing again: the same link
    assert ShareLink.objects.get(conversation=conversation).token == link.token

    factories.make_message(conversation, content="the newest question")
    updated = owner_client.post(share_path(conversation, "update"), {})
    assert updated.status_code == 302
    link.refresh_from_db()
    assert not link.show_name and "the newest question" in str(link.snapshot)

    revoked = owner_client.post(share_path(conversation, "revoke"), {})
    assert revoked.status_code == 302 and revoked["Location"] == share_path(conversation)
    assert not ShareLink.objects.exists()
    again = owner_client.post(share_path(conversation, "update"), {})  # never brings it back
    assert again.status_code == 302 and not ShareLink.objects.exists()


def test_settings_lists_every_link_with_update_and_revoke(
    owner_client: Client, owner: Any, other_user: Any
) -> None:
    first = factories.make_conversation(owner, title="First shared", turns=1)
    second = factories.make_conversation(owner, title="Second shared", turns=1)
    theirs = factories.make_conversation(other_user, title="Someone else's", turns=1)
    links = [services.share_link_create(conversation=c)[0] for c in (first, second, theirs)]
    services.share_link_update(link=links[1], show_name=True)

    body = owner_client.get("/settings/shared-links/").content.decode()
    assert "First shared" in body and "Second shared" in body
    assert "Someone else" not in body and links[2].token not in body
    assert body.index("Second shared") < body.index("First shared")  # last updated first
    assert f"/s/{links[0].token}/" in body and f"/c/{first.pk}/share/revoke/" in body

    # Update from the list keeps the name choice the link has, and comes back to the list.
    back = owner_client.post(f"/c/{second.pk}/share/update/", {"next": "list", "show_name": "on"})
    assert back["Location"] == "/settings/shared-links/"
    assert ShareLink.objects.get(pk=links[1].pk).show_name
    owner_client.post(f"/c/{first.pk}/share/revoke/", {"next": "list"})
    assert not ShareLink.objects.filter(pk=links[0].pk).exists()
    assert links[0].token not in owner_client.get("/settings/shared-links/").content.decode()


@pytest.mark.parametrize("action", ["", "update", "revoke"])
def test_someone_else_s_conversation_is_not_found(
    action: str, other_client: Client, conversation: Any, link: ShareLink
) -> None:
    before = ShareLink.objects.values().get()
    answer = other_client.post(share_path(conversation, action), {"show_name": "on"})
    assert answer.status_code == 404 and link.token not in answer.content.decode()
    assert other_client.get(share_path(conversation)).status_code == 404
    assert ShareLink.objects.values().get() == before


def test_sharing_off_refuses_to_make_links_with_a_clear_message(
    owner_client: Client, conversation: Any, link: ShareLink, settings: Any
) -> None:
    settings.STELLARCHAT_SHARING = "off"
    for answer in (
        owner_client.get(share_path(conversation)),
        owner_client.post(share_path(conversation), {}),
        owner_client.post(share_path(conversation, "update"), {}),
    ):
        assert answer.status_code == 403 and "Sharing is off" in answer.content.decode()
    listed = owner_client.get("/settings/shared-links/").content.decode()
    assert "Sharing is off" in listed and link.token in listed
    assert owner_client.post(share_path(conversation, "revoke"), {}).status_code == 302
    assert not ShareLink.objects.exists()


@pytest.mark.parametrize(
    "path", ["/c/{pk}/share/", "/c/{pk}/share/update/", "/c/{pk}/share/revoke/"]
)
def test_the_owner_s_writes_need_the_csrf_token(path: str, owner: Any, conversation: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    assert client.post(path.format(pk=conversation.pk), {}).status_code == 403
    assert not ShareLink.objects.exists()


def test_hostile_form_values_are_refused_or_harmless(
    owner_client: Client, conversation: Any, link: ShareLink
) -> None:
    assert (
        owner_client.post(share_path(conversation), {"next": "https://evil.example"}).status_code
        == 400
    )
    answer = owner_client.post(share_path(conversation, "revoke"), {"next": "//evil.example"})
    assert answer["Location"] == share_path(conversation)  # only "list" or its own page
    assert (
        owner_client.post(share_path(conversation), {"show_name": "x" * 10_000}).status_code == 302
    )


# --- the shared page -------------------------------------------------------------------------


def test_users_mode_sends_visitors_to_log_in_then_back(
    anon_client: Client, other_client: Client, link: ShareLink
) -> None:
    answer = anon_client.get(page_of(link))
    assert answer.status_code == 302 and answer["Location"].startswith(LOGIN + "?next=")
    assert link.token in answer["Location"] and "question 0" not in answer.content.decode()
    page = other_client.get(page_of(link))
    assert page.status_code == 200 and "question 0" in page.content.decode()


def test_public_mode_opens_to_anyone_with_the_link(
    anon_client: Client, other_client: Client, link: ShareLink, settings: Any
) -> None:
    settings.STELLARCHAT_SHARING = "public"
    page = anon_client.get(page_of(link))
    body = page.content.decode()
    assert page.status_code == 200 and "answer 1" in body
    assert "Continue this conversation" not in body and "Log in to continue" in body
    assert other_client.get(page_of(link)).status_code == 200


@pytest.mark.parametrize("who", ["anon", "other", "owner"])
def test_off_mode_answers_404_to_everyone(
    who: str, request: Any, link: ShareLink, settings: Any
) -> None:
    settings.STELLARCHAT_SHARING = "off"
    client = request.getfixturevalue(f"{who}_client")
    for answer in (client.get(page_of(link)), client.post(page_of(link) + "continue/")):
        assert answer.status_code == 404 and NOT_FOUND in answer.content.decode()


@pytest.mark.parametrize("mode", ["users", "public"])
def test_a_revoked_or_unknown_link_answers_the_usual_404_at_once(
    mode: str,
    owner_client: Client,
    other_client: Client,
    conversation: Any,
    link: ShareLink,
    settings: Any,
) -> None:
    settings.STELLARCHAT_SHARING = mode
    assert other_client.get(page_of(link)).status_code == 200
    owner_client.post(share_path(conversation, "revoke"), {})
    for client in (other_client, owner_client):
        gone = client.get(page_of(link))
        assert gone.status_code == 404 and NOT_FOUND in gone.content.decode()
        assert "question 0" not in gone.content.decode()
        assert client.post(page_of(link) + "continue/").status_code == 404
    unknown = other_client.get("/s/" + "A" * 43 + "/")
    assert unknown.status_code == 404 and NOT_FOUND in unknown.content.decode()


@pytest.mark.parametrize(
    "token",
    [
        "x" * 65,
        "x" * 5000,
        "%00abc",
        "%0a%0d",
        "..%2f..",
        "%3Cscript%3E",
        "%F0%9F%92%A9",
        "'%20OR%201=1",
    ],
)
def test_hostile_tokens_are_simply_not_found(
    token: str, other_client: Client, link: ShareLink
) -> None:
    for answer in (
        other_client.get(f"/s/{token}/"),
        other_client.post(f"/s/{token}/continue/"),
    ):
        assert answer.status_code == 404
        assert "<script>" not in answer.content.decode()
    assert Conversation.objects.count() == 1


def test_the_page_is_read_only_and_names_the_models(owner: Any, other_client: Client) -> None:
    conversation = factories.make_conversation(owner, title="Model talk")
    factories.make_message(conversation, content="hello there")
    factories.make_message(conversation, role="assistant", content="**hi**", model_name="alpha")
    link = services.share_link_create(conversation=conversation)[0]
    body = other_client.get(page_of(link)).content.decode()
    assert "Alpha Label" in body and "<strong>hi</strong>" in body  # the chat's sanitizer
    assert "ws-connect" not in body and "/ws/" not in body and "composer" not in body
    assert "chat.js" not in body and "textarea" not in body
    assert 'style="' not in body and "<script>" not in body  # CSP: no inline anything
    assert "owner" not in re.sub(r"<[^>]+>", " ", body)  # no name unless the owner ticks it


def test_the_owner_s_name_shows_only_when_ticked(other_client: Client, link: ShareLink) -> None:
    assert "Shared by" not in other_client.get(page_of(link)).content.decode()
    services.share_link_update(link=link, show_name=True)
    assert "Shared by owner" in other_client.get(page_of(link)).content.decode()


def test_the_page_is_kept_out_of_search_engines_and_caches(
    other_client: Client, link: ShareLink
) -> None:
    page = other_client.get(page_of(link))
    assert page["X-Robots-Tag"] == "noindex, nofollow"
    assert '<meta name="robots" content="noindex, nofollow">' in page.content.decode()
    assert "no-store" in page["Cache-Control"] and "private" in page["Cache-Control"]
    assert page["Referrer-Policy"] == "same-origin"  # the token never leaves in a Referer


def test_link_previews_get_a_title_and_a_bounded_description(
    owner: Any, other_client: Client
) -> None:
    conversation = factories.make_conversation(owner, title="Trip to Mars")
    factories.make_message(conversation, content="How long\n\nis the   trip? " + "very " * 200)
    link = services.share_link_create(conversation=conversation)[0]
    body = other_client.get(page_of(link)).content.decode()
    assert "<title>Trip to Mars · StellarChat</title>" in body
    assert '<meta property="og:title" content="Trip to Mars">' in body
    description = re.search(r'<meta property="og:description" content="([^"]*)">', body)
    assert description is not None
    text = html.unescape(description.group(1))
    assert text.startswith("How long is the trip? very") and len(text) <= 200


def test_hostile_text_in_titles_and_messages_is_escaped(owner: Any, other_client: Client) -> None:
    attack = '<script>alert(1)</script><img src=x onerror=alert(2)>"><b>'
    conversation = factories.make_conversation(owner, title=attack)
    factories.make_message(conversation, content=attack)
    factories.make_message(
        conversation, role="assistant", content=attack + " [x](javascript:alert(3))"
    )
    link = services.share_link_create(conversation=conversation)[0]
    body = other_client.get(page_of(link)).content.decode()
    assert "<script>alert" not in body and "<img" not in body and "<b>" not in body
    assert 'href="javascript' not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert 'content="&lt;script&gt;' in body  # og:title and og:description escaped too
    owner_page = Client()
    owner_page.force_login(owner)
    listed = owner_page.get("/settings/shared-links/").content.decode()
    assert "<script>alert" not in listed


# --- continue this conversation --------------------------------------------------------------


def test_continue_copies_it_into_the_viewer_s_account_and_opens_it(
    owner: Any, other_user: Any, other_client: Client, link: ShareLink
) -> None:
    answer = other_client.post(page_of(link) + "continue/")
    copy = Conversation.objects.get(owner=other_user)
    assert answer.status_code == 302 and answer["Location"] == f"/c/{copy.pk}/"
    assert list(copy.messages.values_list("content", flat=True)) == [
        "question 0",
        "answer 0",
        "question 1",
        "answer 1",
    ]
    assert owner.conversations.count() == 1
    page = other_client.get(answer["Location"])
    assert page.status_code == 200 and "answer 1" in page.content.decode()
    assert Message.objects.filter(conversation__owner=owner).count() == 4  # the original's


def test_the_owner_may_continue_too(owner: Any, owner_client: Client, link: ShareLink) -> None:
    assert "Manage this link" in owner_client.get(page_of(link)).content.decode()
    owner_client.post(page_of(link) + "continue/")
    assert owner.conversations.count() == 2


def test_continue_needs_a_login_and_the_csrf_token(
    anon_client: Client, other_user: Any, link: ShareLink, settings: Any
) -> None:
    settings.STELLARCHAT_SHARING = "public"
    answer = anon_client.post(page_of(link) + "continue/")
    assert answer.status_code == 302 and answer["Location"].startswith(LOGIN + "?next=")
    assert answer["Location"].endswith(f"/s/{link.token}/")  # back to the page, not to a POST
    client = Client(enforce_csrf_checks=True)
    client.force_login(other_user)
    assert client.post(page_of(link) + "continue/").status_code == 403
    assert client.get(page_of(link) + "continue/").status_code == 405
    assert Conversation.objects.count() == 1


def test_the_share_page_and_list_need_a_login(anon_client: Client, conversation: Any) -> None:
    for path in (share_path(conversation), "/settings/shared-links/"):
        answer = anon_client.get(path)
        assert answer.status_code == 302 and answer["Location"].startswith(LOGIN)


def test_the_project_csp_forbids_inline_script(other_client: Client, link: ShareLink) -> None:
    policy = other_client.get(page_of(link))["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert django_settings.STELLARCHAT_SHARING == "users"
