"""Staff see every share link in the admin and revoke them; nobody adds or edits one there."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from sharing import services
from sharing.models import ShareLink
from tests import factories

pytestmark = pytest.mark.django_db

LIST = "/admin/sharing/sharelink/"


@pytest.fixture
def links(owner: Any, other_user: Any) -> list[ShareLink]:
    mine = factories.make_conversation(owner, title="Owner's shared chat", turns=1)
    theirs = factories.make_conversation(other_user, title="Other's shared chat", turns=1)
    return [services.share_link_create(conversation=c)[0] for c in (mine, theirs)]


def test_staff_see_every_link(staff_client: Client, links: list[ShareLink]) -> None:
    body = staff_client.get(LIST).content.decode()
    assert "Owner&#x27;s shared chat" in body and "Other&#x27;s shared chat" in body
    assert ">owner<" in body and ">other<" in body
    found = staff_client.get(LIST, {"q": "other"}).content.decode()
    assert "Other&#x27;s shared chat" in found and "Owner&#x27;s shared chat" not in found


def test_staff_revoke_selected_links(staff_client: Client, links: list[ShareLink]) -> None:
    answer = staff_client.post(
        LIST,
        {"action": "revoke_selected", "_selected_action": [str(links[0].pk)], "index": 0},
        follow=True,
    )
    assert "1 link revoked." in answer.content.decode()
    assert list(ShareLink.objects.values_list("pk", flat=True)) == [links[1].pk]
    other = Client()
    other.force_login(links[1].owner)
    assert other.get(f"/s/{links[0].token}/").status_code == 404


def test_there_is_no_adding_editing_or_plain_delete(
    staff_client: Client, links: list[ShareLink]
) -> None:
    assert staff_client.get(LIST + "add/").status_code == 403
    page = staff_client.get(f"{LIST}{links[0].pk}/change/").content.decode()
    assert 'name="show_name"' not in page and f"/s/{links[0].token}/" in page
    assert "delete_selected" not in staff_client.get(LIST).content.decode()


def test_people_who_are_not_staff_never_get_in(
    owner_client: Client, anon_client: Client, links: list[ShareLink]
) -> None:
    for client in (owner_client, anon_client):
        answer = client.get(LIST)
        assert answer.status_code == 302 and answer["Location"].startswith("/admin/login/")
