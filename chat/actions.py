"""What each client frame does, on the web side. The consumer only routes frames here.

Every action checks ownership through a selector (someone else's conversation is ``not_found``,
exactly like an unknown one), writes through services, and hands generation to the inference
worker over the channel layer. Frames for the calling socket are returned; frames for every
socket of the conversation go through its group.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from django.conf import settings

from chat import limits, replies, selectors, services, streams
from chat.models import Conversation, Message
from chat.protocol import Frame, ProtocolError
from inference import registry
from inference.registry import Result
from stellarchat import layers
from stellarchat.dbreads import reading

logger = logging.getLogger(__name__)

STOP_GRACE = 1.5  # seconds the worker gets to end a stopped reply itself

Join = Callable[[str], Awaitable[None]]


def not_found(frame: Frame) -> ProtocolError:
    return ProtocolError("not_found", "no such conversation", client_id=frame.client_id)


async def owned(user: Any, frame: Frame, *, read: Any = database_sync_to_async) -> Conversation:
    """The frame's conversation if it is the user's (``read``: which thread reads it)."""
    conversation = await read(selectors.conversation_get)(
        user=user, conversation_id=frame.conversation
    )
    if conversation is None:
        raise not_found(frame)
    return conversation


def saved_frame(message: Message, client_id: str | None) -> dict[str, Any]:
    return {
        "type": "message.saved",
        "conversation": str(message.conversation_id),
        "message": {
            "id": str(message.pk),
            "role": message.role,
            "content": message.content,
            "replaces": str(message.replaces_id) if message.replaces_id else None,
        },
        "client_id": client_id,
    }


def rate_limited(exc: limits.RateLimited, frame: Frame) -> ProtocolError:
    return ProtocolError(
        "rate_limited", exc.detail, client_id=frame.client_id, retry_after=exc.retry_after
    )


async def check_rate(user: Any, frame: Frame) -> None:
    """Count the message against the user's per-minute limit, before anything is saved."""
    try:
        await limits.hit_message_rate(user.pk, report=False)
    except limits.RateLimited as exc:
        raise rate_limited(exc, frame) from None


def start_frame(reply: Message) -> dict[str, Any]:
    """stream.start for ``reply``: its model by name, unless the reply is blind (an arena's,
    before the vote), then null; a compare reply's group and slot."""
    frame: dict[str, Any] = {
        "type": "stream.start",
        "conversation": str(reply.conversation_id),
        "message": str(reply.pk),
        "replaces": str(reply.replaces_id) if reply.replaces_id else None,
        "model": None if reply.blind else reply.model_name,
    }
    if reply.group is not None:
        frame.update(group=str(reply.group), slot=reply.slot)
    return frame


async def start_reply(
    layer: Any,
    *,
    conversation: Conversation,
    reply: Message,
    options: dict[str, Any],
    turns: list[dict[str, str]] | None = None,
    announce: Sequence[tuple[str, dict[str, Any]]] = (),
) -> None:
    """Publish ``announce`` (group, event: what comes before the reply, such as its user
    turn), then stream.start, and queue the job, in that order and in one go (two trips to
    Redis). The reply exists (streaming) from here on.

    ``turns``: the context the reply answers, when the caller read it already (then the job
    carries it and the conversation's options, and the worker starts the model without a trip
    to the database; see ``replies.Job``).

    No shared state is written here (it is on the first token's path): until the worker's
    first flush, readers find no text and use the database's (empty), and the sweeper gives a
    reply without a heartbeat a whole timeout from when it first sees it."""
    conv, msg = str(conversation.pk), str(reply.pk)
    started = start_frame(reply)
    job = replies.Job(
        conversation=conv,
        message=msg,
        options={**conversation.options, **options},  # as the worker merges them
        turns=turns,
        model=reply.model_name,
        blind=reply.blind,
    )
    events = [*announce, (streams.conversation_group(conv), started)]
    channel = registry.channel(reply.model_name)  # the workers that serve its model
    try:
        await layers.send_in_order(layer, events, channel, job.as_message())
    except ChannelFull:
        result = Result(
            finish_reason="error",
            error_code="inference_unavailable",
            error="the inference queue is full; try again in a moment",
        )
        await replies.finish(job, layer=layer, text="", result=result)


