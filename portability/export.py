"""A person's whole data as a ZIP, written as a stream of bytes (docs/export-format.md).

``export_zip`` is a plain generator: the web view pulls it from a thread of its own and the
``export_user`` command writes it to a file, so both give the same bytes. Nothing is ever held
whole: ``conversations.json`` is written conversation by conversation from three database
cursors merged in one pass (conversations, messages, votes, each ordered the same way), the
ZIP is written by the standard library into a sink that is emptied after each step, and each
Markdown file is written while its messages are read.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone
from django.utils.text import slugify

from chat.models import Conversation, Message, Vote

FORMAT = "stellarchat-export"
VERSION = 1
CHUNK_BYTES = 64 * 1024  # what one pull hands on: few enough thread hops, little memory
ROWS_PER_FETCH = 500
SLUG_MAX = 50

CONVERSATION_FIELDS = (
    "id",
    "title",
    "created_at",
    "updated_at",
    "model_name",
    "system_prompt",
    "options",
    "pinned",
    "archived",
    "source",
    "retain_text",
)
MESSAGE_FIELDS = (
    "id",
    "conversation_id",
    "position",
    "role",
    "content",
    "status",
    "created_at",
    "model_name",
    "feedback",
    "superseded",
    "replaces_id",
    "group",
    "slot",
    "blind",
    "prompt_tokens",
    "completion_tokens",
    "ttft_ms",
    "tokens_per_second",
)
VOTE_FIELDS = ("conversation_id", "group", "outcome", "winner_id", "arena", "created_at")

README = """\
Your StellarChat data
=====================

conversations.json   Every conversation of your account: messages in order with their
                     earlier versions, titles, timestamps, models, feedback, options and
                     votes. The format ("stellarchat-export", version 1) is documented in
                     docs/export-format.md of StellarChat; Settings -> Import of any
                     StellarChat server takes this ZIP back.
conversations/       One Markdown file per conversation, for reading: the conversation as
                     it stands, then its earlier versions.
"""


class _Sink:
    """The unseekable stream zipfile writes into: it keeps what was written until drained,
    so zipfile streams (data descriptors after each entry) and nothing accumulates."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        self.size = 0
        return data


def export_zip(user: Any, *, chunk_bytes: int | None = None) -> Iterator[bytes]:
    """The ZIP of everything ``user`` owns, in chunks of about ``chunk_bytes``."""
    limit = chunk_bytes or CHUNK_BYTES
    sink = _Sink()
    exported_at = timezone.now()
    with _snapshot(), zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open(_entry("conversations.json", exported_at), "w", force_zip64=True) as out:
            for piece in conversations_json(user, exported_at=exported_at):
                out.write(piece)
                if sink.size >= limit:
                    yield sink.drain()
        names: set[str] = set()
        for conversation, messages in _threads(user, markdown=True):
            name = markdown_name(conversation, taken=names)
            with zf.open(_entry(name, conversation["updated_at"]), "w", force_zip64=True) as out:
                for text in conversation_markdown(conversation, messages):
                    out.write(text.encode())
                    if sink.size >= limit:
                        yield sink.drain()
        zf.writestr(_entry("README.txt", exported_at), README)
    yield sink.drain()  # the rest, with the central directory written on close


def summary(*, user: Any) -> dict[str, int]:
    """How much the download holds, for the page that offers it."""
    return {"conversations": Conversation.objects.filter(owner=user).count()}


def _entry(name: str, when: datetime) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_zip_time(when))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16  # a plain readable file when unpacked
    return info


def _zip_time(when: datetime) -> tuple[int, int, int, int, int, int]:
    utc = when.astimezone(UTC)
    return (max(utc.year, 1980), utc.month, utc.day, utc.hour, utc.minute, utc.second)


@contextmanager
def _snapshot() -> Iterator[None]:
    """One consistent view of the person's data for the whole file: the three cursors line
    up, and the Markdown says what the JSON says even while the person keeps chatting.
    PostgreSQL needs REPEATABLE READ for that (each statement has its own snapshot otherwise);
    a SQLite read transaction is one snapshot already. Inside a transaction already (a test's),
    that one is used as it is."""
    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


