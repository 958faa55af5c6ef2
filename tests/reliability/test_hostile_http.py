"""The hostile-input corpus through every HTML form, query string and header, in-process.

Each request must get a clear answer: a 4xx (with a message where a person reads it), a
redirect, or a page that stores and shows the text inert. Never a 500: Django's test client
re-raises any exception a view lets through, so a crash fails the test where it happens.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from api.models import ApiKey
from chat.models import Conversation, Preferences
from tests import factories
from tests.reliability import hostile
from tests.reliability.hostile import page_problems

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("hostile_settings")]

TEXTS = hostile.texts()
CORE = [h.value for h in hostile.core()]
OPEN_REDIRECTS = [
    "https://evil.example/",
    "//evil.example",
    "\\\\evil.example",
    "/\\evil.example",
    "javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "http:evil.example",
    " //evil.example",
    "/\t/evil.example",
]


@pytest.fixture
def hostile_settings(settings: Any) -> None:
    settings.STELLARCHAT_ALLOW_SIGNUP = True
    settings.STELLARCHAT_LOGIN_FAILURE_LIMIT = 0  # throttling has its own tests
    settings.STELLARCHAT_RATE_LIMIT_PER_MINUTE = 0


def form_value(text: str) -> str:
    """What a browser would send for ``text``: it cannot send a lone surrogate, so its bytes
    arrive as invalid UTF-8 (the request then decodes them with replacement characters)."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "surrogateescape")