async def send(
    user: Any, frame: Frame, *, layer: Any, join: Join, api_key: Any = None
) -> list[dict[str, Any]]:
    await check_rate(user, frame)
    if frame.models or frame.arena:
        return await _compare(user, frame, layer=layer, join=join, api_key=api_key)
    if frame.conversation is not None:
        conversation = await owned(user, frame)
        return await _begin(
            frame,
            user=user,
            conversation=conversation,
            layer=layer,
            join=join,
            action=services.reply_request,
            options=frame.options,
            model=frame.model,
            content=frame.content,
        )
    # A new conversation: created together with its first turn, or not at all.
    try:
        conversation, user_turn, reply = await _start_conversation(
            user, frame.content, api_key=api_key, model=frame.model
        )
    except limits.RateLimited as exc:
        raise rate_limited(exc, frame) from None
    except registry.UnknownModel:
        raise unknown_model(frame) from None
    # A program's conversation is not announced to the person's browser tabs (it stays out of
    # their sidebar): only the sockets following it hear of it.
    # client_id: the tab that sent it adopts the conversation; the person's other tabs (on an
    # empty "new chat" page too) only add it to their sidebar.
    created = {
        "type": "conversation.created",
        "conversation": str(conversation.pk),
        "title": "",
        "client_id": frame.client_id,
    }
    target = (
        streams.user_group(user.pk)
        if api_key is None
        else streams.conversation_group(conversation.pk)
    )
    # The whole context is the system prompt and this turn: no need to read it back.
    turns = selectors.thread_turns(
        conversation.system_prompt,
        [(user_turn.role, user_turn.content)],
        max_chars=replies.JOB_TURNS_MAX_CHARS,
    )
    await _announce_and_start(
        frame,
        conversation,
        user_turn,
        reply,
        layer=layer,
        join=join,
        options=frame.options,
        turns=turns,
        first=[(target, created)],
    )
    return []


def unknown_model(frame: Frame, name: str | None = None) -> ProtocolError:
    """The same answer for a model that does not exist and one the person may not use."""
    if frame.arena:
        detail = "the arena needs two models you may use; ask an administrator to set its pool"
    else:
        detail = f"no model named {name or frame.model!r} is available to you"
    return ProtocolError("unknown_model", detail, client_id=frame.client_id)


async def _compare(
    user: Any, frame: Frame, *, layer: Any, join: Join, api_key: Any = None
) -> list[dict[str, Any]]:
    """chat.send with ``models`` (side by side) or ``arena`` (two models drawn from the
    arena pool, blind): one user turn, one reply per model, streaming at the same time."""
    conversation = await owned(user, frame) if frame.conversation is not None else None
    try:
        conversation, user_turn, answers, turns = await _start_compare(
            user, frame, conversation, api_key=api_key
        )
    except registry.UnknownModel as exc:
        raise unknown_model(frame, str(exc.args[0]) if exc.args else None) from None
    except services.ConversationBusy:
        raise ProtocolError(
            "busy", "a reply is already streaming in this conversation", client_id=frame.client_id
        ) from None
    except limits.RateLimited as exc:
        raise rate_limited(exc, frame) from None
    first: list[tuple[str, dict[str, Any]]] = []
    if frame.conversation is None:
        first.append(
            (
                streams.user_group(user.pk)
                if api_key is None
                else streams.conversation_group(conversation.pk),
                {
                    "type": "conversation.created",
                    "conversation": str(conversation.pk),
                    "title": "",
                    "client_id": frame.client_id,
                },
            )
        )
    await _announce_and_start(
        frame,
        conversation,
        user_turn,
        answers[0],
        layer=layer,
        join=join,
        options=frame.options,
        turns=turns,
        first=first,
    )
    for reply in answers[1:]:  # the user turn is announced: the others only start
        await start_reply(
            layer, conversation=conversation, reply=reply, options=frame.options, turns=turns
        )
    return []


@database_sync_to_async
def _start_compare(
    user: Any, frame: Frame, conversation: Conversation | None, *, api_key: Any
) -> tuple[Conversation, Message, list[Message], list[dict[str, str]] | None]:
    """The models (checked, or drawn for an arena), then the turn and its replies, in one
    trip to the database thread."""
    if frame.arena:
        pool = registry.arena_pool(user)
        if len(pool) < 2:
            raise registry.UnknownModel("arena")
        names = secrets.SystemRandom().sample(pool, 2)  # which two, and in which slots
    else:
        names = [registry.choose(user, name) for name in frame.models]
    if conversation is None:
        prefs = selectors.preferences_for(user=user)
        conversation, user_turn, answers = services.conversation_start_compare(
            owner=user,
            content=frame.content,
            model_name=registry.choose(user, None, current=prefs.default_model),
            system_prompt=prefs.system_prompt,
            options=prefs.options,
            api_key=api_key,
            compare=names,
            blind=frame.arena,
        )
        turns = selectors.thread_turns(
            conversation.system_prompt,
            [(user_turn.role, user_turn.content)],
            max_chars=replies.JOB_TURNS_MAX_CHARS,
        )
        return conversation, user_turn, answers, turns
    user_turn, answers = services.reply_compare(
        conversation=conversation, content=frame.content, model_names=names, blind=frame.arena
    )
    turns = selectors.context_turns(message=answers[0], max_chars=replies.JOB_TURNS_MAX_CHARS)
    return conversation, user_turn, answers, turns


