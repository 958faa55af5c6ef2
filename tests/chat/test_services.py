"""Writes: strict message order that does not depend on timestamps, even under concurrency."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import selectors, services
from chat.models import Conversation, Message
from tests import factories


@pytest.mark.django_db
def test_messages_get_consecutive_positions(owner: Any) -> None:
    conv = factories.make_conversation(owner)
    made = [factories.make_message(conv, content=f"m{i}") for i in range(5)]
    assert [m.position for m in made] == [0, 1, 2, 3, 4]
    assert [m.content for m in selectors.message_list(conversation=conv)] == [
        "m0",
        "m1",
        "m2",
        "m3",
        "m4",
    ]


@pytest.mark.django_db
def test_order_ignores_timestamps(owner: Any) -> None:
    conv = factories.make_conversation(owner)
    first = factories.make_message(conv, content="first")
    factories.make_message(conv, content="second")
    # A clock that went backwards must not reorder the conversation.
    Message.objects.filter(pk=first.pk).update(created_at="2099-01-01T00:00:00Z")
    assert [m.content for m in selectors.message_list(conversation=conv)] == ["first", "second"]


@pytest.mark.django_db
def test_append_bumps_last_activity(owner: Any) -> None:
    conv = factories.make_conversation(owner)
    before = conv.updated_at
    factories.make_message(conv)
    conv.refresh_from_db()
    assert conv.updated_at > before


@pytest.mark.django_db
def test_it_rejects_unknown_roles_status_and_feedback(owner: Any) -> None:
    conv = factories.make_conversation(owner)
    with pytest.raises(ValueError):
        services.message_append(conversation=conv, role="wizard", content="x")
    with pytest.raises(ValueError):
        services.message_append(conversation=conv, role="user", content="x", status="done")
    message = factories.make_message(conv)
    with pytest.raises(ValueError):
        services.message_set_feedback(message=message, feedback=2)
    assert Message.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_never_collide(owner: Any) -> None:
    conv = factories.make_conversation(owner)
    errors: list[BaseException] = []
    per_thread = 10

    def worker(n: int) -> None:
        try:
            for i in range(per_thread):
                services.message_append(conversation=conv, role="user", content=f"{n}-{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    positions = list(
        Message.objects.filter(conversation=conv)
        .order_by("position")
        .values_list("position", flat=True)
    )
    assert positions == list(range(4 * per_thread))


@pytest.mark.django_db(transaction=True)
def test_a_turn_and_its_reply_take_adjacent_positions_among_concurrent_appends(owner: Any) -> None:
    """reply_request reserves two positions in one statement: appends racing it from other
    threads never land between a user's turn and the reply that answers it, nor collide."""
    conv = factories.make_conversation(owner)
    errors: list[BaseException] = []
    pairs: list[tuple[int, int]] = []

    def appender(n: int) -> None:
        try:
            for i in range(10):
                services.message_append(conversation=conv, role="user", content=f"{n}-{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    def requester() -> None:
        try:
            for i in range(10):
                turn, reply = services.reply_request(conversation=conv, content=f"q{i}")
                pairs.append((turn.position, reply.position))
                Message.objects.filter(pk=reply.pk).update(status=Message.Status.COMPLETE)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=appender, args=(n,)) for n in range(2)]
    threads.append(threading.Thread(target=requester))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    saved = Message.objects.filter(conversation=conv).order_by("position")
    assert list(saved.values_list("position", flat=True)) == list(range(40))
    assert len(pairs) == 10 and all(reply == turn + 1 for turn, reply in pairs)
    by_position = dict(saved.values_list("position", "content"))
    assert [by_position[turn] for turn, _ in pairs] == [f"q{i}" for i in range(10)]


@pytest.mark.django_db
def test_a_follow_up_turn_starts_in_nine_statements(owner: Any) -> None:
    """On its reply's time to first token: lock, busy check, the owner's limits (lock + count),
    two positions, both messages, the context (+ the transaction's own two). It was 17: a
    savepoint pair, an UPDATE and a SELECT for each message's position, one INSERT each."""
    conv, _, first = services.conversation_start(owner=owner, content="hi", model_name="m")
    Message.objects.filter(pk=first.pk).update(status=Message.Status.COMPLETE, content="hello")
    with CaptureQueriesContext(connection) as queries:
        turn, reply = services.reply_request(conversation=conv, content="again", model_name="m")
        turns = selectors.context_turns(message=reply, max_chars=64_000)
    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) <= 9, "\n".join(statements)
    assert turns == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"},
    ]
    assert (turn.position, reply.position) == (2, 3)
    conv.refresh_from_db()
    assert conv.next_position == 4


