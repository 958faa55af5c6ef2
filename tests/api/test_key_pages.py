"""The API keys page: the owner creates, lists, switches and revokes; a new key is shown once and
only its hash is kept; anyone else gets 404, anonymous visitors go to login, and hostile input
is refused or escaped, changing nothing."""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from api import keys, services
from api.models import ApiKey

pytestmark = pytest.mark.django_db

LIST = "/settings/api-keys/"
KEY_RE = re.compile(r"sc_[a-z0-9]{8}_[A-Za-z0-9]{40}")
HTMX = {"HTTP_HX_REQUEST": "true"}


def revoke_url(key: ApiKey) -> str:
    return f"{LIST}{key.pk}/revoke/"


def store_url(key: ApiKey) -> str:
    return f"{LIST}{key.pk}/store/"


def make_key(user: Any, name: str = "laptop", **extra: Any) -> tuple[ApiKey, str]:
    return services.api_key_create(user=user, name=name, **extra)


def create(client: Client, name: str = "my script", **extra: Any) -> Any:
    data = {"name": name, "store_conversations": "on", **extra}
    return client.post(LIST, data)


def shown_keys(response: Any) -> list[str]:
    return KEY_RE.findall(response.content.decode())


# --- create: the key, once ------------------------------------------------------------------


def test_it_shows_a_new_key_once(owner_client: Client, owner: Any) -> None:
    response = create(owner_client)
    assert response.status_code == 201
    assert "no-store" in response["Cache-Control"]
    [plain] = shown_keys(response)
    html = response.content.decode()
    assert "Copy it now; it will not be shown again." in html
    assert 'data-copy-key="new-key"' in html
    key = ApiKey.objects.get(user=owner)
    assert plain.startswith(key.prefix + "_")

    reload = owner_client.get(LIST)
    assert reload.status_code == 200
    assert shown_keys(reload) == []
    assert plain not in reload.content.decode()
    assert f"{key.prefix}…" in reload.content.decode()


def test_the_key_shown_authenticates_and_only_its_hash_is_stored(
    owner_client: Client, owner: Any
) -> None:
    [plain] = shown_keys(create(owner_client, "ci"))
    key = ApiKey.objects.get(user=owner)
    assert keys.authenticate(plain) == key
    assert key.hashed == hashlib.sha256(plain.encode()).hexdigest()
    secret = plain.split("_")[2]
    row = ApiKey.objects.filter(pk=key.pk).values().get()
    assert not any(secret in str(value) for value in row.values())
    assert not any(plain in str(value) for value in row.values())