async def vote(
    user: Any, frame: Frame, *, layer: Any, join: Join, api_key: Any = None
) -> list[dict[str, Any]]:
    """chat.vote: the one vote on a compare group. Every socket of the owner hears
    vote.saved with the models revealed; the page shows the winner continuing."""
    conversation = await owned(user, frame)
    try:
        saved, models = await database_sync_to_async(services.vote_record)(
            conversation=conversation, group=frame.group, winner=frame.winner, voter=user
        )
    except services.VoteRefused as exc:
        raise ProtocolError(exc.code, exc.detail, client_id=frame.client_id) from None
    event = {
        "type": "vote.saved",
        "conversation": str(conversation.pk),
        "group": str(saved.group),
        "winner": str(saved.winner_id) if saved.winner_id else saved.outcome,
        "models": models,
        "client_id": frame.client_id,
    }
    target = (
        streams.user_group(user.pk)
        if api_key is None
        else streams.conversation_group(conversation.pk)
    )
    await layer.group_send(target, event)
    return []


@database_sync_to_async
def _start_conversation(
    user: Any, content: str, *, api_key: Any, model: str | None
) -> tuple[Conversation, Message, Message]:
    """The user's defaults and the new conversation in one trip to the database thread."""
    prefs = selectors.preferences_for(user=user)
    # Before anything is saved: the model asked for, else the person's default while theirs.
    chosen = registry.choose(user, model, current=prefs.default_model)
    return services.conversation_start(
        owner=user,
        content=content,
        model_name=chosen,
        system_prompt=prefs.system_prompt,
        options=prefs.options,
        api_key=api_key,
    )


async def regenerate(
    user: Any, frame: Frame, *, layer: Any, join: Join, api_key: Any = None
) -> list[dict[str, Any]]:
    await check_rate(user, frame)
    conversation = await owned(user, frame)
    return await _begin(
        frame,
        user=user,
        conversation=conversation,
        layer=layer,
        join=join,
        action=services.reply_regenerate,
        announce_user_turn=False,  # the turn answered again is already there
    )


async def edit(
    user: Any, frame: Frame, *, layer: Any, join: Join, api_key: Any = None
) -> list[dict[str, Any]]:
    await check_rate(user, frame)
    conversation = await owned(user, frame)
    return await _begin(
        frame,
        user=user,
        conversation=conversation,
        layer=layer,
        join=join,
        action=services.reply_edit,
        nothing="no such user message",
        message_id=frame.message,
        content=frame.content,
    )


async def _begin(
    frame: Frame,
    *,
    user: Any,
    conversation: Conversation,
    layer: Any,
    join: Join,
    action: Callable[..., tuple[Message, Message]],
    options: dict[str, Any] | None = None,
    model: str | None = None,
    announce_user_turn: bool = True,
    nothing: str = "no user turn to answer",
    **fields: Any,
) -> list[dict[str, Any]]:
    """Run a reply-starting service (send, regenerate, edit), turn its refusals into protocol
    errors, then join the conversation, announce the user turn and start streaming."""
    try:
        user_turn, reply, turns = await _start(
            action, user=user, conversation=conversation, model=model, **fields
        )
    except registry.UnknownModel:
        raise unknown_model(frame) from None
    except services.ConversationBusy:
        raise ProtocolError(
            "busy", "a reply is already streaming in this conversation", client_id=frame.client_id
        ) from None
    except services.NothingToAnswer:
        raise ProtocolError("not_found", nothing, client_id=frame.client_id) from None
    except limits.RateLimited as exc:
        raise rate_limited(exc, frame) from None
    await _announce_and_start(
        frame,
        conversation,
        user_turn if announce_user_turn else None,
        reply,
        layer=layer,
        join=join,
        options=options or {},
        turns=turns,
    )
    return []


