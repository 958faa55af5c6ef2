"""Settings → Delete my account: the password again; a wrong one keeps everything (and counts
toward the log-in throttle); the right one leaves no row of any installed app pointing at the
person, their conversations or their messages, no session of theirs, no working API key, and
closes their open sockets with 4403, while everyone else's data and sockets stay as they were."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.apps import apps
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.models import Session
from django.db import connections
from django.test import AsyncClient, Client

from api.models import ApiKey
from chat import services
from chat.consumers import CLOSE_ACCOUNT_DELETED
from chat.models import Conversation, Message, Preferences, Vote
from tests import factories
from tests.chat.wsclient import ORIGIN, communicator, connect, session_cookie
from tests.portability.test_export import build_history

pytestmark = pytest.mark.django_db

PAGE = "/settings/delete-account/"
LOGIN = "/accounts/login/"


def post(client: Client, password: str = factories.PASSWORD, confirm: bool = True) -> Any:
    data = {"password": password}
    if confirm:
        data["confirm"] = "on"
    return client.post(PAGE, data)


def build_world(owner: Any, other: Any) -> dict[str, Any]:
    """Everything a person can have, for both: conversations with versions, votes, compare
    and arena groups, API keys, preferences, a share link, an admin log line, sessions."""
    build_history(owner)
    services.preferences_update(user=owner, theme="dark", system_prompt="mine")
    factories.make_api_key(owner, "owner's script")
    conversation = Conversation.objects.filter(owner=owner).first()
    LogEntry.objects.create(
        user=owner,
        content_type=ContentType.objects.get_for_model(Conversation),
        object_id=str(conversation.pk),
        object_repr="x",
        action_flag=ADDITION,
    )
    other_conversation = factories.make_conversation(other, title="Other's", turns=2)
    services.preferences_update(user=other, theme="light")
    factories.make_api_key(other, "other's script")
    try:
        share_link = apps.get_model("sharing", "ShareLink")
    except LookupError:  # pragma: no cover - the sharing app's model is part of this issue
        share_link = None
    if share_link is not None:
        share_link.objects.create(conversation=conversation, owner=owner, snapshot={"t": 1})
        share_link.objects.create(conversation=other_conversation, owner=other, snapshot={})
    return {"share_link": share_link}


def owned_by(user: Any) -> dict[str, Any]:
    """The ids of what points at ``user`` through the chat app (for the walk afterwards)."""
    conversations = set(Conversation.objects.filter(owner=user).values_list("pk", flat=True))
    messages = set(
        Message.objects.filter(conversation__in=conversations).values_list("pk", flat=True)
    )
    return {"user": {user.pk}, "conversations": conversations, "messages": messages}


def rows_of(user: Any) -> dict[str, Any]:
    """A snapshot of one person's data, to show it unchanged."""
    return {
        "conversations": list(Conversation.objects.filter(owner=user).values().order_by("pk")),
        "messages": list(Message.objects.filter(conversation__owner=user).values().order_by("pk")),
        "keys": list(ApiKey.objects.filter(user=user).values().order_by("pk")),
        "preferences": list(Preferences.objects.filter(user=user).values()),
        "votes": list(Vote.objects.filter(voter=user).values().order_by("pk")),
        "sessions": sessions_of(user.pk),
    }


def sessions_of(user_id: Any) -> list[str]:
    return [
        s.session_key
        for s in Session.objects.all()
        if str(s.get_decoded().get(SESSION_KEY)) == str(user_id)
    ]


def references(ids: dict[str, set[Any]]) -> list[str]:
    """Every foreign key of every model of every installed app (many-to-many tables too) that
    still points at one of ``ids``."""
    targets = {
        get_user_model(): ids["user"],
        Conversation: ids["conversations"],
        Message: ids["messages"],
    }
    found = []
    for model in apps.get_models(include_auto_created=True):
        for field in model._meta.concrete_fields:
            wanted = targets.get(field.related_model) if field.is_relation else None
            if wanted and model._default_manager.filter(**{f"{field.attname}__in": wanted}):
                found.append(f"{model._meta.label}.{field.name}")
    return found


def test_the_page_asks_for_the_password(owner_client: Client) -> None:
    body = owner_client.get(PAGE).content.decode()
    assert 'type="password"' in body and 'name="confirm"' in body
    assert "<strong>owner</strong>" in body


def test_a_wrong_password_deletes_nothing(
    owner: Any, other_user: Any, owner_client: Client
) -> None:
    build_world(owner, other_user)
    before = rows_of(owner)
    response = post(owner_client, "not my password")
    assert response.status_code == 200
    assert "That is not your password. Nothing was deleted." in response.content.decode()
    assert rows_of(owner) == before
    assert owner_client.get("/").status_code == 200  # still logged in


