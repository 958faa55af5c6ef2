"""Preference data for training: the people's votes and thumbs as JSONL lines in TRL's
conversational formats. Used by ``manage.py export_preferences`` and the Vote admin's action.

- Preference lines (DPO, reward models): one per (winner, loser) pair of a decided vote,
  ``{"prompt": [...], "chosen": [...], "rejected": [...]}`` plus the models and ids.
- KTO lines (unpaired): one per reply rated 👍/👎 outside compare,
  ``{"prompt": [...], "completion": [...], "label": true|false}`` plus the model and id.

Never exported: conversations whose text was not kept (``retain_text=False``: API keys set not
to store), empty texts, failed or unfinished replies, and every conversation of a person who
opted out of training data in Settings. Everything is read with ``.iterator()`` and yielded a
line at a time, so an export of any size runs in little memory.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator
from datetime import date
from typing import Any

from django.db.models import QuerySet

from chat.leaderboard import day_range
from chat.models import Message, Vote
from chat.selectors import context_turns

_NOT_FINISHED = [Message.Status.FAILED, Message.Status.STREAMING]
_OPTED_OUT = "chat_preferences__training_opt_out"


def _assistant(content: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": content}]


def _prompt(message: Message) -> list[dict[str, str]] | None:
    """The turns the reply answered, or None when there is no question in them."""
    turns = context_turns(message=message) or []
    return turns if any(t["role"] == "user" for t in turns) else None


def _usable(message: Message | None) -> bool:
    return (
        message is not None
        and message.role == Message.Role.ASSISTANT
        and message.status not in _NOT_FINISHED
        and bool(message.content.strip())
    )


def preference_lines(
    *,
    votes: QuerySet[Vote] | None = None,
    since: date | None = None,
    models: Collection[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """One line per (winner, loser) pair of each decided vote (outcome "win"): two lines for a
    three-way group. ``votes``: which to consider (all by default); ``since``: cast on or after
    that day; ``models``: only pairs whose two models are both in it."""
    qs = votes if votes is not None else Vote.objects.all()
    qs = (
        qs.filter(outcome=Vote.Outcome.WIN, conversation__retain_text=True)
        .exclude(**{f"conversation__owner__{_OPTED_OUT}": True})
        .exclude(**{f"voter__{_OPTED_OUT}": True})
        .filter(**day_range("created_at", since, None))
        .select_related("winner__conversation")
        .order_by("created_at", "pk")
    )
    for vote in qs.iterator(chunk_size=500):
        winner = vote.winner
        if not _usable(winner) or (models is not None and winner.model_name not in models):
            continue
        losers = (
            Message.objects.filter(
                conversation_id=vote.conversation_id, group=vote.group, role=Message.Role.ASSISTANT
            )
            .exclude(pk=winner.pk)
            .exclude(status__in=_NOT_FINISHED)
            .order_by("slot", "position")
        )
        if models is not None:
            losers = losers.filter(model_name__in=models)
        losers = [m for m in losers if _usable(m)]
        prompt = _prompt(winner) if losers else None
        if prompt is None:
            continue
        for loser in losers:
            yield {
                "prompt": prompt,
                "chosen": _assistant(winner.content),
                "rejected": _assistant(loser.content),
                "chosen_model": winner.model_name,
                "rejected_model": loser.model_name,
                "chosen_id": str(winner.pk),
                "rejected_id": str(loser.pk),
                "vote_id": str(vote.pk),
                "arena": vote.arena,
            }


def kto_lines(
    *,
    since: date | None = None,
    models: Collection[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """One line per reply rated 👍 (label true) or 👎 (label false) outside compare."""
    qs = (
        Message.objects.filter(
            role=Message.Role.ASSISTANT,
            group__isnull=True,
            feedback__in=[Message.Feedback.POSITIVE, Message.Feedback.NEGATIVE],
            conversation__retain_text=True,
        )
        .exclude(status__in=_NOT_FINISHED)
        .exclude(content="")
        .exclude(**{f"conversation__owner__{_OPTED_OUT}": True})
        .filter(**day_range("created_at", since, None))
        .select_related("conversation")
        .order_by("created_at", "pk")
    )
    if models is not None:
        qs = qs.filter(model_name__in=models)
    for message in qs.iterator(chunk_size=500):
        prompt = _prompt(message) if _usable(message) else None
        if prompt is None:
            continue
        yield {
            "prompt": prompt,
            "completion": _assistant(message.content),
            "label": message.feedback == Message.Feedback.POSITIVE,
            "model": message.model_name,
            "id": str(message.pk),
        }


def jsonl(lines: Iterable[dict[str, Any]]) -> Iterator[str]:
    """Each line as JSON (UTF-8 text kept as is) ending in a newline."""
    for line in lines:
        yield json.dumps(line, ensure_ascii=False) + "\n"