@database_sync_to_async
def _start(
    action: Callable[..., tuple[Message, Message]],
    *,
    user: Any,
    conversation: Conversation,
    model: str | None,
    **fields: Any,
) -> tuple[Message, Message, list[dict[str, str]] | None]:
    """The model (``model`` asked for switches the conversation to it from this turn on), a
    reply-starting service, then the context its reply answers (None when too long for the
    job), in one trip to the database thread."""
    chosen = registry.choose(user, model, current=conversation.model_name)
    user_turn, reply = action(conversation=conversation, model_name=chosen, **fields)
    if model is not None:
        services.conversation_set_model(conversation=conversation, model_name=chosen)
    turns = selectors.context_turns(message=reply, max_chars=replies.JOB_TURNS_MAX_CHARS)
    return user_turn, reply, turns


async def _announce_and_start(
    frame: Frame,
    conversation: Conversation,
    user_turn: Message | None,
    reply: Message,
    *,
    layer: Any,
    join: Join,
    options: dict[str, Any],
    turns: list[dict[str, str]] | None,
    first: Sequence[tuple[str, dict[str, Any]]] = (),
) -> None:
    """After a reply-starting service: follow the conversation (before the job: its first
    deltas must find this socket in the group), then announce ``first`` and the user turn
    (when there is a new one) and start streaming, in one go."""
    await join(str(conversation.pk))
    announce = list(first)
    if user_turn is not None:
        group = streams.conversation_group(conversation.pk)
        announce.append((group, saved_frame(user_turn, frame.client_id)))
    await start_reply(
        layer,
        conversation=conversation,
        reply=reply,
        options=options,
        turns=turns,
        announce=announce,
    )


async def stop(
    user: Any, frame: Frame, *, layer: Any, join: Join, api_key: Any = None
) -> list[dict[str, Any]]:
    """Ask the worker to stop; if it has not ended the reply shortly, end it from here."""
    conversation = await owned(user, frame)
    streaming = await database_sync_to_async(selectors.streaming_messages)(
        conversation_id=conversation.pk
    )
    for reply in streaming:  # none: stopping is idempotent; a compare group: all of them
        await streams.request_cancel(reply.pk)
        asyncio.get_running_loop().create_task(_stop_fallback(layer, conversation.pk, reply.pk))
    return []


async def _stop_fallback(layer: Any, conversation_id: Any, message_id: Any) -> None:
    """A reply still queued behind a busy worker, or whose worker went silent, must stop within
    a couple of seconds too. One that a live worker is generating is left to that worker (it
    polls for stop requests as it beats): ending it from here while it still publishes would
    show people text that is not saved."""
    deadline = time.monotonic() + settings.STELLARCHAT_STREAM_TIMEOUT  # then end it anyway
    while True:
        await asyncio.sleep(STOP_GRACE)
        beat = await streams.last_beat(message_id)  # gone once its worker ended it
        alive = beat is not None and time.time() - beat <= STOP_GRACE + 1.0
        if not alive or time.monotonic() > deadline or not await streams.claimed(message_id):
            break
    text = await streams.get_text(message_id)
    if text is None:
        text = (
            await database_sync_to_async(
                lambda: (
                    Message.objects.filter(pk=message_id).values_list("content", flat=True).first()
                )
            )()
            or ""
        )
    job = replies.Job(conversation=str(conversation_id), message=str(message_id), options={})
    await replies.finish(job, layer=layer, text=text, result=Result(finish_reason="cancelled"))


async def subscribe(
    user: Any, frame: Frame, *, layer: Any, join: Join, reconciler: streams.Reconciler
) -> list[dict[str, Any]]:
    """Join the conversation; if a reply is streaming, catch up with everything so far.

    Both reads are on the reading threads (stellarchat/dbreads.py): a socket may send 100
    subscribes at once, and two hundred sockets one each."""
    conversation = await owned(user, frame, read=reading)
    conv = str(conversation.pk)
    await join(conv)  # join first: deltas published from now on reach us
    streaming = await reading(selectors.streaming_messages)(conversation_id=conversation.pk)
    frames: list[dict[str, Any]] = [
        {"type": "subscribed", "conversation": conv, "streaming": bool(streaming)}
    ]
    for reply in streaming:  # one, or a compare group's
        msg = str(reply.pk)
        text = await streams.get_text(msg)
        if text is None:  # state expired or lost: the database has the text of its last flush
            text = reply.content
        if reconciler.start(msg):
            frames.append(start_frame(reply))
        offset = reconciler.sent[msg]
        catch_up = reconciler.snapshot(msg, text)
        frames.append(streams.delta_frame(conv, msg, offset, catch_up))
    return frames


HANDLERS = {
    "chat.send": send,
    "chat.regenerate": regenerate,
    "chat.edit": edit,
    "chat.stop": stop,
    "chat.vote": vote,
}
