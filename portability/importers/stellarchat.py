"""Our own export (docs/export-format.md, version 1): ``conversations.json``, alone or in the
ZIP that Settings → Your data downloads.

Everything the format carries comes back: messages at their positions with their versions
(``replaces`` pointing at the new id of the version it replaces), compare groups and slots,
votes, feedback, token counts, titles, models, options and times. A reply that was still
generating when the file was made comes back cancelled. Ids are new (the file may come from
this very server); a conversation whose id is one of the importer's own is skipped as
already there.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _

from portability.importers import common
from portability.importers.common import ImportRefused

KIND = "stellarchat"
FORMAT = "stellarchat-export"
VERSION = 1
OUTCOMES = ("win", "tie", "both_bad")


def check_header(fields: dict[str, Any], *, name: str) -> None:
    """The file's own fields: our format, in a version this server reads."""
    version = fields.get("version")
    if version != VERSION:
        raise ImportRefused(
            _(
                "%(name)s is a StellarChat export of version %(version)s; this server reads "
                "version %(ours)d."
            )
            % {"name": name, "version": str(version)[:20], "ours": VERSION}
        )


def normalize(raw: Any, index: int) -> dict[str, Any]:
    """One conversation of the file, normalized (portability/importers/common.py)."""
    if not isinstance(raw, dict):
        raise _refused(_("%(what)s is not a conversation (an object was expected)."), index, raw)
    original = common.as_uuid(raw.get("id"))
    if original is None:
        raise _refused(_("%(what)s has no valid “id”."), index, raw)
    rows = raw.get("messages")
    if not isinstance(rows, list):
        raise _refused(_("%(what)s has no list of “messages”."), index, raw)
    messages = [_message(row, index=index, raw=raw) for row in rows]
    messages.sort(key=lambda m: m["position"])
    if len({m["position"] for m in messages}) != len(messages):  # a hand-edited file
        for place, m in enumerate(messages):
            m["position"] = place
    keys = {m["key"] for m in messages}
    if len(keys) != len(messages):
        raise _refused(_("%(what)s names two messages with the same “id”."), index, raw)
    for m in messages:
        if m["replaces"] not in keys:
            m["replaces"] = None
    created = common.parse_time(raw.get("created_at"))
    common.fill_times(messages, created)
    groups = {m["group"] for m in messages if m["group"]}
    votes: dict[str, dict[str, Any]] = {}  # one per group, as in the database
    for row in _list(raw.get("votes")):
        vote = _vote(row, keys, groups)
        if vote is not None:
            votes.setdefault(vote["group"], vote)
    source = raw.get("source") if raw.get("source") in ("chat", "api") else "chat"
    return common.conversation(
        source_id=common.source_id(KIND, original),
        original_id=original,
        title=common.clean_line(raw.get("title"), common.TITLE_MAX),
        messages=messages,
        created_at=created,
        updated_at=common.parse_time(raw.get("updated_at")),
        model=common.clean_line(raw.get("model"), common.MODEL_MAX),
        system_prompt=common.clean_text(raw.get("system_prompt")),
        options=common.clean_options(raw.get("options")),
        pinned=raw.get("pinned") is True,
        archived=raw.get("archived") is True,
        source=source,
        retain_text=raw.get("retain_text") is not False,
        votes=list(votes.values()),
    )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _refused(message: str, index: int, raw: Any) -> ImportRefused:
    return ImportRefused(message % {"what": common.describe(index, raw)})


def _message(row: Any, *, index: int, raw: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise _refused(_("%(what)s has a message that is not an object."), index, raw)
    key = common.as_uuid(row.get("id"))
    position = common.as_int(row.get("position"))
    role = row.get("role")
    if key is None or position is None or role not in common.ROLES:
        problem = _("%(what)s has a message without a valid id, position or role.")
        raise _refused(problem, index, raw)
    status = row.get("status")
    status = status if status in common.STATUSES else "cancelled"  # "streaming" at export time
    feedback = row.get("feedback") if row.get("feedback") in (-1, 0, 1) else 0
    slot = common.as_int(row.get("slot"), high=2)
    return common.message(
        key=key,
        position=position,
        role=role,
        content=common.clean_text(row.get("content")),
        created_at=common.parse_time(row.get("created_at")),
        model=row.get("model") if isinstance(row.get("model"), str) else "",
        status=status,
        feedback=int(feedback),
        superseded=row.get("superseded") is True,
        replaces=common.as_uuid(row.get("replaces")),
        group=common.as_uuid(row.get("group")),
        slot=slot,
        blind=row.get("blind") is True,
        prompt_tokens=common.as_int(row.get("prompt_tokens")),
        completion_tokens=common.as_int(row.get("completion_tokens")),
        ttft_ms=common.as_float(row.get("ttft_ms")),
        tokens_per_second=common.as_float(row.get("tokens_per_second")),
    )


def _vote(row: Any, keys: set[str], groups: set[str | None]) -> dict[str, Any] | None:
    """A vote of the file, if it still makes sense here: its group is one of the
    conversation's, and a win names one of its messages."""
    if not isinstance(row, dict):
        return None
    group = common.as_uuid(row.get("group"))
    outcome = row.get("outcome")
    winner = common.as_uuid(row.get("winner"))
    if group not in groups or outcome not in OUTCOMES:
        return None
    if outcome == "win" and winner not in keys:
        return None
    return {
        "group": group,
        "outcome": outcome,
        "winner": winner if outcome == "win" else None,
        "arena": row.get("arena") is True,
        "created_at": common.parse_time(row.get("created_at")),
    }
