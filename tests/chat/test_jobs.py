"""Inference jobs that carry their context: the web side reads the turns in the trip to the
database that saved them, and the worker starts the model at once, checking its claim and the
reply's status while the prompt is read.

What must hold: the context in a job is exactly what the worker would read from the database
(every way a reply starts), a long one is left out and read as before, a malformed one is
ignored, never trusted, and a worker that may not answer (another took the job, or the reply
ended while queued) publishes and saves nothing even though its model already started."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from chat import actions, replies, selectors, services, streams
from chat.models import Message
from chat.protocol import parse_frame
from tests import factories
from tests.chat.wsclient import connect, reply_text

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.usefixtures("fresh_layer"),
]


class Recording:
    """The real channel layer, except that jobs are kept instead of queued (no worker runs
    them) and every group event is recorded."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.jobs: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        if channel.startswith("inference"):
            self.jobs.append(message)
        else:
            await self.layer.send(channel, message)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.events.append(message)
        await self.layer.group_send(group, message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.layer, name)


async def no_join(conversation: str) -> None:
    return None


def frame(**fields: Any) -> Any:
    return parse_frame(
        json.dumps(fields),
        max_chars=settings.STELLARCHAT_MAX_MESSAGE_CHARS,
        max_new_tokens_limit=settings.STELLARCHAT_MAX_NEW_TOKENS,
    )


async def worker_reads(job: replies.Job) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """What a worker reads for a job that came without turns."""
    loaded = await replies._load(replies.Job(job.conversation, job.message, job.options))
    assert loaded is not None
    return loaded


@database_sync_to_async
def conversation_with_history(user: Any) -> Any:
    """System prompt, options, a failed reply (left out), two user turns in a row (merged), an
    empty reply (left out) and a superseded version (left out)."""
    conv = services.conversation_create(
        owner=user, system_prompt="Be brief.", options={"temperature": 0.3, "top_p": 0.8}
    )
    services.message_append(conversation=conv, role="user", content="first")
    services.message_append(conversation=conv, role="assistant", content="one")
    services.message_append(conversation=conv, role="user", content="second")
    services.message_append(conversation=conv, role="assistant", content="x", status="failed")
    services.message_append(conversation=conv, role="user", content="third <b>&amp;</b>")
    services.message_append(conversation=conv, role="assistant", content="")
    old = services.message_append(conversation=conv, role="user", content="edited away")
    Message.objects.filter(pk=old.pk).update(superseded=True)
    return conv


@pytest.mark.parametrize("kind", ["new", "send", "regenerate", "edit"])
async def test_a_job_carries_exactly_the_context_the_worker_would_read(kind: str) -> None:
    user = await factories.amake_user(f"j{kind}")
    await database_sync_to_async(services.preferences_update)(
        user=user, system_prompt="You are terse.", options={"temperature": 0.5}
    )
    layer = Recording()
    options = {"max_new_tokens": 7}
    if kind == "new":
        await actions.send(
            user,
            frame(type="chat.send", conversation=None, content="héllo 🌍", options=options),
            layer=layer,
            join=no_join,
        )
    else:
        conv = await conversation_with_history(user)
        fields: dict[str, Any] = {"type": f"chat.{kind}", "conversation": str(conv.pk)}
        if kind == "send":
            fields.update(content="fourth", options=options)
        if kind == "edit":
            first = await database_sync_to_async(
                lambda: Message.objects.get(conversation=conv, content="second")
            )()
            fields.update(message=str(first.pk), content="second, edited")
        await actions.HANDLERS[fields["type"]](user, frame(**fields), layer=layer, join=no_join)
    [message] = layer.jobs
    assert message["type"] == "inference.generate"
    job = replies.Job.from_message(message)
    turns, conversation_options = await worker_reads(job)
    assert job.turns == turns
    assert job.turns[0] == {
        "role": "system",
        "content": "You are terse." if kind == "new" else "Be brief.",
    }
    assert all(type(t["role"]) is str for t in job.turns)  # plain strings on the wire
    if kind == "send":
        # The failed and the empty reply and the superseded turn are left out, and the user
        # turns they separated are merged.
        assert [t["content"] for t in turns[1:]] == [
            "first",
            "one",
            "second\n\nthird <b>&amp;</b>\n\nfourth",
        ]
    # The conversation's options under the request's, as the worker merges them.
    assert job.options == {**conversation_options, **(options if kind in ("new", "send") else {})}
    # stream.start was still announced before the job was queued.
    assert [e["type"] for e in layer.events][-1] == "stream.start"