# --- conversations.json ---------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _iso(value: datetime) -> str:
    return value.isoformat()


def _uuid(value: Any) -> str | None:
    return None if value is None else str(value)


def conversations_json(user: Any, *, exported_at: datetime) -> Iterator[bytes]:
    """``conversations.json`` in pieces: a conversation's messages are written as they are read,
    so the whole document never exists in memory."""
    head = (
        f'{{"format": {_dumps(FORMAT)}, "version": {VERSION}, '
        f'"exported_at": {_dumps(_iso(exported_at))}, '
        f'"user": {_dumps({"username": user.get_username()})},\n"conversations": ['
    )
    yield head.encode()
    first = True
    votes = _ByConversation(_vote_rows(user))
    for conversation, messages in _threads(user, markdown=False):
        # The conversation's own fields, then its lists, opened by hand: the object's closing
        # brace is left off so "messages" can follow as a stream.
        fields = _dumps(conversation_record(conversation))[:-1]
        yield f'{"" if first else ","}\n{fields}, "messages": ['.encode()
        first = False
        sep = "\n"
        for message in messages:
            yield f"{sep}{_dumps(message_record(message))}".encode()
            sep = ",\n"
        records = [vote_record(v) for v in votes.take(conversation["id"])]
        yield f'], "votes": {_dumps(records)}}}'.encode()
    yield b"\n]}\n"


def conversation_record(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "title": row["title"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "model": row["model_name"],
        "system_prompt": row["system_prompt"],
        "options": row["options"] or {},
        "pinned": row["pinned"],
        "archived": row["archived"],
        "source": row["source"],
    }


def message_record(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "position": row["position"],
        "role": row["role"],
        "content": row["content"],
        "status": row["status"],
        "created_at": _iso(row["created_at"]),
        # An arena reply not yet voted on stays unnamed here as everywhere the person looks:
        # the vote it is hidden for may still come.
        "model": "" if row["blind"] else row["model_name"],
        "feedback": row["feedback"],
        "superseded": row["superseded"],
        "replaces": _uuid(row["replaces_id"]),
        "group": _uuid(row["group"]),
        "slot": row["slot"],
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
        "ttft_ms": row["ttft_ms"],
        "tokens_per_second": row["tokens_per_second"],
    }


def vote_record(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "group": str(row["group"]),
        "outcome": row["outcome"],
        "winner": _uuid(row["winner_id"]),
        "arena": row["arena"],
        "created_at": _iso(row["created_at"]),
    }


# --- reading: three cursors in one order ----------------------------------------------------

# Conversations oldest first; every other query is sorted by its conversation the same way.
_BY_CONVERSATION = ("conversation__created_at", "conversation_id")


def _conversation_rows(user: Any) -> Iterator[dict[str, Any]]:
    return (
        Conversation.objects.filter(owner=user)
        .order_by("created_at", "id")
        .values(*CONVERSATION_FIELDS)
        .iterator(chunk_size=ROWS_PER_FETCH)
    )


def _message_rows(user: Any, *, markdown: bool) -> Iterator[dict[str, Any]]:
    """The JSON takes every message in position order; the Markdown takes the current thread
    first and the earlier versions after it (``superseded`` sorts False first)."""
    order = ("superseded", "position") if markdown else ("position",)
    return (
        Message.objects.filter(conversation__owner=user)
        .order_by(*_BY_CONVERSATION, *order)
        .values(*MESSAGE_FIELDS)
        .iterator(chunk_size=ROWS_PER_FETCH)
    )


def _vote_rows(user: Any) -> Iterator[dict[str, Any]]:
    return (
        Vote.objects.filter(conversation__owner=user)
        .order_by(*_BY_CONVERSATION, "created_at")
        .values(*VOTE_FIELDS)
        .iterator(chunk_size=ROWS_PER_FETCH)
    )


class _ByConversation:
    """Rows sorted by conversation, handed out one conversation at a time: a merge join with
    the conversations' cursor, so neither side is held whole."""

    def __init__(self, rows: Iterable[dict[str, Any]]) -> None:
        self._rows = iter(rows)
        self._head = next(self._rows, None)
        self._current: Any = None

    def take(self, conversation_id: Any) -> Iterator[dict[str, Any]]:
        # Whatever a caller left unread of the previous conversation is skipped first.
        while self._head is not None and self._head["conversation_id"] == self._current:
            self._head = next(self._rows, None)
        self._current = conversation_id
        while self._head is not None and self._head["conversation_id"] == conversation_id:
            row = self._head
            self._head = next(self._rows, None)
            yield row


def _threads(
    user: Any, *, markdown: bool
) -> Iterator[tuple[dict[str, Any], Iterator[dict[str, Any]]]]:
    """(conversation, its messages) for each of the user's conversations, oldest first."""
    messages = _ByConversation(_message_rows(user, markdown=markdown))
    for conversation in _conversation_rows(user):
        yield conversation, messages.take(conversation["id"])


# --- Markdown -------------------------------------------------------------------------------


def markdown_name(conversation: dict[str, Any], *, taken: set[str]) -> str:
    """``conversations/<date>-<slug of title>-<first 8 of id>.md``, unique within the ZIP.
    The slug keeps letters of any script and drops everything else (slashes, dots, controls),
    so no title can make a path."""
    day = conversation["created_at"].astimezone(UTC).date().isoformat()
    slug = slugify(conversation["title"], allow_unicode=True)[:SLUG_MAX].strip("-_") or "untitled"
    stem = f"conversations/{day}-{slug}-{str(conversation['id'])[:8]}"
    name, n = f"{stem}.md", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}.md"
    taken.add(name)
    return name


