"""Log-in throttling, session fixation and log-out, through real HTTP requests (Django's test
client over the whole middleware stack) and once against a real daphne process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from chat import throttle
from tests.e2e.livedaphne import free_port, redis_db
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """A movable clock for the memory storage's windows (limits reads time.time)."""
    import time

    now = [time.time()]
    monkeypatch.setattr(time, "time", lambda: now[0])
    yield now


def log_in(client: Client, username: str, password: str, **extra: Any) -> Any:
    return client.post(LOGIN, {"username": username, "password": password}, **extra)


def fail(client: Client, username: str, times: int, **extra: Any) -> None:
    for _ in range(times):
        response = log_in(client, username, "wrong-password", **extra)
        assert response.status_code == 200, "a plain failure is the usual form error"


def test_it_locks_a_username_after_five_failures(anon_client: Client, owner: Any) -> None:
    fail(anon_client, "owner", 5)
    response = log_in(anon_client, "owner", PASSWORD)  # even the right password now waits
    assert response.status_code == 429
    html = response.content.decode()
    assert "Too many failed log-in attempts" in html and "try again in 15 minutes" in html
    assert 900 - 5 <= int(response["Retry-After"]) <= 900
    assert "_auth_user_id" not in anon_client.session
    assert 'name="username"' in html and "owner" not in html.split("<form", 1)[1]


def test_a_lock_ends_by_itself(anon_client: Client, owner: Any, clock: list[float]) -> None:
    fail(anon_client, "owner", 5)
    assert log_in(anon_client, "owner", PASSWORD).status_code == 429
    clock[0] += 15 * 60 + 1
    response = log_in(anon_client, "owner", PASSWORD)
    assert response.status_code == 302 and anon_client.session["_auth_user_id"] == str(owner.pk)


def test_the_delay_grows_with_more_failures(
    anon_client: Client, owner: Any, clock: list[float]
) -> None:
    fail(anon_client, "owner", 5)
    clock[0] += 15 * 60 + 1
    fail(anon_client, "owner", 5)  # ten within the hour: the second tier
    response = log_in(anon_client, "owner", PASSWORD)
    assert response.status_code == 429
    assert 60 * 60 - 15 * 60 - 10 <= int(response["Retry-After"]) <= 60 * 60 - 15 * 60
    clock[0] += 15 * 60 + 1
    assert log_in(anon_client, "owner", PASSWORD).status_code == 429  # still within the hour


def test_a_success_clears_the_usernames_count(anon_client: Client, owner: Any) -> None:
    fail(anon_client, "owner", 4)
    assert log_in(anon_client, "owner", PASSWORD).status_code == 302
    anon_client.logout()
    fail(Client(), "owner", 4)
    assert log_in(Client(), "owner", PASSWORD).status_code == 302


def test_usernames_are_counted_apart(anon_client: Client, owner: Any, other_user: Any) -> None:
    fail(Client(REMOTE_ADDR="10.0.0.1"), "owner", 5)
    assert log_in(Client(REMOTE_ADDR="10.0.0.2"), "owner", PASSWORD).status_code == 429
    assert log_in(anon_client, "other", PASSWORD).status_code == 302


def test_case_variants_of_a_username_share_one_count(anon_client: Client, owner: Any) -> None:
    for name in ("owner", "OWNER", "Owner", "oWner", "ownER"):
        fail(anon_client, name, 1)
    assert log_in(anon_client, "owner", PASSWORD).status_code == 429


def test_one_address_trying_many_usernames_is_locked(owner: Any) -> None:
    guesser = Client(REMOTE_ADDR="203.0.113.9")
    for i in range(20):
        fail(guesser, f"guess{i}", 1)
    assert log_in(guesser, "owner", PASSWORD).status_code == 429
    assert log_in(Client(REMOTE_ADDR="203.0.113.10"), "owner", PASSWORD).status_code == 302


def test_forwarded_for_is_ignored_unless_proxies_are_configured(owner: Any) -> None:
    # Without STELLARCHAT_TRUSTED_PROXIES a client cannot dodge the address count by sending
    # a new X-Forwarded-For with every guess.
    for i in range(20):
        fail(Client(HTTP_X_FORWARDED_FOR=f"198.51.100.{i}"), f"guess{i}", 1)
    assert log_in(Client(), "owner", PASSWORD).status_code == 429


