"""CSRF on every state change: each write the route table lists is refused (403) without the
token and accepted with it. /v1 is the one exemption: it takes bearer keys, never cookies."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from tests.security.routes import ROUTES, World, state_changing

pytestmark = pytest.mark.django_db

TOKEN = "x" * 32  # a well-formed CSRF secret, as a page would have set in the cookie
WRITES = [(r, m) for r, m in state_changing() if ROUTES[r].access != "v1"]


def csrf_client(user: Any | None) -> Client:
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    client.cookies[settings.CSRF_COOKIE_NAME] = TOKEN
    return client


def test_every_write_is_listed() -> None:
    assert len(WRITES) >= 14
    assert {r for r, _ in state_changing()} - {r for r, _ in WRITES} == {"v1/chat/completions"}


@pytest.mark.parametrize(("route", "method"), WRITES)
def test_a_write_needs_the_token(route: str, method: str, owner: Any) -> None:
    world = World.build(owner)
    spec = ROUTES[route]
    user = None if spec.access == "public" else owner
    path, data = world.fill(route), spec.data(world)

    refused = csrf_client(user).post(path, data)
    assert refused.status_code == 403, (route, refused.status_code)

    accepted = csrf_client(user).post(path, {**data, "csrfmiddlewaretoken": TOKEN})
    assert accepted.status_code < 400, (route, accepted.status_code)

    header = csrf_client(user).post(path, data, headers={"X-CSRFToken": TOKEN})  # htmx's way
    assert header.status_code != 403, route


@pytest.mark.parametrize(
    "route", [r for r, spec in ROUTES.items() if spec.methods == ("GET",) and spec.access != "v1"]
)
def test_routes_listed_as_read_only_refuse_writes(route: str, owner: Any) -> None:
    """Keeps the table honest: a route that starts taking POSTs must be listed (and so get
    the CSRF test above)."""
    world = World.build(owner)
    client = Client()
    if ROUTES[route].access != "public":
        client.force_login(owner)
    assert client.post(world.fill(route), {}).status_code == 405, route


def test_a_foreign_origin_is_refused_even_with_the_token(owner: Any) -> None:
    world = World.build(owner)
    path = world.fill("c/<uuid:conversation_id>/delete/")
    client = csrf_client(owner)
    answer = client.post(
        path, {"csrfmiddlewaretoken": TOKEN}, headers={"Origin": "https://evil.example"}
    )
    assert answer.status_code == 403
    assert client.post(path, {"csrfmiddlewaretoken": TOKEN}).status_code == 302


@pytest.mark.parametrize("path", ["/v1/models", "/v1/chat/completions"])
def test_v1_is_exempt_but_takes_no_cookies(path: str) -> None:
    answer = csrf_client(None).post(path, {})
    assert answer.status_code in (401, 405)  # never CSRF's 403: a key decides, not a cookie
    assert answer.json()["error"]["message"]  # OpenAI's error shape, not an HTML page
