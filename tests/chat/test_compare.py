"""Compare and arena, through the real ASGI stack and the embedded worker, with two real local
models (the bundled one and a tiny one built here, each in its own model process): replies
side by side in one group, each what its model says alone to the same turns; the one vote per
group; the winner continuing the conversation; and blindness, checked by searching every frame
and every page the person can load for the models' names and labels before the vote."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import Group
from django.test import Client

from chat.models import Conversation, Message, Vote
from inference.backends.base import Result
from tests import factories
from tests.chat.registry_support import GREEDY, alone, backends_of, use
from tests.chat.wsclient import Socket, connect, reply_text
from tests.inference import tinymodels

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.usefixtures("fresh_layer"),
]

# Names and labels no model writes by chance: the blind test searches for them.
MINI, TINY, ECHO = "m7q2", "t9z4", "e4v6"
SECRETS = (MINI, TINY, "Label-K3W8", "Label-J5X1")


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tiny = tinymodels.build(tmp_path_factory.mktemp("models") / "tiny", "llama")
    text = f"""
        default = "{MINI}"
        arena = ["{MINI}", "{TINY}"]
        [models.{MINI}]
        label = "Label-K3W8"
        backend = "transformers"
        path = "inference/bundled/stellarbyte-mini"
        max_batch = 4
        [models.{TINY}]
        label = "Label-J5X1"
        backend = "transformers"
        path = "{tiny}"
        [models.{ECHO}]
        backend = "test"
        groups = ["research"]
    """
    yield from backends_of(text)


@pytest.fixture(autouse=True)
def registry_file(backends: dict[str, Any], settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    use(backends, settings, monkeypatch)


async def ends(sock: Socket, count: int, timeout: float = 90) -> list[dict[str, Any]]:
    """Frames until ``count`` replies have ended."""
    frames: list[dict[str, Any]] = []
    while sum(f["type"] == "stream.end" for f in frames) < count:
        frames += await sock.until("stream.end", timeout=timeout)
    return frames


async def send(sock: Socket, content: str, conversation: str | None = None, **extra: Any) -> None:
    frame = {"type": "chat.send", "conversation": conversation, "content": content}
    await sock.send({**frame, "options": GREEDY, **extra})


def starts(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((f for f in frames if f["type"] == "stream.start"), key=lambda f: f["slot"])


def created(frames: list[dict[str, Any]]) -> str:
    return next(f for f in frames if f["type"] == "conversation.created")["conversation"]


@database_sync_to_async
def page(user: Any, *paths: str) -> str:
    client = Client()
    client.force_login(user)
    pages = []
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        pages.append(response.content.decode())
    return "\n".join(pages)


@database_sync_to_async
def rows(conversation: str) -> list[Message]:
    return list(Message.objects.filter(conversation_id=conversation).order_by("position"))


async def test_two_models_answer_side_by_side_and_the_vote_picks_what_continues() -> None:
    user = await factories.amake_user("ada")
    sock, other_tab = await connect(user), await connect(user)
    await send(sock, "Hello there", models=[TINY, MINI], client_id="c1")
    frames = await ends(sock, 2)
    conv = created(frames)
    first, second = starts(frames)
    assert first["group"] == second["group"] and (first["slot"], second["slot"]) == (0, 1)
    assert (first["model"], second["model"]) == (TINY, MINI)  # compare is not blind
    turns = [{"role": "user", "content": "Hello there"}]
    texts = {s["model"]: reply_text(frames, s["message"]) for s in (first, second)}
    assert texts == {TINY: alone(TINY, turns), MINI: alone(MINI, turns)}  # neither saw the other

    saved = await rows(conv)
    assert [(m.role, m.group is not None, m.slot) for m in saved] == [
        ("user", False, None),
        ("assistant", True, 0),
        ("assistant", True, 1),
    ]
    listing = await page(user, f"/c/{conv}/")
    assert listing.count('data-vote="') == 4  # A, B, tie, both bad

    group = first["group"]
    await sock.send(
        {"type": "chat.vote", "conversation": conv, "group": group, "winner": second["message"]}
    )
    (revealed,) = [f for f in await sock.until("vote.saved") if f["type"] == "vote.saved"]
    assert revealed["winner"] == second["message"] and revealed["group"] == group
    assert revealed["models"] == {first["message"]: TINY, second["message"]: MINI}
    assert (await other_tab.until("vote.saved"))[-1]["models"] == revealed["models"]

    # one vote per group
    for winner in (first["message"], "tie"):
        await sock.send(
            {"type": "chat.vote", "conversation": conv, "group": group, "winner": winner}
        )
        assert (await sock.recv())["code"] == "already_voted"
    vote = await database_sync_to_async(Vote.objects.get)(group=group)
    assert vote.outcome == "win" and str(vote.winner_id) == second["message"] and not vote.arena

    # the winner continues: the next turn sees it, and not the loser
    await send(sock, "Go on", conv, model=TINY)
    frames = await ends(sock, 1)
    history = [*turns, {"role": "assistant", "content": texts[MINI]}]
    history.append({"role": "user", "content": "Go on"})
    assert reply_text(frames) == alone(TINY, history)
    loser = next(m for m in await rows(conv) if str(m.pk) == first["message"])
    assert loser.superseded and loser.content == texts[TINY]  # kept, as an earlier version
    await sock.close()
    await other_tab.close()


async def test_the_arena_is_blind_until_the_vote() -> None:
    user = await factories.amake_user("bea")
    sock, watcher = await connect(user), await connect(user)
    await send(sock, "Tell me a story", arena=True)
    frames = await ends(sock, 2)
    conv = created(frames)
    a, b = starts(frames)
    assert a["model"] is None and b["model"] is None and a["group"] == b["group"]
    # a second socket that follows the conversation learns nothing either
    await watcher.send({"type": "chat.subscribe", "conversation": conv})
    frames += await watcher.until("subscribed")

    group = a["group"]
    # The page's model picker lists every model the person may pick (the arena's two among
    # them): what must not show is which reply is whose, so the thread is searched whole,
    # with every attribute, and the rest of the page must not tie a model to a reply.
    whole = await page(user, f"/c/{conv}/")
    start = whole.index('<ol id="messages"')
    thread = whole[start : whole.rindex("</ol>", start, whole.index('<form id="composer"'))]
    outside = whole.replace(thread, "")
    assert a["message"] not in outside and b["message"] not in outside
    pages = thread + await page(
        user,
        f"/c/{conv}/g/{group}/",
        f"/c/{conv}/m/{a['message']}/",
        f"/c/{conv}/m/{b['message']}/",
        f"/c/{conv}/older/?before=99",
    )
    seen = json.dumps(frames, ensure_ascii=False) + pages
    for secret in SECRETS:
        assert secret not in seen, secret
    assert "Model A" in pages and "Model B" in pages

    await sock.send({"type": "chat.vote", "conversation": conv, "group": group, "winner": "tie"})
    revealed = (await sock.until("vote.saved"))[-1]
    assert sorted(revealed["models"].values()) == sorted([MINI, TINY])
    after = await page(user, f"/c/{conv}/g/{group}/")
    assert "Label-K3W8" in after and "Label-J5X1" in after and "tie" in after
    vote = await database_sync_to_async(Vote.objects.get)(group=group)
    assert vote.arena and vote.outcome == "tie" and vote.winner_id is None
    continuing = [m for m in await rows(conv) if m.role == "assistant" and not m.superseded]
    assert [str(m.pk) for m in continuing] == [a["message"]]  # a tie: slot A goes on
    await sock.close()
    await watcher.close()


async def test_a_turn_without_a_vote_closes_the_comparison() -> None:
    user = await factories.amake_user("cyd")
    sock = await connect(user)
    await send(sock, "Hi", arena=True)
    frames = await ends(sock, 2)
    conv = created(frames)
    a, b = starts(frames)
    await send(sock, "Next", conv)  # the conversation's own model answers
    await ends(sock, 1)
    saved = await rows(conv)
    by_id = {str(m.pk): m for m in saved}
    assert not by_id[a["message"]].superseded and by_id[b["message"]].superseded  # slot A goes on
    assert not any(m.blind for m in saved)  # the vote can no longer come: the names show
    await sock.send(
        {"type": "chat.vote", "conversation": conv, "group": a["group"], "winner": b["message"]}
    )
    error = await sock.recv()
    assert error["code"] == "not_found" and "closed" in error["detail"]
    await sock.close()


async def test_votes_that_cannot_be_taken_are_refused_and_change_nothing() -> None:
    owner, stranger = await factories.amake_user("dee"), await factories.amake_user("eve")
    sock = await connect(owner)
    await send(sock, "Hi", models=[MINI, TINY])
    frames = await ends(sock, 2)
    conv = created(frames)
    a, _ = starts(frames)
    vote = {"type": "chat.vote", "conversation": conv, "group": a["group"]}
    cases = [
        ({**vote, "winner": "00000000-0000-0000-0000-000000000000"}, "not_found"),
        ({**vote, "group": "00000000-0000-0000-0000-000000000000", "winner": "tie"}, "not_found"),
        ({**vote, "winner": "first"}, "invalid_frame"),
        ({**vote, "winner": 1}, "invalid_frame"),
        ({**vote, "winner": None}, "invalid_frame"),
        ({k: v for k, v in vote.items() if k != "group"} | {"winner": "tie"}, "invalid_frame"),
    ]
    for frame, code in cases:
        await sock.send(frame)
        assert (await sock.recv())["code"] == code, frame
    intruder = await connect(stranger)  # someone else's conversation does not exist for them
    await intruder.send({**vote, "winner": a["message"]})
    assert (await intruder.recv())["code"] == "not_found"
    assert not await database_sync_to_async(Vote.objects.exists)()
    await sock.close()
    await intruder.close()


async def test_compare_frames_are_checked_and_restricted_models_refused() -> None:
    user = await factories.amake_user("fay")
    sock = await connect(user)
    bad = [
        {"models": [MINI]},
        {"models": [MINI, TINY, MINI]},
        {"models": [MINI, TINY, "x", "y"]},
        {"models": "m7q2,t9z4"},
        {"models": [MINI, 7]},
        {"models": [MINI, ""]},
        {"models": [MINI, TINY], "model": MINI},
        {"models": [MINI, TINY], "arena": True},
        {"arena": "yes"},
        {"arena": 1},
    ]
    for extra in bad:
        await send(sock, "hi", **extra)
        assert (await sock.recv())["code"] == "invalid_frame", extra
    for extra in ({"models": [MINI, ECHO]}, {"models": [MINI, "gpt-4o"]}):
        await send(sock, "hi", **extra)
        error = await sock.recv()
        assert error["code"] == "unknown_model", (extra, error)
    assert not await database_sync_to_async(Conversation.objects.filter(owner=user).exists)()

    group = await database_sync_to_async(Group.objects.create)(name="research")
    await database_sync_to_async(user.groups.add)(group)
    await send(sock, "hi", models=[ECHO, MINI])
    frames = await ends(sock, 2)
    assert [s["model"] for s in starts(frames)] == [ECHO, MINI]
    assert reply_text(frames, starts(frames)[0]["message"]).startswith("You said: hi")
    await sock.close()


async def test_stop_ends_every_reply_of_the_group() -> None:
    user = await factories.amake_user("gus")
    sock = await connect(user)
    await send(sock, "Write a long poem", models=[MINI, TINY], options={"max_new_tokens": 64})
    frames = await sock.until("stream.delta", timeout=60)
    conv = next(f for f in frames if f["type"] == "conversation.created")["conversation"]
    await sock.send({"type": "chat.stop", "conversation": conv})
    frames += await ends(sock, 2)
    ended = [f for f in frames if f["type"] == "stream.end"]
    assert len(ended) == 2
    saved = await rows(conv)
    assert all(m.status != "streaming" for m in saved)
    await sock.close()


async def test_a_blind_reply_s_error_names_no_model() -> None:
    """A reply can fail with a detail that names its model ("no longer served here", a
    remote server's message); in an arena that detail would unblind it."""
    from channels.layers import get_channel_layer

    from chat import replies, streams

    user = await factories.amake_user("hal")
    conversation = await database_sync_to_async(factories.make_conversation)(user)
    reply = await database_sync_to_async(Message.objects.create)(
        conversation=conversation,
        position=0,
        role="assistant",
        status="streaming",
        model_name=TINY,
        blind=True,
        slot=1,
    )
    layer = get_channel_layer()
    listener = await layer.new_channel()
    await layer.group_add(streams.conversation_group(conversation.pk), listener)
    job = replies.Job(
        conversation=str(conversation.pk), message=str(reply.pk), options={}, blind=True
    )
    assert replies.Job.from_message(job.as_message()).blind  # it survives the queue
    failure = Result(
        finish_reason="error",
        error_code="inference_unavailable",
        error=f"the model {TINY!r} is no longer served here",
    )
    await replies.finish(job, layer=layer, text="", result=failure)
    error = await layer.receive(listener)
    assert error["type"] == "error" and error["code"] == "inference_unavailable"
    assert TINY not in json.dumps(error) and error["detail"] == replies.BLIND_ERROR
    await reply.arefresh_from_db()
    assert reply.status == "failed"
