"""Preference data: decided votes as TRL preference pairs, thumbs as KTO lines; what is never
exported; ``manage.py export_preferences``, the Vote admin's action and the opt-out in Settings."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from chat.models import Conversation, Message, Preferences, Vote
from tests import factories

pytestmark = pytest.mark.django_db


def _compare(
    conversation: Conversation,
    question: str,
    replies: dict[str, str],
    *,
    outcome: str = "win",
    winner: str | None = None,
    arena: bool = False,
) -> tuple[Vote, dict[str, Message]]:
    """A question, one reply per model in one group, and a vote on the group."""
    factories.make_message(conversation, content=question)
    group = uuid.uuid4()
    made = {}
    for slot, (model, text) in enumerate(replies.items()):
        reply = factories.make_message(
            conversation, role="assistant", content=text, model_name=model
        )
        Message.objects.filter(pk=reply.pk).update(group=group, slot=slot)
        made[model] = reply
    if outcome == "win" and winner is None:
        winner = next(iter(replies))
    vote = Vote.objects.create(
        conversation=conversation,
        group=group,
        voter=conversation.owner,
        outcome=outcome,
        winner=made[winner] if winner else None,
        arena=arena,
    )
    # The thread goes on after the vote, with the winner's answer as the current one.
    Message.objects.filter(group=group).exclude(pk=vote.winner_id).update(superseded=True)
    return vote, made


def _export(tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    out = tmp_path / "out.jsonl"
    err = io.StringIO()
    call_command("export_preferences", "--out", str(out), *args, stderr=err)
    text = out.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n")
    lines = [json.loads(line) for line in text.splitlines()]  # each line stands alone
    assert f"Wrote {len(lines)} " in err.getvalue()
    return lines


@pytest.fixture
def votes(owner: Any) -> dict[str, Any]:
    chat = factories.make_conversation(owner, title="Nebulae", system_prompt="Be brief.")
    first, first_replies = _compare(
        chat,
        "What is a nebula?",
        {"alpha": "A cloud of gas — 星云.", "beta": "A galaxy."},
        winner="alpha",
        arena=True,
    )
    second, second_replies = _compare(
        chat,
        "And a quasar?",
        {"alpha": "A star.", "beta": "An active galactic nucleus.", "gamma": "A planet."},
        winner="beta",
    )
    tie, _ = _compare(chat, "Pick one", {"alpha": "one", "beta": "two"}, outcome="tie")
    return {
        "chat": chat,
        "first": first,
        "first_replies": first_replies,
        "second": second,
        "second_replies": second_replies,
        "tie": tie,
    }


def test_the_export_loads_back_line_by_line(tmp_path: Path, votes: Any) -> None:
    lines = _export(tmp_path)
    assert len(lines) == 3  # 1 from the two-way win, 2 from the three-way one, none from a tie
    first = lines[0]
    replies = votes["first_replies"]
    assert first == {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is a nebula?"},
        ],
        "chosen": [{"role": "assistant", "content": "A cloud of gas — 星云."}],
        "rejected": [{"role": "assistant", "content": "A galaxy."}],
        "chosen_model": "alpha",
        "rejected_model": "beta",
        "chosen_id": str(replies["alpha"].pk),
        "rejected_id": str(replies["beta"].pk),
        "vote_id": str(votes["first"].pk),
        "arena": True,
    }
    # The later turn's prompt holds the thread so far, with the winner as the answer given.
    second = [line for line in lines if line["vote_id"] == str(votes["second"].pk)]
    assert [line["rejected_model"] for line in second] == ["alpha", "gamma"]
    assert {line["chosen_model"] for line in second} == {"beta"}
    assert second[0]["prompt"][-3:] == [
        {"role": "user", "content": "What is a nebula?"},
        {"role": "assistant", "content": "A cloud of gas — 星云."},
        {"role": "user", "content": "And a quasar?"},
    ]
    assert second[0]["arena"] is False


def test_the_file_is_utf8_text_not_escapes(tmp_path: Path, votes: Any) -> None:
    _export(tmp_path)
    assert "星云" in (tmp_path / "out.jsonl").read_text(encoding="utf-8")


def test_opted_out_people_are_left_out(tmp_path: Path, votes: Any, owner: Any) -> None:
    other = factories.make_user("other-voter")
    theirs = factories.make_conversation(other)
    _compare(theirs, "hi", {"alpha": "hello", "beta": "hey"})
    assert len(_export(tmp_path)) == 4
    Preferences.objects.create(user=owner, training_opt_out=True)
    lines = _export(tmp_path)
    assert len(lines) == 1 and lines[0]["prompt"][-1]["content"] == "hi"


def test_text_that_was_not_kept_is_never_exported(tmp_path: Path, owner: Any) -> None:
    secret = factories.make_conversation(owner, retain_text=False)
    _compare(secret, "my password is hunter2", {"alpha": "ok", "beta": "noted"})
    empty = factories.make_conversation(owner)
    _compare(empty, "question", {"alpha": "", "beta": "answer"})  # an empty winner
    assert _export(tmp_path) == []


def test_failed_and_empty_losers_are_skipped(tmp_path: Path, owner: Any) -> None:
    chat = factories.make_conversation(owner)
    _, replies = _compare(chat, "q", {"alpha": "good", "beta": "partial", "gamma": ""})
    Message.objects.filter(pk=replies["beta"].pk).update(status="failed")
    assert _export(tmp_path) == []


def test_models_keeps_pairs_of_the_listed_models(tmp_path: Path, votes: Any) -> None:
    lines = _export(tmp_path, "--models", "alpha,beta")
    assert [(line["chosen_model"], line["rejected_model"]) for line in lines] == [
        ("alpha", "beta"),
        ("beta", "alpha"),
    ]
    assert _export(tmp_path, "--models", " gamma , alpha") == []


def test_since_keeps_recent_votes(tmp_path: Path, votes: Any) -> None:
    Vote.objects.filter(pk=votes["first"].pk).update(created_at=timezone.now() - timedelta(days=10))
    since = (timezone.localdate() - timedelta(days=1)).isoformat()
    lines = _export(tmp_path, "--since", since)
    assert {line["vote_id"] for line in lines} == {str(votes["second"].pk)}
    with pytest.raises(CommandError, match="YYYY-MM-DD"):
        call_command("export_preferences", "--out", str(tmp_path / "x"), "--since", "May 1st")


def test_kto_lines_are_the_thumbs_outside_compare(tmp_path: Path, votes: Any, owner: Any) -> None:
    chat = factories.make_conversation(owner)
    factories.make_message(chat, content="Tell me a joke")
    up = factories.make_message(
        chat, role="assistant", content="A joke.", model_name="alpha", feedback=1
    )
    factories.make_message(chat, content="Another")
    down = factories.make_message(
        chat, role="assistant", content="No.", model_name="beta", feedback=-1
    )
    factories.make_message(chat, content="And?")
    factories.make_message(chat, role="assistant", content="Unrated.", model_name="alpha")
    Message.objects.filter(group__isnull=False).update(feedback=1)  # compare replies: not KTO
    lines = _export(tmp_path, "--kto")
    assert lines == [
        {
            "prompt": [{"role": "user", "content": "Tell me a joke"}],
            "completion": [{"role": "assistant", "content": "A joke."}],
            "label": True,
            "model": "alpha",
            "id": str(up.pk),
        },
        {
            "prompt": [
                {"role": "user", "content": "Tell me a joke"},
                {"role": "assistant", "content": "A joke."},
                {"role": "user", "content": "Another"},
            ],
            "completion": [{"role": "assistant", "content": "No."}],
            "label": False,
            "model": "beta",
            "id": str(down.pk),
        },
    ]
    assert [line["model"] for line in _export(tmp_path, "--kto", "--models", "beta")] == ["beta"]
    Preferences.objects.create(user=owner, training_opt_out=True)
    assert _export(tmp_path, "--kto") == []


def test_out_dash_writes_to_stdout(votes: Any) -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command("export_preferences", "--out", "-", stdout=out, stderr=err)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 3 and "Wrote 3 preference lines to stdout." in err.getvalue()


def test_the_admin_action_streams_the_selected_votes(staff_client: Client, votes: Any) -> None:
    response = staff_client.post(
        "/admin/chat/vote/",
        {
            "action": "export_preferences",
            "_selected_action": [str(votes["second"].pk), str(votes["tie"].pk)],
        },
    )
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "application/jsonl; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="preferences-')

    async def body() -> bytes:
        return b"".join([part async for part in response.streaming_content])

    lines = [json.loads(line) for line in async_to_sync(body)().decode().splitlines()]
    assert [line["rejected_model"] for line in lines] == ["alpha", "gamma"]
    assert {line["vote_id"] for line in lines} == {str(votes["second"].pk)}


def test_votes_are_read_only_in_the_admin_but_a_spam_vote_can_go(
    staff_client: Client, votes: Any
) -> None:
    page = staff_client.get("/admin/chat/vote/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Export selected votes as preference data (JSONL)" in html
    assert "delete_selected" in html  # a superuser's: staff without the permission lack it
    assert staff_client.get("/admin/chat/vote/add/").status_code == 403
    vote = Vote.objects.first()
    change = staff_client.get(f"/admin/chat/vote/{vote.pk}/change/").content.decode()
    assert 'name="outcome"' not in change  # shown, never edited
    staff_client.post(f"/admin/chat/vote/{vote.pk}/delete/", {"post": "yes"})
    assert not Vote.objects.filter(pk=vote.pk).exists()


def test_a_person_opts_out_in_settings(owner_client: Client, owner: Any) -> None:
    page = owner_client.get("/settings/").content.decode()
    assert 'name="training_opt_out"' in page
    response = owner_client.post("/settings/", {"theme": "system", "training_opt_out": "on"})
    assert response.status_code == 302
    assert Preferences.objects.get(user=owner).training_opt_out is True
    assert owner_client.get("/settings/").context["form"]["training_opt_out"].value() is True
    owner_client.post("/settings/", {"theme": "system"})
    assert Preferences.objects.get(user=owner).training_opt_out is False