_STATUS_NOTE = {
    Message.Status.CANCELLED: "stopped",
    Message.Status.FAILED: "failed",
    Message.Status.STREAMING: "still being written at export",
}


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def speaker(message: dict[str, Any]) -> str:
    """Who said it, as the chat page says it: a blind arena reply is "Model A" until its vote;
    a compare reply carries its letter."""
    if message["role"] == Message.Role.USER:
        return "You"
    if message["role"] == Message.Role.SYSTEM:
        return "System"
    letter = "ABC"[message["slot"]] if message["slot"] in (0, 1, 2) else "?"
    if message["blind"]:
        return f"Model {letter}"
    name = message["model_name"] or "Assistant"
    return f"{letter} · {name}" if message["group"] is not None else name


def conversation_markdown(
    conversation: dict[str, Any], messages: Iterable[dict[str, Any]]
) -> Iterator[str]:
    """One conversation for reading: its details, the thread as it stands, then the earlier
    versions (edited turns, regenerated replies, the replies a vote passed over), each under
    a heading naming its speaker. Messages arrive current thread first (see _message_rows)."""
    title = _one_line(conversation["title"]) or "Untitled conversation"
    lines = [
        f"# {title}",
        "",
        f"- Started: {_when(conversation['created_at'])}",
        f"- Last activity: {_when(conversation['updated_at'])}",
        f"- Model: {conversation['model_name'] or 'the server default'}",
    ]
    if conversation["source"] == Conversation.Source.API:
        lines.append("- Made through the API")
    if not conversation["retain_text"]:
        lines.append("- Texts not kept (an API key set not to store conversations)")
    lines.append(f"- Id: {conversation['id']}")
    if conversation["system_prompt"].strip():
        lines += ["", "## System prompt", "", conversation["system_prompt"]]
    yield "\n".join(lines) + "\n"
    in_versions = False
    for m in messages:
        if m["superseded"] and not in_versions:
            in_versions = True
            yield "\n---\n\n## Earlier versions\n"
        notes = []
        if m["status"] in _STATUS_NOTE:
            notes.append(_STATUS_NOTE[m["status"]])
        if m["feedback"]:
            notes.append("👍" if m["feedback"] > 0 else "👎")
        suffix = f" ({', '.join(notes)})" if notes else ""
        heading = "###" if in_versions else "##"
        yield f"\n{heading} {speaker(m)}{suffix}\n\n{m['content']}\n"
