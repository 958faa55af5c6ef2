"""Chat pages: login required, and every read scoped to its owner (404 for anyone else)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from django.test import Client

from tests import factories

pytestmark = pytest.mark.django_db


def test_home_lists_only_my_conversations(
    owner_client: Client, owner: Any, other_user: Any
) -> None:
    factories.make_conversation(owner, title="Mine about stars")
    factories.make_conversation(other_user, title="Theirs about secrets")
    html = owner_client.get("/").content.decode()
    assert "Mine about stars" in html
    assert "Theirs about secrets" not in html
    assert 'name="content"' in html  # the composer


def test_home_lists_pinned_first_and_hides_archived(owner_client: Client, owner: Any) -> None:
    from chat import services

    old = factories.make_conversation(owner, title="Old pinned")
    factories.make_conversation(owner, title="Newer")
    archived = factories.make_conversation(owner, title="Put away")
    services.conversation_set_flags(conversation=old, pinned=True)
    services.conversation_set_flags(conversation=archived, archived=True)
    html = owner_client.get("/").content.decode()
    assert html.index("Old pinned") < html.index("Newer")
    assert "Put away" not in html


def test_it_shows_my_conversation_in_order(owner_client: Client, conversation: Any) -> None:
    response = owner_client.get(f"/c/{conversation.pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    order = [html.index(t) for t in ("question 0", "answer 0", "question 1", "answer 1")]
    assert order == sorted(order)


def test_it_rejects_foreign_conversation_as_not_found(
    other_client: Client, conversation: Any
) -> None:
    response = other_client.get(f"/c/{conversation.pk}/")
    assert response.status_code == 404
    assert "question 0" not in response.content.decode()


def test_unknown_conversation_looks_the_same_as_foreign(
    other_client: Client, conversation: Any
) -> None:
    foreign = other_client.get(f"/c/{conversation.pk}/")
    unknown = other_client.get(f"/c/{uuid.uuid4()}/")
    assert foreign.status_code == unknown.status_code == 404

    def page(response: Any) -> str:  # the per-request CSRF token aside, byte for byte
        return re.sub(r'"X-CSRFToken": "[^"]+"', "", response.content.decode())

    assert page(foreign) == page(unknown)


def test_it_sends_anonymous_visitors_to_login(anon_client: Client, conversation: Any) -> None:
    response = anon_client.get(f"/c/{conversation.pk}/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_malformed_ids_are_not_found(owner_client: Client) -> None:
    for path in ("/c/not-a-uuid/", "/c/../admin/", "/c/%00/", "/c/" + "a" * 5000 + "/"):
        assert owner_client.get(path).status_code == 404


def test_user_text_is_escaped(owner_client: Client, owner: Any) -> None:
    conv = factories.make_conversation(owner, title="<img src=x onerror=alert(1)>")
    factories.make_message(conv, content="<script>alert('x')</script>")
    html = owner_client.get(f"/c/{conv.pk}/").content.decode()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;" in html


def test_chat_pages_refuse_writes_by_get_only(owner_client: Client, conversation: Any) -> None:
    assert owner_client.post("/").status_code == 405
    assert owner_client.post(f"/c/{conversation.pk}/").status_code == 405
