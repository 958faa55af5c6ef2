"""Shared fixtures: the three people of every isolation test — owner, other user, anonymous —
and a staff reviewer."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_asyncio
from channels.layers import get_channel_layer
from django.test import Client

from tests import factories


@pytest.fixture
def owner(db: None) -> Any:
    return factories.make_user("owner")


@pytest.fixture
def other_user(db: None) -> Any:
    return factories.make_user("other")


@pytest.fixture
def staff_user(db: None) -> Any:
    return factories.make_user("reviewer", is_staff=True, is_superuser=True)


@pytest.fixture
def owner_client(owner: Any) -> Client:
    client = Client()
    client.force_login(owner)
    return client


@pytest.fixture
def other_client(other_user: Any) -> Client:
    client = Client()
    client.force_login(other_user)
    return client


@pytest.fixture
def staff_client(staff_user: Any) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.fixture
def anon_client() -> Client:
    return Client()


@pytest.fixture
def conversation(owner: Any) -> Any:
    return factories.make_conversation(owner, title="Owner's chat", turns=2)


@pytest_asyncio.fixture
async def fresh_layer(settings: Any) -> Any:
    """The deterministic test backend, without delays, on an empty channel layer (for tests
    that drive the chat socket or the API in-process)."""
    settings.STELLARCHAT_BACKEND = "test"
    settings.STELLARCHAT_TEST_BACKEND_DELAY_MS = 0
    await get_channel_layer().flush()
    yield
    await get_channel_layer().flush()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: Any) -> Any:
    """pytest-django's test databases, dropped only after the reading threads
    (stellarchat/dbreads.py) have closed their connections to them."""
    from stellarchat import dbreads

    yield
    dbreads.close_connections()


@pytest.fixture(autouse=True)
def _forget_failed_logins() -> None:
    """Log-in throttling counts failures per client address in process memory: every test
    starts with none, whatever earlier tests posted (tests all come from 127.0.0.1)."""
    from chat import socket_limits, throttle

    throttle.reset()
    socket_limits.reset()