@pytest.mark.django_db
def test_appending_to_a_deleted_conversation_saves_nothing(owner: Any) -> None:
    conv = factories.make_conversation(owner)
    gone = factories.make_conversation(owner)
    Conversation.objects.filter(pk=gone.pk).delete()  # in another tab, say
    with pytest.raises(Conversation.DoesNotExist):
        services.message_append(conversation=gone, role="user", content="anyone there?")
    with pytest.raises(Conversation.DoesNotExist):
        services.reply_request(conversation=gone, content="anyone there?")
    assert Message.objects.count() == 0
    services.message_append(conversation=conv, role="user", content="still here")
    assert Message.objects.count() == 1


@pytest.mark.django_db
def test_selectors_scope_to_the_owner(owner: Any, other_user: Any) -> None:
    conv = factories.make_conversation(owner)
    assert selectors.conversation_get(user=owner, conversation_id=conv.pk) == conv
    assert selectors.conversation_get(user=other_user, conversation_id=conv.pk) is None
    assert selectors.conversation_get(user=owner, conversation_id="junk") is None
    assert selectors.conversation_get(user=owner, conversation_id=None) is None
    assert list(selectors.conversation_list(user=other_user)) == []


def test_the_suite_uses_postgresql_when_it_answers() -> None:
    from tests import services as test_services

    if not test_services.postgres_available():
        test_services.require("PostgreSQL", False)
    assert connection.vendor == "postgresql"


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("Tell me about nebulae", "Tell me about nebulae"),
        ("  many   spaces\nand lines  ", "many spaces and lines"),
        ("# Heading with **bold** and `code`", "Heading with bold and code"),
        ("See [the docs](https://example.com) please", "See the docs please"),
        ("Fix this:\n```python\nprint('x')\n```\nthanks", "Fix this: thanks"),
        ("```\nonly code\n```", "``` only code ```"),
        ("word " * 30, "word word word word word word word word word word word word…"),
        ("x" * 100, "x" * 60 + "…"),
    ],
)
def test_titles_are_short_and_plain(text: str, title: str) -> None:
    assert services.make_title(text) == title


@pytest.mark.django_db
def test_a_conversation_is_titled_from_its_first_turn_in_two_statements(
    owner: Any, other_user: Any
) -> None:
    """After each completed reply (the embedded server's one database thread runs it): one
    read, one guarded write; the owner's id comes with it, for announcing the title."""
    conv, _, reply = services.conversation_start(
        owner=owner, content="Tell me about **nebulae**", model_name="m"
    )
    services.message_append(conversation=conv, role="user", content="and stars?")
    with CaptureQueriesContext(connection) as queries:
        titled = services.conversation_autotitle(conversation_id=conv.pk)
    assert titled == ("Tell me about nebulae", owner.pk)
    assert len(queries.captured_queries) == 2, [q["sql"] for q in queries.captured_queries]
    conv.refresh_from_db()
    assert conv.title == "Tell me about nebulae"
    # Titled already (by this or by its owner): left alone, nothing announced.
    assert services.conversation_autotitle(conversation_id=conv.pk) is None
    renamed = factories.make_conversation(other_user)
    factories.make_message(renamed, content="first words")
    Conversation.objects.filter(pk=renamed.pk).update(title="Mine")
    assert services.conversation_autotitle(conversation_id=renamed.pk) is None
    assert Conversation.objects.get(pk=renamed.pk).title == "Mine"
    # A conversation that keeps no text, one without a user turn, one that is gone: no title.
    secret = factories.make_conversation(owner, retain_text=False)
    factories.make_message(secret, content="private words")
    empty = factories.make_conversation(owner)
    assert services.conversation_autotitle(conversation_id=secret.pk) is None
    assert services.conversation_autotitle(conversation_id=empty.pk) is None
    assert Conversation.objects.get(pk=secret.pk).title == ""
    Conversation.objects.filter(pk=empty.pk).delete()
    assert services.conversation_autotitle(conversation_id=empty.pk) is None
