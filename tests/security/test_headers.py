"""Security headers on every kind of response: HTML pages, /v1 JSON, error pages. What
tests/deploy/test_hardening.py checks for the home page (with HSTS), here for the rest, plus
the cookie flags of a production (DEBUG off) configuration."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from django.test import Client

from tests.deploy.test_hardening import SECRET
from tests.e2e.livedaphne import BASE, clean_env

pytestmark = pytest.mark.django_db


def assert_secure_headers(response: Any) -> None:
    csp = response["Content-Security-Policy"]
    directives = dict(
        (part.strip().split(" ", 1) + [""])[:2] for part in csp.split(";") if part.strip()
    )
    assert directives["script-src"] == "'self'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert directives["frame-ancestors"] == "'none'"
    if not response.get("Content-Type", "").startswith("text/javascript"):
        # Static files are answered by ServeStatic before Django's clickjacking middleware;
        # frame-ancestors 'none' (above) is what browsers obey for them.
        assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


@pytest.mark.parametrize(
    ("who", "path", "status"),
    [
        ("anon", "/accounts/login/", 200),
        ("anon", "/accounts/signup/", 200),
        ("owner", "/settings/", 200),
        ("owner", "/settings/api-keys/", 200),
        ("owner", "/no/such/page/", 404),
        ("owner", "/c/00000000-0000-0000-0000-000000000000/", 404),
        ("anon", "/v1/models", 401),
        ("anon", "/v1/nothing-here", 404),
        ("anon", "/healthz", 200),
        ("staff", "/admin/", 200),
        ("anon", "/static/js/chat.js", 200),
    ],
)
def test_every_kind_of_response_carries_the_headers(
    who: str, path: str, status: int, owner_client: Client, staff_client: Client
) -> None:
    client = {"anon": Client(), "owner": owner_client, "staff": staff_client}[who]
    response = client.get(path)
    assert response.status_code == status
    assert_secure_headers(response)


def test_a_locked_login_page_carries_them_too(owner: Any) -> None:
    client = Client()
    for _ in range(5):
        client.post("/accounts/login/", {"username": "owner", "password": "nope"})
    response = client.post("/accounts/login/", {"username": "owner", "password": "nope"})
    assert response.status_code == 429
    assert_secure_headers(response)


def test_production_settings_mark_cookies_secure(tmp_path: Any) -> None:
    code = (
        "from django.conf import settings as s; print(s.SESSION_COOKIE_SECURE, "
        "s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, s.SESSION_COOKIE_SAMESITE, "
        "s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_SSL_REDIRECT)"
    )
    proc = subprocess.run(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c", code],
        cwd=BASE,
        env=clean_env(
            DJANGO_DEBUG="0",
            DJANGO_SECRET_KEY=SECRET,
            STELLARCHAT_DATA_DIR=str(tmp_path),
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.split() == ["True", "True", "True", "Lax", "31536000", "True", "True"], (
        proc.stdout + proc.stderr
    )
