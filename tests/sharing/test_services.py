"""Share links' writes and the snapshot: what a link holds, and when it stops opening."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest

from chat import services as chat_services
from chat.models import Conversation, Message
from sharing import selectors, services
from sharing.models import ShareLink
from tests import factories

pytestmark = pytest.mark.django_db


def test_it_makes_a_link_with_256_random_bits(conversation: Any) -> None:
    link, created = services.share_link_create(conversation=conversation)
    assert created and link.owner_id == conversation.owner_id
    raw = base64.urlsafe_b64decode(link.token + "=" * (-len(link.token) % 4))
    assert len(raw) * 8 >= 256  # the contract asks for at least 128
    other, _ = services.share_link_create(
        conversation=factories.make_conversation(conversation.owner)
    )
    assert other.token != link.token


def test_sharing_again_gives_the_same_link_unchanged(conversation: Any) -> None:
    link, _ = services.share_link_create(conversation=conversation)
    factories.make_message(conversation, content="said after sharing")
    again, created = services.share_link_create(conversation=conversation, show_name=True)
    assert not created and again.pk == link.pk and again.token == link.token
    assert not again.show_name
    assert "said after sharing" not in str(again.snapshot)
    assert ShareLink.objects.filter(conversation=conversation).count() == 1


def test_the_snapshot_is_the_current_thread_as_it_is_now(owner: Any) -> None:
    conversation = factories.make_conversation(owner, title="Stars", model_name="alpha")
    chat_services.message_append(conversation=conversation, role="user", content="first question")
    chat_services.message_append(
        conversation=conversation, role="assistant", content="old answer", model_name="alpha"
    )
    chat_services.reply_regenerate(conversation=conversation, model_name="alpha")
    reply = Message.objects.get(conversation=conversation, status="streaming")
    chat_services.reply_finish(message_id=reply.pk, content="new answer", status="complete")
    chat_services.message_append(conversation=conversation, role="user", content="second")
    chat_services.message_append(
        conversation=conversation, role="assistant", content="half of it", status="cancelled"
    )
    chat_services.message_append(conversation=conversation, role="user", content="third")
    chat_services.message_append(
        conversation=conversation, role="assistant", content="boom", status="failed"
    )
    chat_services.message_append(conversation=conversation, role="system", content="be terse")
    chat_services.message_append(
        conversation=conversation, role="assistant", content="", status="streaming"
    )

    link, _ = services.share_link_create(conversation=conversation)
    shot = link.snapshot
    assert shot["title"] == "Stars"
    rows = [(m["role"], m["content"], m["status"]) for m in shot["messages"]]
    assert rows == [
        ("user", "first question", "complete"),
        ("assistant", "new answer", "complete"),  # the superseded "old answer" is not shared
        ("user", "second", "complete"),
        ("assistant", "half of it", "cancelled"),  # stopped: kept, with its text
        ("user", "third", "complete"),  # the failed reply, system turn, streaming reply: out
    ]
    answer = shot["messages"][1]
    assert answer["model"] == "alpha" and answer["model_label"] == "Alpha Label"
    assert answer["letter"] == "" and answer["created_at"].startswith("20")


def test_a_blind_arena_reply_is_named_only_by_its_slot(owner: Any) -> None:
    conversation = factories.make_conversation(owner)
    chat_services.reply_compare(
        conversation=conversation,
        content="which is better",
        model_names=["beta", "alpha"],
        blind=True,
    )
    for reply in Message.objects.filter(conversation=conversation, role="assistant"):
        chat_services.reply_finish(
            message_id=reply.pk, content=f"reply {reply.slot}", status="complete"
        )
    link, _ = services.share_link_create(conversation=conversation)
    text = str(link.snapshot)
    for secret in ("alpha", "Alpha Label", "beta", "Beta Label"):
        assert secret not in text  # not hidden by the page: not there at all
    letters = [m["letter"] for m in link.snapshot["messages"] if m["role"] == "assistant"]
    assert letters == ["A", "B"]

    group = Message.objects.filter(conversation=conversation, slot=0).get().group
    winner = Message.objects.get(conversation=conversation, slot=1)
    chat_services.vote_record(
        conversation=conversation, group=group, winner=str(winner.pk), voter=owner
    )
    services.share_link_update(link=link, show_name=False)
    named = [m for m in link.snapshot["messages"] if m["role"] == "assistant"]
    assert [(m["model"], m["model_label"], m["letter"]) for m in named] == [
        ("alpha", "Alpha Label", "")  # the vote revealed it; the loser left the thread
    ]


def test_update_puts_the_newest_messages_in_and_keeps_the_address(conversation: Any) -> None:
    link, _ = services.share_link_create(conversation=conversation)
    token, created = link.token, link.created_at
    factories.make_message(conversation, content="a newer question")
    chat_services.conversation_rename(conversation=conversation, title="Renamed")
    services.share_link_update(link=link, show_name=True)
    link.refresh_from_db()
    assert link.token == token and link.created_at == created and link.updated_at > created
    assert link.show_name and link.snapshot["title"] == "Renamed"
    assert link.snapshot["messages"][-1]["content"] == "a newer question"


def test_revoking_deletes_the_link(conversation: Any) -> None:
    link, _ = services.share_link_create(conversation=conversation)
    services.share_link_revoke(link=link)
    assert selectors.share_link_by_token(token=link.token) is None
    again, created = services.share_link_create(conversation=conversation)
    assert created and again.token != link.token  # a new Share is a new address


def test_deleting_the_conversation_or_the_owner_revokes(owner: Any) -> None:
    first = factories.make_conversation(owner, turns=1)
    second = factories.make_conversation(owner, turns=1)
    gone, _ = services.share_link_create(conversation=first)
    kept, _ = services.share_link_create(conversation=second)
    chat_services.conversation_delete(conversation=first)
    assert not ShareLink.objects.filter(pk=gone.pk).exists()
    assert ShareLink.objects.filter(pk=kept.pk).exists()
    owner.delete()
    assert not ShareLink.objects.exists()


def test_nothing_new_is_shared_when_sharing_is_off(conversation: Any, settings: Any) -> None:
    link, _ = services.share_link_create(conversation=conversation)
    settings.STELLARCHAT_SHARING = "off"
    with pytest.raises(services.SharingOff):
        services.share_link_create(conversation=factories.make_conversation(conversation.owner))
    with pytest.raises(services.SharingOff):
        services.share_link_update(link=link, show_name=True)
    services.share_link_revoke(link=link)  # taking a link back is always allowed


def test_continuing_copies_the_messages_into_the_viewer_s_account(
    owner: Any, other_user: Any
) -> None:
    conversation = factories.make_conversation(owner, title="Plans", turns=2)
    last = Message.objects.filter(conversation=conversation, role="assistant").last()
    Message.objects.filter(pk=last.pk).update(model_name="alpha", status="cancelled")
    link, _ = services.share_link_create(conversation=conversation)

    copy = services.share_link_continue(link=link, viewer=other_user)
    assert copy.owner == other_user and copy.pk != conversation.pk
    assert copy.title == "Plans" and copy.source == Conversation.Source.CHAT
    assert copy.model_name == "alpha"
    rows = list(copy.messages.order_by("position").values_list("position", "role", "content"))
    assert rows == [
        (0, "user", "question 0"),
        (1, "assistant", "answer 0"),
        (2, "user", "question 1"),
        (3, "assistant", "answer 1"),
    ]
    assert copy.messages.get(position=3).status == "cancelled"
    copy.refresh_from_db()
    assert copy.next_position == 4  # the next turn goes after the copied ones
    assert owner.conversations.count() == 1  # nothing lands in the owner's account


def test_a_copy_gets_the_default_model_when_the_viewer_may_not_use_the_shared_one(
    owner: Any, other_user: Any
) -> None:
    conversation = factories.make_conversation(owner)
    chat_services.message_append(conversation=conversation, role="user", content="q")
    chat_services.message_append(
        conversation=conversation, role="assistant", content="a", model_name="beta"
    )
    link, _ = services.share_link_create(conversation=conversation)
    assert link.snapshot["messages"][-1]["model"] == "beta"
    assert services.share_link_continue(link=link, viewer=other_user).model_name == "alpha"


def test_the_token_lookup_refuses_hostile_strings_without_a_query(
    conversation: Any, django_assert_num_queries: Any
) -> None:
    services.share_link_create(conversation=conversation)
    with django_assert_num_queries(0):
        for token in ("", "x" * 65, "a\x00b", "a\nb", "x" * 100_000):
            assert selectors.share_link_by_token(token=token) is None
    with django_assert_num_queries(1):
        assert selectors.share_link_by_token(token=str(uuid.uuid4())) is None