def test_the_box_must_be_ticked(owner: Any, other_user: Any, owner_client: Client) -> None:
    build_world(owner, other_user)
    before = rows_of(owner)
    response = post(owner_client, confirm=False)
    assert "Tick the box to confirm." in response.content.decode()
    assert rows_of(owner) == before


def test_password_guesses_are_throttled_like_log_ins(
    owner: Any, owner_client: Client, settings: Any
) -> None:
    settings.STELLARCHAT_LOGIN_FAILURE_LIMIT = 3
    for _ in range(3):
        assert post(owner_client, "guess").status_code == 200
    locked = post(owner_client)  # even the right password waits
    assert locked.status_code == 429 and int(locked["Retry-After"]) > 0
    assert "deleting it is paused" in locked.content.decode()
    assert get_user_model().objects.filter(pk=owner.pk).exists()
    # The same counters as the log-in page: guessing here locks logging in too.
    login = Client().post(LOGIN, {"username": "owner", "password": factories.PASSWORD})
    assert login.status_code == 429


def test_the_right_password_deletes_everything_of_theirs_and_nothing_else(
    owner: Any, other_user: Any, owner_client: Client, other_client: Client
) -> None:
    world = build_world(owner, other_user)
    second_tab = Client()
    second_tab.force_login(owner)  # another browser: another session
    ids = owned_by(owner)
    assert references(ids) and len(sessions_of(owner.pk)) == 2  # the walk finds them before
    others = rows_of(other_user)

    response = post(owner_client)
    assert response.status_code == 302 and response["Location"] == LOGIN
    assert "were deleted" in owner_client.get(LOGIN).content.decode()

    assert not get_user_model().objects.filter(pk=owner.pk).exists()
    assert references(ids) == []
    assert sessions_of(owner.pk) == []
    assert rows_of(other_user) == others
    if world["share_link"] is not None:
        assert world["share_link"].objects.filter(owner=other_user).count() == 1
    for client in (owner_client, second_tab):  # logged out everywhere
        assert client.get("/")["Location"].startswith(LOGIN)
    assert other_client.get("/").status_code == 200


# --- open sockets and keys --------------------------------------------------------------------


@pytest.fixture
def asgi_loaded() -> None:
    import stellarchat.asgi  # noqa: F401 - its django.setup() re-applies LOGGING: do it first


def key_communicator(plain: str) -> WebsocketCommunicator:
    from stellarchat.asgi import application

    headers = [(b"host", b"localhost"), (b"authorization", f"Bearer {plain}".encode())]
    return WebsocketCommunicator(application, "/ws/chat/", headers=headers)


async def closed_with(comm: WebsocketCommunicator) -> int:
    """The close code the server sent next (skipping frames still in flight)."""
    while True:
        output = await comm.receive_output(timeout=3)
        if output["type"] == "websocket.close":
            return int(output.get("code", 1000))
        assert output["type"] == "websocket.send", output


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
@pytest.mark.usefixtures("asgi_loaded", "fresh_layer")
async def test_their_sockets_close_with_4403_and_their_key_stops_working() -> None:
    owner, _, plain = await database_sync_to_async(factories.user_with_key)("leaver")
    other, _, other_plain = await database_sync_to_async(factories.user_with_key)("stayer")
    tab = await connect(owner)
    program = key_communicator(plain)
    assert (await program.connect())[0]
    cookie = await database_sync_to_async(session_cookie)(owner)
    others_tab = await connect(other)

    client = AsyncClient()
    await client.aforce_login(owner)
    response = await client.post(PAGE, {"password": factories.PASSWORD, "confirm": "on"})
    assert response.status_code == 302

    assert await closed_with(tab.comm) == CLOSE_ACCOUNT_DELETED
    assert await closed_with(program) == CLOSE_ACCOUNT_DELETED
    models = await AsyncClient().get("/v1/models", headers={"Authorization": f"Bearer {plain}"})
    assert models.status_code == 401
    again = communicator(cookie, origin=ORIGIN)  # the old session cookie opens nothing
    assert not (await again.connect())[0]

    # Someone else's socket and key go on working.
    assert await others_tab.comm.receive_nothing(timeout=0.2)
    await others_tab.send({"type": "chat.send", "conversation": None, "content": "still here"})
    assert (await others_tab.until("stream.end"))[-1]["finish_reason"] == "stop"
    await others_tab.close()
    ok = await AsyncClient().get("/v1/models", headers={"Authorization": f"Bearer {other_plain}"})
    assert ok.status_code == 200
    await sync_to_async(connections.close_all)()  # the view's thread's connection (see export)