def test_the_key_goes_nowhere_but_the_page(
    owner_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = create(owner_client)
    [plain] = shown_keys(response)
    secret = plain.split("_")[2]
    assert not response.has_header("Location")
    assert all(secret not in morsel.value for morsel in response.cookies.values())
    assert [m.message for m in get_messages(response.wsgi_request)] == []
    session = owner_client.session
    assert all(secret not in str(value) for value in session.values())
    assert secret not in caplog.text


def test_store_conversations_is_on_by_default_and_can_be_left_off(
    owner_client: Client, owner: Any
) -> None:
    page = owner_client.get(LIST).content.decode()
    assert re.search(r'<input type="checkbox" name="store_conversations"[^>]* checked>', page)
    create(owner_client, "keeps")
    owner_client.post(LIST, {"name": "forgets"})  # an unticked box is simply absent
    stored = dict(ApiKey.objects.filter(user=owner).values_list("name", "store_conversations"))
    assert stored == {"keeps": True, "forgets": False}


def test_names_are_collapsed_and_may_be_100_characters(owner_client: Client, owner: Any) -> None:
    assert create(owner_client, "  my \t  key\n name  ").status_code == 201
    long_name = "a" * 50 + " " * 300 + "b" * 49  # 100 characters once collapsed
    assert create(owner_client, long_name).status_code == 201
    names = set(ApiKey.objects.filter(user=owner).values_list("name", flat=True))
    assert names == {"my key name", "a" * 50 + " " + "b" * 49}


def test_htmx_create_swaps_in_the_body_with_the_key(owner_client: Client) -> None:
    response = owner_client.post(LIST, {"name": "htmx", "store_conversations": "on"}, **HTMX)
    assert response.status_code == 201
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    assert "<html" not in html and 'id="new-key"' in html and len(shown_keys(response)) == 1
    assert "htmx" in html  # the list below holds the new key


# --- the list -------------------------------------------------------------------------------


def test_it_lists_my_keys_with_prefix_name_dates_and_state(
    owner_client: Client, owner: Any, other_user: Any
) -> None:
    used, _ = make_key(owner, "used one")
    services.api_key_touch(key=used)
    fresh, _ = make_key(owner, "fresh one", store_conversations=False)
    gone, _ = make_key(owner, "gone one")
    services.api_key_revoke(key=gone)
    foreign, _ = make_key(other_user, "someone else's")
    html = owner_client.get(LIST).content.decode()
    for key in (used, fresh, gone):
        row = re.search(rf'<li class="key-row[^"]*" id="key-{key.pk}">(.*?)</li>', html, re.S)
        assert row, key.name
        text = row.group(1)
        assert key.name in text and f"{key.prefix}…" in text
        assert f'datetime="{key.created_at.isoformat()}"' in text
    rows = {
        k.pk: re.search(rf'id="key-{k.pk}">(.*?)</li>', html, re.S).group(1)
        for k in (used, fresh, gone)
    }
    assert "never" not in rows[used.pk] and "never" in rows[fresh.pk]
    assert "Active" in rows[used.pk] and "Revoked" in rows[gone.pk]
    assert "not stored" in rows[fresh.pk] and "not stored" not in rows[used.pk]
    assert "/revoke/" not in rows[gone.pk]  # nothing to do with a revoked key
    assert foreign.name not in html and foreign.prefix not in html
    assert html.index("fresh one") < html.index("used one") < html.index("gone one")


def test_it_shows_how_to_use_a_key(owner_client: Client) -> None:
    html = owner_client.get(LIST).content.decode()
    assert "http://testserver/v1" in html
    assert "Authorization: Bearer YOUR_KEY" in html


def test_the_settings_page_links_here(owner_client: Client) -> None:
    assert f'href="{LIST}"' in owner_client.get("/settings/").content.decode()


# --- revoke and the store switch ------------------------------------------------------------


def test_revoke_stops_the_key_at_once(owner_client: Client, owner: Any) -> None:
    key, plain = make_key(owner)
    assert keys.authenticate(plain) == key
    response = owner_client.post(revoke_url(key), {"confirm": "1"})
    assert response.status_code == 302 and response["Location"] == LIST
    assert keys.authenticate(plain) is None
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_revoke_without_script_asks_first(owner_client: Client, owner: Any) -> None:
    key, plain = make_key(owner, "ask me")
    response = owner_client.post(revoke_url(key))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Revoke “ask me”" in html and 'name="confirm" value="1"' in html
    assert keys.authenticate(plain) == key


def test_htmx_revoke_returns_the_row(owner_client: Client, owner: Any) -> None:
    key, plain = make_key(owner)
    response = owner_client.post(revoke_url(key), {"confirm": "1"}, **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.strip().startswith(f'<li class="key-row is-revoked" id="key-{key.pk}">')
    assert "Revoked" in html
    assert keys.authenticate(plain) is None


def test_store_switch(owner_client: Client, owner: Any) -> None:
    key, _ = make_key(owner)
    assert owner_client.post(store_url(key), {"value": "0"}).status_code == 302
    key.refresh_from_db()
    assert key.store_conversations is False
    response = owner_client.post(store_url(key), {"value": "1"}, **HTMX)
    assert response.status_code == 200 and "Stop storing conversations" in response.content.decode()
    key.refresh_from_db()
    assert key.store_conversations is True


def test_store_switch_refuses_bad_values_and_revoked_keys(owner_client: Client, owner: Any) -> None:
    key, _ = make_key(owner)
    for value in ("", "2", "yes", "\x00"):
        assert owner_client.post(store_url(key), {"value": value}).status_code == 400
    services.api_key_revoke(key=key)
    assert owner_client.post(store_url(key), {"value": "0"}).status_code == 400
    key.refresh_from_db()
    assert key.store_conversations is True


# --- isolation ------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["revoke", "store"])
def test_another_users_key_is_not_found_and_unchanged(
    action: str, other_client: Client, owner: Any
) -> None:
    key, plain = make_key(owner)
    url = revoke_url(key) if action == "revoke" else store_url(key)
    response = other_client.post(url, {"confirm": "1", "value": "0"})
    assert response.status_code == 404
    key.refresh_from_db()
    assert (key.revoked_at, key.store_conversations) == (None, True)
    assert keys.authenticate(plain) == key


@pytest.mark.parametrize(
    "path",
    [
        f"{LIST}999999/revoke/",
        f"{LIST}abc/revoke/",
        f"{LIST}1.5/revoke/",
        f"{LIST}-1/revoke/",
        f"{LIST}99999999999999999999999/revoke/",
        f"{LIST}%00/store/",
        f"{LIST}99999999999999999999999/store/",
    ],
)
def test_unknown_and_malformed_ids_are_not_found(owner_client: Client, path: str) -> None:
    assert owner_client.post(path, {"confirm": "1", "value": "0"}).status_code == 404


def test_anonymous_visitors_go_to_login(anon_client: Client, owner: Any) -> None:
    key, plain = make_key(owner)
    for method, path in (
        ("get", LIST),
        ("post", LIST),
        ("post", revoke_url(key)),
        ("post", store_url(key)),
    ):
        response = getattr(anon_client, method)(path, {"name": "x", "confirm": "1", "value": "0"})
        assert response.status_code == 302, path
        assert response["Location"].startswith("/accounts/login/"), path
    assert ApiKey.objects.count() == 1
    assert keys.authenticate(plain) == key


# --- hostile input --------------------------------------------------------------------------


def test_post_only_endpoints_refuse_get(owner_client: Client, owner: Any) -> None:
    key, plain = make_key(owner)
    for url in (revoke_url(key), store_url(key), f"{revoke_url(key)}?confirm=1"):
        assert owner_client.get(url).status_code == 405, url
    assert owner_client.put(LIST).status_code == 405
    assert keys.authenticate(plain) == key


def test_writes_need_the_csrf_token(owner: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    key, plain = make_key(owner)
    assert client.post(LIST, {"name": "sneaky", "store_conversations": "on"}).status_code == 403
    assert client.post(revoke_url(key), {"confirm": "1"}).status_code == 403
    assert client.post(store_url(key), {"value": "0"}).status_code == 403
    assert list(ApiKey.objects.values_list("name", flat=True)) == ["laptop"]
    assert keys.authenticate(plain) == key
    # The page carries the token for both forms and htmx (hx-headers on <body>).
    html = client.get(LIST).content.decode()
    assert 'name="csrfmiddlewaretoken"' in html and '"X-CSRFToken"' in html


def test_names_are_escaped(owner_client: Client, owner: Any) -> None:
    hostile = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    response = create(owner_client, hostile)
    assert response.status_code == 201
    assert ApiKey.objects.get(user=owner).name == hostile
    for html in (response.content.decode(), owner_client.get(LIST).content.decode()):
        assert "<script>alert(1)" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    key = ApiKey.objects.get(user=owner)
    html = owner_client.post(revoke_url(key)).content.decode()  # the confirm step
    assert "<script>alert(1)" not in html


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", "This field is required."),
        ("   \t\n ", "This field is required."),
        ("nul\x00byte", "Null characters are not allowed."),
        ("bell\x07", "The name holds control characters."),
        ("x" * 101, "At most 100 characters."),
        ("x" * 10_240, "At most 100 characters."),
    ],
    ids=["empty", "blank", "nul", "control", "101", "10kB"],
)
def test_bad_names_are_refused_with_a_form_error(
    owner_client: Client, name: str, error: str
) -> None:
    response = create(owner_client, name)
    assert response.status_code == 400
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    assert error in html and 'class="field has-error"' in html
    assert shown_keys(response) == []
    assert ApiKey.objects.count() == 0


def test_htmx_form_errors_are_swapped_in(owner_client: Client) -> None:
    response = owner_client.post(LIST, {"name": ""}, **HTMX)
    assert response.status_code == 200  # htmx swaps 2xx answers only
    assert "This field is required." in response.content.decode()
    assert ApiKey.objects.count() == 0


def test_the_key_limit_is_a_form_error(
    owner_client: Client, owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "MAX_ACTIVE_KEYS", 2)
    make_key(owner, "one")
    make_key(owner, "two")
    response = create(owner_client, "three")
    assert response.status_code == 400
    assert "You have 2 active keys, the most allowed; revoke one first." in (
        response.content.decode()
    )
    assert shown_keys(response) == []
    assert ApiKey.objects.filter(user=owner).count() == 2


def test_the_page_in_chinese(owner: Any) -> None:
    client = Client(HTTP_ACCEPT_LANGUAGE="zh-Hans")
    client.force_login(owner)
    make_key(owner)
    html = client.get(LIST).content.decode()
    assert '<html lang="zh-hans"' in html
    assert "API 密钥" in html and "创建密钥" in html and "吊销" in html
    assert "Create key" not in html
