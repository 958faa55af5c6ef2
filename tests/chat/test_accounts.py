"""Accounts: sign up (switchable), log in, log out, change password."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "another-long-passphrase-42"


def test_anonymous_home_redirects_to_login(anon_client: Client) -> None:
    response = anon_client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_login_page_has_the_contract_fields(anon_client: Client) -> None:
    html = anon_client.get("/accounts/login/").content.decode()
    assert 'name="username"' in html and 'name="password"' in html
    assert 'href="/accounts/signup/"' in html


def test_it_signs_up_and_logs_in(anon_client: Client) -> None:
    response = anon_client.post(
        "/accounts/signup/",
        {"username": "newbie", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert response.status_code == 302 and response["Location"] == "/"
    assert get_user_model().objects.filter(username="newbie").exists()
    home = anon_client.get("/")
    assert home.status_code == 200
    assert "newbie" in home.content.decode()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"username": "", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD}, "required"),
        ({"username": "x", "password1": NEW_PASSWORD, "password2": "different-pass-99"}, "match"),
        ({"username": "x", "password1": "123", "password2": "123"}, "too short"),
        (
            {"username": "a b<script>", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
            "valid",
        ),
        ({"username": "u" * 200, "password1": NEW_PASSWORD, "password2": NEW_PASSWORD}, "150"),
    ],
)
def test_it_rejects_bad_signups_clearly(
    anon_client: Client, data: dict[str, str], error: str
) -> None:
    response = anon_client.post("/accounts/signup/", data)
    assert response.status_code == 200
    assert error in response.content.decode()
    assert "<script>" not in response.content.decode()
    assert get_user_model().objects.count() == 0


def test_it_rejects_a_taken_username(anon_client: Client, owner: Any) -> None:
    response = anon_client.post(
        "/accounts/signup/",
        {"username": "owner", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert "already exists" in response.content.decode()


def test_signup_off_refuses_and_hides_the_link(anon_client: Client, settings: Any) -> None:
    settings.STELLARCHAT_ALLOW_SIGNUP = False
    assert anon_client.get("/accounts/signup/").status_code == 404
    response = anon_client.post(
        "/accounts/signup/",
        {"username": "intruder", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert response.status_code == 404
    assert "does not accept new accounts" in response.content.decode()
    assert not get_user_model().objects.filter(username="intruder").exists()
    assert "/accounts/signup/" not in anon_client.get("/accounts/login/").content.decode()


def test_it_logs_in_with_username_and_password(anon_client: Client, owner: Any) -> None:
    response = anon_client.post(
        "/accounts/login/?next=/", {"username": "owner", "password": PASSWORD, "next": "/"}
    )
    assert response.status_code == 302 and response["Location"] == "/"
    assert anon_client.get("/").status_code == 200


def test_it_refuses_a_wrong_password(anon_client: Client, owner: Any) -> None:
    response = anon_client.post("/accounts/login/", {"username": "owner", "password": "nope"})
    assert response.status_code == 200
    assert "correct username and password" in response.content.decode()
    assert anon_client.get("/").status_code == 302


def test_login_ignores_a_foreign_next(anon_client: Client, owner: Any) -> None:
    response = anon_client.post(
        "/accounts/login/",
        {"username": "owner", "password": PASSWORD, "next": "https://evil.example/"},
    )
    assert response.status_code == 302 and response["Location"] == "/"


def test_logout_asks_on_get_and_logs_out_on_post(owner_client: Client) -> None:
    confirm = owner_client.get("/accounts/logout/")
    assert confirm.status_code == 200 and "Log out?" in confirm.content.decode()
    assert owner_client.get("/").status_code == 200  # GET changed nothing
    response = owner_client.post("/accounts/logout/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert owner_client.get("/").status_code == 302


def test_logout_post_needs_csrf(owner: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    assert client.post("/accounts/logout/").status_code == 403
    assert client.get("/").status_code == 200


def test_it_changes_the_password(owner_client: Client, owner: Any) -> None:
    response = owner_client.post(
        "/accounts/password/",
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 302 and response["Location"] == "/accounts/password/done/"
    owner.refresh_from_db()
    assert owner.check_password(NEW_PASSWORD)
    assert owner_client.get("/").status_code == 200  # the session survives its own change


def test_password_change_needs_the_old_password(owner_client: Client, owner: Any) -> None:
    response = owner_client.post(
        "/accounts/password/",
        {"old_password": "wrong", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 200
    owner.refresh_from_db()
    assert owner.check_password(PASSWORD)


def test_password_change_needs_login(anon_client: Client) -> None:
    response = anon_client.get("/accounts/password/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