async def test_an_api_completion_job_carries_the_request_s_turns() -> None:
    user = await factories.amake_user("japi")
    turns = [("user", "a"), ("assistant", "b"), ("user", ""), ("user", "c")]
    conversation, reply = await database_sync_to_async(services.api_completion_start)(
        owner=user, api_key=None, system_prompt="sys", turns=turns, model_name="m"
    )
    inline = selectors.thread_turns("sys", turns, max_chars=replies.JOB_TURNS_MAX_CHARS)
    job = replies.Job(str(conversation.pk), str(reply.pk), {}, inline)
    assert (await worker_reads(job))[0] == inline


async def test_a_long_context_stays_out_of_the_job_and_the_worker_reads_it() -> None:
    user = await factories.amake_user("jlong")
    conv = await database_sync_to_async(factories.make_conversation)(user)
    chunk = "z" * (replies.JOB_TURNS_MAX_CHARS // 2)
    for role in ("user", "assistant", "user", "assistant"):
        await database_sync_to_async(services.message_append)(
            conversation=conv, role=role, content=chunk
        )
    layer = Recording()
    await actions.send(
        user,
        frame(type="chat.send", conversation=str(conv.pk), content="short"),
        layer=layer,
        join=no_join,
    )
    [message] = layer.jobs
    assert "turns" not in message
    # And through the real socket and the embedded worker, the reply reads the whole thread.
    sock = await connect(user)
    await sock.send({"type": "chat.subscribe", "conversation": str(conv.pk)})
    await sock.until("subscribed")
    await database_sync_to_async(
        lambda: Message.objects.filter(status="streaming").update(status="cancelled")
    )()
    await sock.send({"type": "chat.send", "conversation": str(conv.pk), "content": "again"})
    frames = await sock.until("stream.end")
    # Two user turns in a row ("short" lost its reply) are merged; three user turns in all.
    assert reply_text(frames) == "You said: short\n\nagain (turn 3)"
    await sock.close()


async def test_thread_turns_stops_at_the_limit() -> None:
    rows = [("user", "a" * 10), ("assistant", "b" * 10)]
    assert selectors.thread_turns("", rows, max_chars=20) == [
        {"role": "user", "content": "a" * 10},
        {"role": "assistant", "content": "b" * 10},
    ]
    assert selectors.thread_turns("", rows, max_chars=19) is None
    # Merged turns count their separator: what the web side lets through, the worker takes.
    two = [("user", "a" * 10), ("user", "b" * 10)]
    merged = selectors.thread_turns("", two, max_chars=22)
    assert merged == [{"role": "user", "content": "a" * 10 + "\n\n" + "b" * 10}]
    assert selectors.thread_turns("", two, max_chars=21) is None
    at_limit = selectors.thread_turns(
        "s", [("user", "a" * 40_000), ("user", "b" * 23_997)], max_chars=replies.JOB_TURNS_MAX_CHARS
    )
    assert at_limit is not None
    job = replies.Job("2b3c36a1-0b59-4f2f-a6a8-6b0e3b3a9e51", str(uuid.uuid4()), {}, at_limit)
    assert replies.Job.from_message(job.as_message()).turns == at_limit
    over = [("user", "a" * 40_000), ("user", "b" * 23_999)]  # 64,002 with the separator
    assert selectors.thread_turns("s", over, max_chars=replies.JOB_TURNS_MAX_CHARS) is None
    assert selectors.thread_turns("s" * 21, [], max_chars=20) is None
    assert selectors.thread_turns("   ", [("system", "x"), ("user", "")]) == []


@pytest.mark.parametrize(
    "turns",
    [
        "not a list",
        42,
        {"role": "user", "content": "a dict, not a list"},
        [["user", "pairs, not objects"]],
        [{"role": "user"}],
        [{"content": "no role"}],
        [{"role": "tool", "content": "a role the worker does not know"}],
        [{"role": "user", "content": 7}],
        [{"role": "user", "content": None}],
        [{"role": ["user"], "content": "x"}],
        [{"role": "user", "content": "x" * (replies.JOB_TURNS_MAX_CHARS + 1)}],
    ],
)
async def test_malformed_turns_are_ignored_and_the_job_is_kept(turns: Any) -> None:
    job = replies.Job.from_message(
        {
            "type": "inference.generate",
            "conversation": "2b3c36a1-0b59-4f2f-a6a8-6b0e3b3a9e51",
            "message": "6f0b9d1e-2b7e-4a51-9c2b-0f0f6a1d9b77",
            "options": {"temperature": 0},
            "turns": turns,
        }
    )
    assert job.turns is None  # the worker reads them from the database
    assert job.message == "6f0b9d1e-2b7e-4a51-9c2b-0f0f6a1d9b77"
    assert job.options == {"temperature": 0}


async def test_a_job_round_trips_with_and_without_turns() -> None:
    turns = [{"role": "system", "content": "s"}, {"role": "user", "content": "ü\x00<script>"}]
    job = replies.Job("2b3c36a1-0b59-4f2f-a6a8-6b0e3b3a9e51", str(uuid.uuid4()), {})
    assert "turns" not in job.as_message()
    assert replies.Job.from_message(job.as_message()).turns is None
    job.turns = turns
    assert replies.Job.from_message(job.as_message()).turns == turns


async def _streaming_reply(name: str, content: str = "q") -> tuple[Any, Any, list[dict[str, str]]]:
    user = await factories.amake_user(name)
    conv = await database_sync_to_async(factories.make_conversation)(user, turns=1)
    _, reply = await database_sync_to_async(services.reply_request)(
        conversation=conv, content=content
    )
    turns = await database_sync_to_async(selectors.context_turns)(message=reply)
    return conv, reply, turns


async def test_inline_and_read_context_give_the_same_reply() -> None:
    conv, reply, turns = await _streaming_reply("jsame")
    layer = Recording()
    job = replies.Job(str(conv.pk), str(reply.pk), {}, turns)
    await replies.run_reply(job, layer=layer)
    inline = await database_sync_to_async(Message.objects.get)(pk=reply.pk)
    assert (inline.status, inline.content) == ("complete", "You said: q (turn 2)")
    _, again = await database_sync_to_async(services.reply_regenerate)(conversation=conv)
    await replies.run_reply(replies.Job(str(conv.pk), str(again.pk), {}), layer=layer)
    read = await database_sync_to_async(Message.objects.get)(pk=again.pk)
    assert (read.status, read.content) == ("complete", inline.content)


async def test_a_job_another_worker_took_publishes_and_saves_nothing(monkeypatch: Any) -> None:
    """The model starts before the claim is known; its words wait for the claim, and a lost
    claim drops them (the claim is slowed here so the model has finished by then)."""
    conv, reply, turns = await _streaming_reply("jtaken")
    assert await streams.claim(reply.pk)  # the other worker
    real_claim = streams.claim

    async def slow_claim(message_id: Any) -> bool:
        await asyncio.sleep(0.3)
        return await real_claim(message_id)

    monkeypatch.setattr(streams, "claim", slow_claim)
    layer = Recording()
    await replies.run_reply(replies.Job(str(conv.pk), str(reply.pk), {}, turns), layer=layer)
    assert layer.events == []
    row = await database_sync_to_async(Message.objects.get)(pk=reply.pk)
    assert (row.status, row.content) == ("streaming", "")
    assert await streams.get_text(reply.pk) is None


async def test_a_reply_that_ended_while_queued_is_left_alone() -> None:
    conv, reply, turns = await _streaming_reply("jended")
    await database_sync_to_async(services.reply_finish)(
        message_id=reply.pk, content="stopped early", status="cancelled"
    )
    layer = Recording()
    await replies.run_reply(replies.Job(str(conv.pk), str(reply.pk), {}, turns), layer=layer)
    assert layer.events == []
    row = await database_sync_to_async(Message.objects.get)(pk=reply.pk)
    assert (row.status, row.content) == ("cancelled", "stopped early")


async def test_a_lost_claim_stops_the_model_at_once() -> None:
    """A job delivered twice (channels-redis can do that) costs the losing worker a claim, not
    a whole reply: its model is stopped as soon as the claim comes back lost."""
    conv, reply, turns = await _streaming_reply("jstop", "[[slow 3000]] [[long 3]]")  # 9 s
    assert await streams.claim(reply.pk)  # the other worker
    layer = Recording()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await replies.run_reply(replies.Job(str(conv.pk), str(reply.pk), {}, turns), layer=layer)
    assert loop.time() - started < 1.0
    assert layer.events == []
