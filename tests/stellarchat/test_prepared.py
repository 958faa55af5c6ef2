"""Reads compiled once (stellarchat/prepared.py) give what the ORM's own query gives."""

from __future__ import annotations

import uuid
from datetime import timedelta
from importlib import import_module

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.db.models import Q
from django.utils import timezone

from chat import selectors
from chat.models import Conversation, Message
from stellarchat.prepared import Prepared
from tests.factories import make_conversation, make_message, make_user

pytestmark = pytest.mark.django_db


def test_a_conversation_read_equals_the_orms_and_only_for_its_owner() -> None:
    owner, other = make_user(), make_user()
    conversation = make_conversation(owner, title="<b>x</b>", options={"temperature": 0.5})
    make_conversation(other)
    got = selectors.conversation_get(user=owner, conversation_id=str(conversation.pk))
    orm = Conversation.objects.get(pk=conversation.pk)
    assert got is not None
    fields = [f.attname for f in Conversation._meta.concrete_fields]
    assert {f: getattr(got, f) for f in fields} == {f: getattr(orm, f) for f in fields}
    assert got.options == {"temperature": 0.5}  # the JSON field's converter ran
    assert selectors.conversation_get(user=other, conversation_id=conversation.pk) is None
    assert selectors.conversation_get(user=owner, conversation_id=uuid.uuid4()) is None
    assert selectors.conversation_get(user=owner, conversation_id="not-a-uuid") is None


def test_the_streaming_replies_are_those_and_in_order() -> None:
    owner = make_user()
    conversation, elsewhere = make_conversation(owner), make_conversation(owner)
    make_message(conversation, content="question")
    a = make_message(conversation, role="assistant", content="", status=Message.Status.STREAMING)
    make_message(conversation, role="assistant", content="done")
    b = make_message(conversation, role="assistant", content="", status=Message.Status.STREAMING)
    e = make_message(elsewhere, role="assistant", content="", status=Message.Status.STREAMING)
    got = selectors.streaming_messages(conversation_id=conversation.pk)
    assert [m.pk for m in got] == [a.pk, b.pk]
    assert [m.pk for m in selectors.streaming_messages(conversation_id=str(elsewhere.pk))] == [e.pk]
    assert selectors.streaming_messages(conversation_id=uuid.uuid4()) == []


def test_a_session_loads_until_it_expires() -> None:
    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    store = store_class()
    store["k"] = "v"
    store.create()
    key = store.session_key
    assert store_class(session_key=key).load() == {"k": "v"}
    Session.objects.filter(session_key=key).update(expire_date=timezone.now() - timedelta(1))
    expired = store_class(session_key=key)
    assert expired.load() == {}
    assert expired.session_key is None  # as Django's own store: a new key when it saves
    assert store_class(session_key="a" * 32).load() == {}


def test_a_filter_it_cannot_place_is_refused_at_its_first_call() -> None:
    twice = Prepared(
        Conversation,
        lambda pk: Conversation.objects.filter(Q(pk=pk) | Q(pk=pk)),
        pk=Conversation._meta.pk,
    )
    with pytest.raises(ValueError, match="found 2 times"):
        twice(pk=uuid.uuid4())
