"""API keys in the admin: staff only; add creates through the service and shows the key once;
list, search, filters, the revoke action, a change form limited to name and store switch. Also
the conversation review's marks for API traffic."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.messages import get_messages
from django.test import Client

from api import keys, services
from api.models import ApiKey
from tests import factories

pytestmark = pytest.mark.django_db

LIST = "/admin/api/apikey/"
ADD = f"{LIST}add/"
KEY_RE = re.compile(r"sc_[a-z0-9]{8}_[A-Za-z0-9]{40}")
CONVERSATIONS = "/admin/chat/conversation/"


def change_url(key: ApiKey) -> str:
    return f"{LIST}{key.pk}/change/"


@pytest.fixture
def some_keys(owner: Any, other_user: Any) -> dict[str, ApiKey]:
    laptop, _ = services.api_key_create(user=owner, name="laptop script")
    ci, _ = services.api_key_create(user=other_user, name="ci runner", store_conversations=False)
    old, _ = services.api_key_create(user=owner, name="old bot")
    services.api_key_revoke(key=old)
    return {"laptop": laptop, "ci": ci, "old": old}


def names(response: Any) -> set[str]:
    assert response.status_code == 200
    return {k.name for k in response.context["cl"].result_list}


# --- who gets in ----------------------------------------------------------------------------


def test_non_staff_never_get_in(owner_client: Client, anon_client: Client, some_keys: Any) -> None:
    for client in (owner_client, anon_client):
        for path in (LIST, ADD, change_url(some_keys["laptop"])):
            response = client.get(path)
            assert response.status_code == 302, path
            assert response["Location"].startswith("/admin/login/")
        client.post(ADD, {"user": "1", "name": "sneaky"})
    assert not ApiKey.objects.filter(name="sneaky").exists()


def test_staff_without_permission_are_refused(some_keys: Any) -> None:
    clerk = factories.make_user("clerk", is_staff=True)
    client = Client()
    client.force_login(clerk)
    assert client.get(LIST).status_code == 403
    assert client.get(ADD).status_code == 403


# --- add: the key, once ---------------------------------------------------------------------


def test_add_creates_through_the_service_and_shows_the_key_once(
    staff_client: Client, owner: Any
) -> None:
    assert staff_client.get(ADD).status_code == 200
    response = staff_client.post(ADD, {"user": owner.pk, "name": "  deploy   bot ", "_save": "1"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    assert [t.name for t in response.templates][0] == "admin/api/apikey/key_created.html"
    [plain] = KEY_RE.findall(response.content.decode())
    assert "it will not be shown again" in response.content.decode()
    key = ApiKey.objects.get(user=owner)
    assert (key.name, key.store_conversations) == ("deploy bot", False)  # box left unticked
    assert keys.authenticate(plain) == key
    assert key.hashed == hashlib.sha256(plain.encode()).hexdigest()
    secret = plain.split("_")[2]
    assert [m.message for m in get_messages(response.wsgi_request)] == []
    assert all(secret not in str(v) for v in staff_client.session.values())
    assert not any(
        secret in e.change_message or secret in e.object_repr for e in LogEntry.objects.all()
    )
    for path in (LIST, change_url(key)):
        html = staff_client.get(path).content.decode()
        assert secret not in html and key.hashed not in html
        assert key.prefix in html


def test_add_with_store_on(staff_client: Client, owner: Any) -> None:
    staff_client.post(ADD, {"user": owner.pk, "name": "keeps", "store_conversations": "on"})
    assert ApiKey.objects.get(user=owner).store_conversations is True


@pytest.mark.parametrize("name", ["", "   ", "nul\x00", "x" * 10_240])
def test_add_refuses_bad_names(staff_client: Client, owner: Any, name: str) -> None:
    response = staff_client.post(ADD, {"user": owner.pk, "name": name})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["name"]
    assert not KEY_RE.search(response.content.decode())
    assert ApiKey.objects.count() == 0


def test_add_refuses_past_the_key_limit(
    staff_client: Client, owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "MAX_ACTIVE_KEYS", 1)
    services.api_key_create(user=owner, name="only")
    response = staff_client.post(ADD, {"user": owner.pk, "name": "one more"})
    assert response.status_code == 200
    assert "already has 1 active keys" in str(response.context["adminform"].form.errors)
    assert ApiKey.objects.filter(user=owner).count() == 1


# --- list, search, filters ------------------------------------------------------------------


def test_list_shows_name_user_prefix_dates_and_flags(staff_client: Client, some_keys: Any) -> None:
    services.api_key_touch(key=some_keys["laptop"])
    response = staff_client.get(LIST)
    assert names(response) == {"laptop script", "ci runner", "old bot"}
    html = response.content.decode()
    for key in some_keys.values():
        assert f"{key.prefix}…" in html
    assert "owner" in html and "other" in html
    for column in ("column-created_at", "column-last_used_at", "column-is_active"):
        assert column in html
    assert "column-store_conversations" in html


def test_list_makes_no_query_per_row(
    staff_client: Client, owner: Any, django_assert_max_num_queries: Any
) -> None:
    for i in range(3):
        services.api_key_create(user=factories.make_user(f"u{i}"), name=f"k{i}")
    staff_client.get(LIST)  # warm the session and content types
    with django_assert_max_num_queries(12) as few:
        staff_client.get(LIST)
    for i in range(3, 13):
        services.api_key_create(user=factories.make_user(f"u{i}"), name=f"k{i}")
    with django_assert_max_num_queries(len(few.captured_queries)):
        staff_client.get(LIST)


def test_search_by_name_prefix_and_username(staff_client: Client, some_keys: Any) -> None:
    def found(query: str) -> set[str]:
        return names(staff_client.get(LIST, {"q": query}))

    assert found("laptop") == {"laptop script"}
    assert found(some_keys["ci"].prefix) == {"ci runner"}
    assert found("other") == {"ci runner"}
    assert found("owner") == {"laptop script", "old bot"}
    assert found("no-such-thing") == set()


def test_filters(staff_client: Client, some_keys: Any) -> None:
    assert names(staff_client.get(LIST, {"status": "active"})) == {"laptop script", "ci runner"}
    assert names(staff_client.get(LIST, {"status": "revoked"})) == {"old bot"}
    stores = staff_client.get(LIST, {"store_conversations__exact": "0"})
    assert names(stores) == {"ci runner"}


def test_admin_escapes_hostile_names(staff_client: Client, owner: Any) -> None:
    key, _ = services.api_key_create(user=owner, name="<script>alert(1)</script>")
    for path in (LIST, change_url(key)):
        html = staff_client.get(path).content.decode()
        assert "<script>alert(1)" not in html


# --- revoke, change, delete ------------------------------------------------------------------


def test_revoke_action(staff_client: Client, owner: Any, some_keys: Any) -> None:
    laptop, plain = services.api_key_create(user=owner, name="to revoke")
    old_revoked_at = ApiKey.objects.get(pk=some_keys["old"].pk).revoked_at
    response = staff_client.post(
        LIST,
        {
            "action": "revoke_keys",
            "_selected_action": [str(laptop.pk), str(some_keys["old"].pk)],
            "index": 0,
        },
        follow=True,
    )
    assert response.status_code == 200
    assert "Revoked 1 key." in [m.message for m in response.context["messages"]]
    assert keys.authenticate(plain) is None
    assert ApiKey.objects.get(pk=laptop.pk).revoked_at is not None
    assert ApiKey.objects.get(pk=some_keys["old"].pk).revoked_at == old_revoked_at
    assert ApiKey.objects.get(pk=some_keys["ci"].pk).revoked_at is None


def test_change_edits_only_name_and_store_switch(
    staff_client: Client, some_keys: Any, other_user: Any
) -> None:
    key = some_keys["laptop"]
    before = ApiKey.objects.filter(pk=key.pk).values().get()
    html = staff_client.get(change_url(key)).content.decode()
    assert 'name="name"' in html and 'name="store_conversations"' in html
    assert 'name="user"' not in html and 'name="prefix"' not in html
    response = staff_client.post(
        change_url(key),
        {
            "name": "renamed",
            "user": other_user.pk,
            "prefix": "sc_hijacked",
            "hashed": "0" * 64,
            "revoked_at": "2000-01-01 00:00",
            "_save": "1",
        },
    )
    assert response.status_code == 302
    after = ApiKey.objects.filter(pk=key.pk).values().get()
    assert (after["name"], after["store_conversations"]) == ("renamed", False)
    for field in ("user_id", "prefix", "hashed", "revoked_at", "created_at"):
        assert after[field] == before[field], field


def test_staff_may_delete_a_key(staff_client: Client, some_keys: Any) -> None:
    key = some_keys["ci"]
    assert staff_client.get(f"{LIST}{key.pk}/delete/").status_code == 200
    response = staff_client.post(f"{LIST}{key.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not ApiKey.objects.filter(pk=key.pk).exists()


# --- conversation review: API traffic marked --------------------------------------------------


def test_conversation_admin_marks_api_conversations(staff_client: Client, owner: Any) -> None:
    key, _ = services.api_key_create(user=owner, name="nightly job", store_conversations=False)
    api = factories.make_conversation(owner, title="From a program", api_key=key, retain_text=False)
    factories.make_conversation(owner, title="From a person")
    response = staff_client.get(CONVERSATIONS)
    assert response.status_code == 200
    html = response.content.decode()
    assert "column-source" in html and "column-api_key_label" in html
    assert f"nightly job ({key.prefix}…)" in html
    rows = {c.title: c for c in response.context["cl"].result_list}
    assert rows["From a program"].source == "api" and rows["From a person"].source == "chat"
    assert names_of(staff_client.get(CONVERSATIONS, {"source__exact": "api"})) == {"From a program"}
    assert names_of(staff_client.get(CONVERSATIONS, {"source__exact": "chat"})) == {"From a person"}
    detail = staff_client.get(f"{CONVERSATIONS}{api.pk}/change/").content.decode()
    assert f"nightly job ({key.prefix}…)" in detail
    assert "Text kept" in detail and "Source" in detail


def names_of(response: Any) -> set[str]:
    assert response.status_code == 200
    return {c.title for c in response.context["cl"].result_list}


def test_conversation_list_makes_no_query_per_api_row(
    staff_client: Client, owner: Any, django_assert_max_num_queries: Any
) -> None:
    def add(n: int) -> None:
        for i in range(n):
            key, _ = services.api_key_create(user=owner, name=f"k{ApiKey.objects.count()}-{i}")
            factories.make_conversation(owner, title=f"api {key.pk}", api_key=key)

    add(2)
    staff_client.get(CONVERSATIONS)
    with django_assert_max_num_queries(20) as few:
        staff_client.get(CONVERSATIONS)
    add(10)
    with django_assert_max_num_queries(len(few.captured_queries)):
        staff_client.get(CONVERSATIONS)
