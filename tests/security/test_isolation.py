"""Who may reach what, for every URL of the project: the owner, another user, a staff member
(who gets no special rights outside the admin) and an anonymous visitor. The route table is
``routes.ROUTES``; a route the resolver knows and the table does not fails the first test."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pytest
from django.test import Client

from api.models import ApiKey
from chat.models import Conversation, Message
from tests.security.routes import (
    ROUTES,
    SECRET_KEY_NAME,
    SECRET_TITLE,
    World,
    route_of,
    walk,
)

pytestmark = pytest.mark.django_db

ALL = sorted(set(walk()))
CASES = [
    (r, m)
    for r in ALL
    for m in ("GET", "POST")
    if m in route_of(r).methods or r.startswith("admin/")
]
LOGIN = "/accounts/login/"


def test_every_route_is_listed() -> None:
    listed = {r for r in ALL if not r.startswith("admin/")}
    assert listed == set(ROUTES), "add new routes to tests/security/routes.py"
    assert len([r for r in ALL if r.startswith("admin/")]) >= 30  # the admin is walked too


def snapshot(world: World) -> tuple[Any, ...]:
    conversation = Conversation.objects.filter(pk=world.conversation.pk).values().first()
    messages = list(Message.objects.filter(conversation_id=world.conversation.pk).values())
    key = ApiKey.objects.filter(pk=world.key.pk).values().first()
    return conversation, messages, key


def call(client: Client, method: str, path: str, data: dict[str, Any]) -> Any:
    return client.get(path) if method == "GET" else client.post(path, data)


def assert_no_leak(response: Any) -> None:
    raw = b"".join(response) if response.streaming else response.content
    if response.get("Content-Type") == "application/zip":  # the export: what it holds
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            raw = b"".join(zf.read(name) for name in zf.namelist())
    body = raw.decode(errors="replace")
    assert SECRET_TITLE not in body and SECRET_KEY_NAME not in body


@pytest.mark.parametrize(("route", "method"), CASES)
def test_route_access(
    route: str,
    method: str,
    owner: Any,
    owner_client: Client,
    other_client: Client,
    staff_client: Client,
    anon_client: Client,
) -> None:
    world = World.build(owner)
    spec = route_of(route)
    path = world.fill(route)
    data = spec.data(world)
    before = snapshot(world)

    anon = call(anon_client, method, path, data)
    if spec.access == "public":  # /readyz may say 503: no worker runs here
        assert anon.status_code < 400 or route == "readyz", anon.status_code
        assert not anon.get("Location", "").startswith(LOGIN)
    elif spec.access == "logout":
        assert anon.status_code == 302 and anon["Location"] == LOGIN
    elif spec.access in ("account", "conversation", "api_key"):
        assert anon.status_code == 302 and anon["Location"].startswith(LOGIN + "?next=")
    elif spec.access == "v1":
        assert anon.status_code == 401 and anon.json()["error"]["code"] == "missing_api_key"
        return  # a session cookie is no key either: tests/api/test_rest_api.py (async client)
    else:  # admin: only its login page opens, for anyone
        if route == "admin/login/":
            assert anon.status_code == 200
        elif route == "admin/logout/":
            assert anon.status_code == 302 and anon["Location"] == "/admin/"
        else:
            assert anon.status_code == 302 and anon["Location"].startswith("/admin/login/?next=")
    assert_no_leak(anon)
    if spec.access == "public":
        return  # the same for everyone (and /readyz is async: no session in this test)

    for client in (other_client, staff_client):
        if spec.access == "admin" and client is staff_client:
            if method == "POST":
                continue  # staff writes in the admin are the admin's business
            answer = call(client, method, path, data)
            assert not answer.get("Location", "").startswith("/admin/login/"), route
            # 403: pages the read-only admin refuses even to staff (add, bare autocomplete)
            assert answer.status_code in (200, 302, 403, 404, 405), (route, answer.status_code)
            if route == "admin/chat/conversation/<path:object_id>/change/":
                assert answer.status_code == 200 and SECRET_TITLE in answer.content.decode()
            continue
        answer = call(client, method, path, data)
        if spec.access in ("conversation", "api_key"):
            assert answer.status_code == 404, (route, answer.status_code)
        elif spec.access == "admin":  # a non-staff person is sent to the admin's login
            if route == "admin/login/":
                assert answer.status_code in (200, 302)
            elif route == "admin/logout/":
                assert answer.status_code == 302 and answer["Location"] == "/admin/"
            else:
                assert answer.status_code == 302, (route, answer.status_code)
                assert answer["Location"].startswith("/admin/login/?next=")
        else:
            assert answer.status_code < 400, (route, answer.status_code)
        assert_no_leak(answer)
        if spec.access in ("conversation", "api_key", "admin"):
            assert snapshot(world) == before, "someone else changed the owner's things"

    if spec.access in ("conversation", "api_key"):
        assert call(owner_client, method, path, data).status_code < 400