def test_behind_one_trusted_proxy_the_last_forwarded_address_counts(
    owner: Any, settings: Any
) -> None:
    settings.STELLARCHAT_TRUSTED_PROXIES = 1
    for i in range(20):  # spoofed left parts change; what our proxy appended does not
        fail(Client(HTTP_X_FORWARDED_FOR=f"10.9.9.{i}, 192.0.2.7"), f"guess{i}", 1)
    locked = log_in(Client(HTTP_X_FORWARDED_FOR="192.0.2.7"), "owner", PASSWORD)
    assert locked.status_code == 429
    other = log_in(Client(HTTP_X_FORWARDED_FOR="192.0.2.8"), "owner", PASSWORD)
    assert other.status_code == 302  # someone else behind the same proxy


def test_zero_turns_throttling_off(anon_client: Client, owner: Any, settings: Any) -> None:
    settings.STELLARCHAT_LOGIN_FAILURE_LIMIT = 0
    fail(anon_client, "owner", 30)
    assert log_in(anon_client, "owner", PASSWORD).status_code == 302


def test_form_errors_that_are_not_wrong_passwords_do_not_count(
    anon_client: Client, owner: Any
) -> None:
    for _ in range(10):
        assert anon_client.post(LOGIN, {"username": "owner"}).status_code == 200
    assert log_in(anon_client, "owner", PASSWORD).status_code == 302


def test_the_lock_message_in_chinese(owner: Any) -> None:
    client = Client(HTTP_ACCEPT_LANGUAGE="zh-Hans")
    fail(client, "owner", 5)
    response = log_in(client, "owner", PASSWORD)
    assert response.status_code == 429
    assert "登录失败次数过多" in response.content.decode()


def test_it_fails_open_when_redis_is_unreachable(
    anon_client: Client, owner: Any, settings: Any
) -> None:
    # A port nothing listens on: people can still log in while the broker is away.
    url = f"redis://127.0.0.1:{free_port()}/14"
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [url]}}
    }
    fail(anon_client, "owner", 6)
    assert log_in(anon_client, "owner", PASSWORD).status_code == 302


def test_failures_are_shared_through_redis(owner: Any, settings: Any) -> None:
    """With REDIS_URL every web process counts the same failures: here a fresh limiter (as
    another process would have) over the same Redis database sees them."""
    import redis

    with redis_db(14) as url:
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [url]},
            }
        }
        try:
            fail(Client(), "owner", 5)
            throttle._limiter.cache_clear()  # a fresh process: nothing in memory
            assert log_in(Client(), "owner", PASSWORD).status_code == 429
            assert redis.Redis.from_url(url).keys("stellarchat-login*")
        finally:
            throttle._limiter.cache_clear()


# --- session fixation and log-out -----------------------------------------------------------


def test_the_session_key_changes_at_login(anon_client: Client, owner: Any) -> None:
    anon_client.get(LOGIN)
    session = anon_client.session
    session["planted"] = "by an attacker"  # a session that exists before the login
    session.save()
    before = session.session_key
    anon_client.cookies[settings.SESSION_COOKIE_NAME] = before
    assert log_in(anon_client, "owner", PASSWORD).status_code == 302
    after = anon_client.cookies[settings.SESSION_COOKIE_NAME].value
    assert after != before
    from django.contrib.sessions.backends.db import SessionStore

    assert not SessionStore().exists(before)  # the old key is gone, not merely unused
    fixated = Client()
    fixated.cookies[settings.SESSION_COOKIE_NAME] = before
    assert fixated.get("/").status_code == 302  # the planted key is not logged in


def test_logout_flushes_the_session(owner: Any) -> None:
    client = Client()
    assert log_in(client, "owner", PASSWORD).status_code == 302
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    assert client.post("/accounts/logout/").status_code == 302
    from django.contrib.sessions.backends.db import SessionStore

    assert not SessionStore().exists(key)
    replay = Client()
    replay.cookies[settings.SESSION_COOKIE_NAME] = key
    assert replay.get("/").status_code == 302  # a copied cookie is worthless after log-out


def test_a_password_change_keeps_me_in_and_logs_out_other_sessions(owner: Any) -> None:
    mine, elsewhere = Client(), Client()
    assert log_in(mine, "owner", PASSWORD).status_code == 302
    assert log_in(elsewhere, "owner", PASSWORD).status_code == 302
    new = "another-long-passphrase-42"
    response = mine.post(
        "/accounts/password/",
        {"old_password": PASSWORD, "new_password1": new, "new_password2": new},
    )
    assert response.status_code == 302
    assert mine.get("/").status_code == 200
    assert elsewhere.get("/").status_code == 302
