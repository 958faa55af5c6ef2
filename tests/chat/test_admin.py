"""Admin review: staff only, read-only, searchable, filterable, exportable."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from chat.models import Message
from tests import factories

pytestmark = pytest.mark.django_db

LIST = "/admin/chat/conversation/"


@pytest.fixture
def reviewed(owner: Any, other_user: Any) -> dict[str, Any]:
    happy = factories.make_conversation(owner, title="Happy chat")
    factories.make_message(happy, content="tell me about nebulae")
    factories.make_message(happy, role="assistant", content="Nebulae are clouds.", feedback=1)
    grumpy = factories.make_conversation(other_user, title="Grumpy chat")
    factories.make_message(grumpy, content="write a haiku about quasars")
    factories.make_message(
        grumpy, role="assistant", content="Quasars shine.", feedback=-1, status="failed"
    )
    return {"happy": happy, "grumpy": grumpy}


def test_non_staff_never_get_in(owner_client: Client, anon_client: Client, reviewed: Any) -> None:
    for client in (owner_client, anon_client):
        for path in ("/admin/", LIST, f"{LIST}{reviewed['happy'].pk}/change/"):
            response = client.get(path)
            assert response.status_code == 302, path
            assert response["Location"].startswith("/admin/login/")


def test_staff_without_permission_sees_no_conversations(reviewed: Any) -> None:
    clerk = factories.make_user("clerk", is_staff=True)
    client = Client()
    client.force_login(clerk)
    assert client.get(LIST).status_code == 403


def test_staff_with_view_permission_can_review(reviewed: Any) -> None:
    from django.contrib.auth.models import Permission

    reviewer = factories.make_user("viewer", is_staff=True)
    reviewer.user_permissions.add(Permission.objects.get(codename="view_conversation"))
    client = Client()
    client.force_login(reviewer)
    assert client.get(LIST).status_code == 200
    assert client.get(f"{LIST}{reviewed['grumpy'].pk}/change/").status_code == 200


def test_list_shows_owner_counts_and_feedback(staff_client: Client, reviewed: Any) -> None:
    response = staff_client.get(LIST)
    assert response.status_code == 200
    rows = {row.title: row for row in response.context["cl"].result_list}
    assert set(rows) == {"Happy chat", "Grumpy chat"}
    happy, grumpy = rows["Happy chat"], rows["Grumpy chat"]
    assert (happy.n_messages, happy.n_up, happy.n_down) == (2, 1, 0)
    assert (grumpy.n_messages, grumpy.n_up, grumpy.n_down) == (2, 0, 1)
    html = response.content.decode()
    assert "owner" in html and "other" in html


def test_search_covers_titles_and_message_text(staff_client: Client, reviewed: Any) -> None:
    def titles(query: str) -> set[str]:
        response = staff_client.get(LIST, {"q": query})
        return {c.title for c in response.context["cl"].result_list}

    assert titles("Grumpy") == {"Grumpy chat"}
    assert titles("nebulae") == {"Happy chat"}
    assert titles("quasars") == {"Grumpy chat"}
    assert titles("no-such-words") == set()
    # Search across messages must not duplicate rows or inflate counts.
    response = staff_client.get(LIST, {"q": "chat"})
    assert [c.n_messages for c in response.context["cl"].result_list] == [2, 2]


def test_filters(staff_client: Client, reviewed: Any, owner: Any) -> None:
    def titles(**params: Any) -> set[str]:
        response = staff_client.get(LIST, params)
        assert response.status_code == 200
        return {c.title for c in response.context["cl"].result_list}

    assert titles(negative_feedback="yes") == {"Grumpy chat"}
    assert titles(negative_feedback="no") == {"Happy chat"}
    assert titles(message_status="failed") == {"Grumpy chat"}
    assert titles(message_status="complete") == {"Happy chat", "Grumpy chat"}
    assert titles(owner__id__exact=owner.pk) == {"Happy chat"}
    assert titles(**{"created_at__gte": "2000-01-01 00:00:00+00:00"}) == {
        "Happy chat",
        "Grumpy chat",
    }


def test_conversation_page_is_read_only_and_in_order(staff_client: Client, reviewed: Any) -> None:
    pk = reviewed["happy"].pk
    response = staff_client.get(f"{LIST}{pk}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.index("tell me about nebulae") < html.index("Nebulae are clouds.")
    assert 'name="_save"' not in html  # no save button: review only
    before = Message.objects.get(content="tell me about nebulae")
    staff_client.post(f"{LIST}{pk}/change/", {"title": "tampered"})
    reviewed["happy"].refresh_from_db()
    assert reviewed["happy"].title == "Happy chat"
    assert Message.objects.get(pk=before.pk).content == "tell me about nebulae"
    assert staff_client.get(f"{LIST}add/").status_code == 403


def test_admin_escapes_hostile_text(staff_client: Client, owner: Any) -> None:
    conv = factories.make_conversation(owner, title="<script>alert(1)</script>")
    factories.make_message(conv, content="<img src=x onerror=alert(2)>")
    for path in (LIST, f"{LIST}{conv.pk}/change/"):
        html = staff_client.get(path).content.decode()
        assert "<script>alert(1)" not in html and "<img src=x" not in html


def _action(client: Client, action: str, pks: list[Any]) -> Any:
    return client.post(
        LIST, {"action": action, "_selected_action": [str(pk) for pk in pks], "index": 0}
    )


def test_download_transcripts_as_json(staff_client: Client, reviewed: Any) -> None:
    response = _action(staff_client, "download_json", [reviewed["happy"].pk, reviewed["grumpy"].pk])
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "attachment" in response["Content-Disposition"]
    data = {c["title"]: c for c in json.loads(response.content)}
    assert [m["content"] for m in data["Happy chat"]["messages"]] == [
        "tell me about nebulae",
        "Nebulae are clouds.",
    ]
    assert data["Grumpy chat"]["messages"][1]["feedback"] == -1
    assert data["Grumpy chat"]["owner"] == "other"


def test_download_transcripts_as_markdown(staff_client: Client, reviewed: Any) -> None:
    response = _action(staff_client, "download_markdown", [reviewed["grumpy"].pk])
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/markdown")
    body = response.content.decode()
    assert body.startswith("# Grumpy chat")
    assert body.index("write a haiku about quasars") < body.index("Quasars shine.")
    assert "👎" in body and "failed" in body
    assert "Happy chat" not in body