def as_received(text: str) -> str:
    """``text`` as the server reads it back from a form: invalid bytes become U+FFFD."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def assert_stays_on_site(location: str) -> None:
    parts = urllib.parse.urlsplit(location)
    assert parts.scheme in ("", "http") and parts.netloc in ("", "testserver"), location
    assert not location.startswith(("//", "/\\")), location


def post(client: Client, path: str, data: dict[str, Any], **extra: Any) -> Any:
    body = urllib.parse.urlencode(
        {k: form_value(v) if isinstance(v, str) else v for k, v in data.items()},
        encoding="utf-8",
        errors="surrogateescape",
    )
    return client.post(path, body, content_type="application/x-www-form-urlencoded", **extra)


def get(client: Client, path: str, params: dict[str, str], **extra: Any) -> Any:
    query = urllib.parse.urlencode(
        {k: form_value(v) for k, v in params.items()}, encoding="utf-8", errors="surrogateescape"
    )
    return client.get(f"{path}?{query}", **extra)


def assert_inert_page(response: Any) -> None:
    assert response.status_code == 200, response.status_code
    assert page_problems(response.content.decode()) == []


def clear_error(response: Any, *, html: bool = True) -> None:
    """A 4xx with something to read, or a form shown again (200) with its errors."""
    assert 200 <= response.status_code < 500 and response.status_code not in (201, 302)
    body = response.content.decode()
    assert body.strip(), "an error must say what was wrong"
    if html and response.status_code == 200:
        assert "errorlist" in body or 'aria-invalid="true"' in body, body[:300]


# --- forms ------------------------------------------------------------------------------------


def test_signup_refuses_or_keeps_hostile_usernames_and_passwords() -> None:
    for entry in TEXTS:
        client = Client()
        text = entry.value
        response = post(
            client,
            "/accounts/signup/",
            {"username": text, "password1": "a-fine-passphrase", "password2": "a-fine-passphrase"},
        )
        if response.status_code == 302:  # accepted: the name is the one typed
            users = factories.get_user_model().objects
            assert users.filter(username=as_received(text)).exists(), entry.name
        else:
            clear_error(response)
            assert page_problems(response.content.decode()) == [], entry.name
    for text in CORE:
        response = post(
            Client(), "/accounts/signup/", {"username": "x1", "password1": text, "password2": text}
        )
        assert response.status_code in (200, 302), text[:40]


def test_login_refuses_hostile_credentials_clearly() -> None:
    factories.make_user("known")
    for entry in TEXTS:
        response = post(Client(), "/accounts/login/", {"username": entry.value, "password": "x"})
        clear_error(response)
        assert page_problems(response.content.decode()) == [], entry.name
    for text in CORE:
        response = post(Client(), "/accounts/login/", {"username": "known", "password": text})
        clear_error(response)


def test_login_next_never_leaves_the_site(owner: Any) -> None:
    for target in [*OPEN_REDIRECTS, *CORE]:
        page = get(Client(), "/accounts/login/", {"next": target})
        assert_inert_page(page)
        response = post(
            Client(),
            "/accounts/login/",
            {"username": "owner", "password": factories.PASSWORD, "next": target},
        )
        assert response.status_code == 302
        assert_stays_on_site(response["Location"])


def test_rename_refuses_or_stores_and_shows_the_title_inert(
    owner_client: Client, conversation: Conversation
) -> None:
    path = f"/c/{conversation.pk}/rename/"
    for entry in TEXTS:
        text = entry.value
        response = post(owner_client, path, {"title": text})
        if response.status_code == 302:
            conversation.refresh_from_db()
            assert conversation.title == as_received(text).strip(), entry.name
            assert_inert_page(owner_client.get(f"/c/{conversation.pk}/"))
            assert_inert_page(owner_client.get("/conversations/", HTTP_HX_REQUEST="true"))
        else:
            assert response.status_code == 400, (entry.name, response.status_code)
            assert response.content.strip(), entry.name


def test_preferences_refuse_or_store_hostile_values(owner_client: Client, owner: Any) -> None:
    good = {"theme": "dark", "language": "", "system_prompt": "", "temperature": "0.5"}
    numbers = ["nan", "inf", "-inf", "1e999", "9" * 5000, "0x10", "1_0", "١", " 1 ", "--1"]
    fields: list[tuple[str, str]] = [("system_prompt", h.value) for h in TEXTS]
    for name in ("theme", "language", "temperature", "top_p", "top_k", "max_new_tokens"):
        fields += [(name, v) for v in numbers + CORE]
    for name, value in fields:
        response = post(owner_client, "/settings/", {**good, name: value})
        if response.status_code == 302:
            prefs = Preferences.objects.get(user=owner)
            if name == "system_prompt":
                assert prefs.system_prompt == as_received(value).strip(), name
                assert_inert_page(owner_client.get("/settings/"))
        else:
            clear_error(response)
            assert page_problems(response.content.decode()) == [], (name, value[:40])


def test_language_switch_refuses_hostile_languages_and_stays_on_site(owner_client: Client) -> None:
    for text in CORE:
        response = post(owner_client, "/settings/language/", {"language": text})
        assert response.status_code == 400, text[:40]
    for target in [*OPEN_REDIRECTS, *CORE]:
        response = post(owner_client, "/settings/language/", {"language": "en", "next": target})
        assert response.status_code == 302
        assert_stays_on_site(response["Location"])


def test_api_key_names_are_refused_clearly_or_stored_and_shown_inert(
    owner_client: Client, owner: Any
) -> None:
    for entry in TEXTS:
        text = entry.value
        response = post(owner_client, "/settings/api-keys/", {"name": text})
        if response.status_code == 201:
            key = ApiKey.objects.filter(user=owner).latest("created_at")
            assert key.name == " ".join(as_received(text).split()), entry.name
            assert page_problems(response.content.decode()) == [], entry.name
            assert_inert_page(owner_client.get("/settings/api-keys/"))
            ApiKey.objects.filter(pk=key.pk).delete()  # stay under the active-key limit
        else:
            clear_error(response)
            assert page_problems(response.content.decode()) == [], entry.name


def test_flag_and_feedback_forms_refuse_hostile_values(
    owner_client: Client, owner: Any, conversation: Conversation
) -> None:
    key, _ = factories.make_api_key(owner)
    reply = conversation.messages.filter(role="assistant").first()
    paths = [
        f"/c/{conversation.pk}/pin/",
        f"/c/{conversation.pk}/archive/",
        f"/c/{conversation.pk}/m/{reply.pk}/feedback/",
        f"/settings/api-keys/{key.pk}/store/",
    ]
    for path in paths:
        for value in [*map(str, hostile.WRONG_TYPES), *CORE]:
            if value in ("-1", "0", "1"):
                continue  # real values
            assert post(owner_client, path, {"value": value}).status_code == 400, (path, value)
    assert post(owner_client, paths[0], {"value": "1"}).status_code == 302  # the real thing


# --- query strings ------------------------------------------------------------------------------


def test_query_strings_of_every_get_view_are_harmless(
    owner_client: Client, staff_client: Client, conversation: Conversation
) -> None:
    reply = conversation.messages.filter(role="assistant").first()
    views = {
        "/": ["q", "offset"],
        "/archive/": ["q", "offset"],
        "/conversations/": ["q", "offset", "archived"],
        f"/c/{conversation.pk}/": ["q", "offset"],
        f"/c/{conversation.pk}/older/": ["before"],
        f"/c/{conversation.pk}/m/{reply.pk}/": ["x"],
        "/settings/": ["x"],
        "/settings/api-keys/": ["x"],
    }
    values = [*CORE, *map(str, hostile.WRONG_TYPES), "-1", "9" * 5000, "1e9", "%ff%fe"]
    everything = [h.value for h in TEXTS]
    for path, params in views.items():
        for name in params:
            # The search box sees the whole corpus once; other parameters a spread of it.
            for value in everything if (path, name) == ("/", "q") else values:
                response = get(owner_client, path, {name: value})
                assert response.status_code == 200, (path, name, value[:40])
                assert page_problems(response.content.decode()) == [], (path, name, value[:40])
    for path in ("/admin/chat/conversation/", "/admin/api/apikey/", "/admin/auth/user/"):
        for value in values:  # staff only; Django's own search
            response = get(staff_client, path, {"q": value})
            assert response.status_code == 200, (path, value[:40])
            assert page_problems(response.content.decode()) == [], (path, value[:40])


# --- headers ------------------------------------------------------------------------------------


def test_hostile_host_headers_are_400(owner_client: Client) -> None:
    hosts = ["evil.example", "[::1", "a" * 5000, "x\tevil", "127.0.0.1@evil"]
    for host in hosts:
        response = owner_client.get("/", HTTP_HOST=host)
        assert response.status_code == 400, host


def test_hostile_accept_language_and_cookies_still_serve_the_page(owner_client: Client) -> None:
    languages = ["x" * 10_000, "*;q=abc", "en;q=1e999", "zh-Hans;q=nan, en", "\x00", ",,,;;;"]
    for value in languages + [text for text in CORE if hostile.encodable(text)]:
        response = owner_client.get("/", HTTP_ACCEPT_LANGUAGE=value)
        assert_inert_page(response)
        # Headers are bytes: what reaches the server is the text's UTF-8 read as Latin-1.
        raw = value.encode("utf-8").decode("latin-1")
        cookie_client = Client()
        cookie_client.cookies[settings.LANGUAGE_COOKIE_NAME] = raw
        cookie_client.cookies[settings.SESSION_COOKIE_NAME] = raw
        response = cookie_client.get("/accounts/login/")
        assert_inert_page(response)


def test_hostile_origins_on_posts_without_a_csrf_token_are_403(owner: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    for origin in ["https://evil.example", "null", "\x00", "x" * 5000, "http://testserver.evil"]:
        response = post(client, "/settings/api-keys/", {"name": "x"}, HTTP_ORIGIN=origin)
        assert response.status_code == 403, origin
    assert not ApiKey.objects.exists()


def test_broken_content_types_on_forms_are_400(
    owner_client: Client, conversation: Conversation
) -> None:
    path = f"/c/{conversation.pk}/rename/"
    for content_type in [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=" + "b" * 5000,
        "application/x-www-form-urlencoded; charset=nope",
        "application/json",
        "text/plain; charset=utf-16",
    ]:
        response = owner_client.generic(
            "POST", path, b"--x\r\n\xff\xfe\r\n", content_type=content_type
        )
        assert 400 <= response.status_code < 500, (content_type, response.status_code)
    assert owner_client.post(path, {"title": "fine"}).status_code == 302
