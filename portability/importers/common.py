"""The normalized form every importer produces, and the helpers they share.

A normalized conversation is plain JSON (it waits in the database as ``ImportItem.data``)::

    {"source_id": "chatgpt:<id>", "original_id": "<uuid>" | None, "title": ..., "created_at":
     ISO | None, "updated_at": ISO | None, "model": ..., "system_prompt": ..., "options": {...},
     "pinned": bool, "archived": bool, "source": "chat" | "api", "retain_text": bool,
     "messages": [{"key": ..., "position": int, "role": ..., "content": ..., "status": ...,
                   "created_at": ISO | None, "model": ..., "feedback": -1 | 0 | 1,
                   "superseded": bool, "replaces": key | None, "group": str | None,
                   "slot": int | None, "blind": bool, "prompt_tokens": int | None,
                   "completion_tokens": int | None, "ttft_ms": float | None,
                   "tokens_per_second": float | None}],
     "votes": [{"group": str, "outcome": ..., "winner": key | None, "arena": bool,
                "created_at": ISO | None}]}

Everything in it is already bounded and cleaned: text without NUL or lone surrogates, cut to
the server's limits with a note, times as aware ISO strings. ``key`` names a message inside
its conversation (``replaces`` and ``winner`` point at keys); the writer gives every message
a new id.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.utils.translation import gettext as _

# Per file and per conversation: a file past these is refused or the conversation skipped
# (docs/import.md). Depth: the deepest real export (ChatGPT's metadata) nests about 12.
MAX_CONVERSATIONS = 50_000
MAX_MESSAGES = 5_000
MAX_DEPTH = 64
TITLE_MAX = 200
MODEL_MAX = 200
SOURCE_ID_MAX = 250

ROLES = ("user", "assistant", "system")
STATUSES = ("complete", "cancelled", "failed")

# Why a conversation of a good file is not imported (the codes stored on the job; the
# sentences are import_services.REASONS).
SKIP_EMPTY = "empty"
SKIP_TOO_LONG = "too_many_messages"
SKIP_ALREADY = "already_imported"


class ImportRefused(Exception):
    """The file as a whole is not taken; ``message`` says why, for the person who sent it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def clean_text(value: Any, *, limit: int | None = None) -> str:
    """Text that PostgreSQL and our pages take: a string (anything else is ''), without NUL
    or lone surrogates, at most ``limit`` characters (the rest cut off, with a note)."""
    if not isinstance(value, str):
        return ""
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON)
        value = value.encode("utf-8", "replace").decode("utf-8")
    limit = settings.STELLARCHAT_MAX_MESSAGE_CHARS if limit is None else limit
    if len(value) > limit:
        cut = len(value) - limit
        value = value[:limit] + "\n\n" + _("[%(count)d characters cut on import]") % {"count": cut}
    return value


def clean_line(value: Any, limit: int) -> str:
    """A title or a name: one line, trimmed, cut to ``limit`` without a note."""
    text = clean_text(value, limit=10 * limit)
    return " ".join(text.split())[:limit]


def omitted(kind: str) -> str:
    """The note left where a part that is not text was (an image, a file, audio)."""
    notes = {
        "image": _("[image omitted]"),
        "audio": _("[audio omitted]"),
        "video": _("[video omitted]"),
        "file": _("[file omitted]"),
    }
    return notes.get(kind) or _("[%(kind)s omitted]") % {"kind": clean_line(kind, 60)}


_EPOCH_MIN = 0  # 1970
_EPOCH_MAX = 4_102_444_800  # 2100


def parse_time(value: Any) -> str | None:
    """An aware ISO 8601 time from epoch seconds (or ms, µs, ns: told apart by size) or an
    ISO string (without an offset: UTC); None for anything else or out of 1970-2100."""
    if isinstance(value, str):
        if not 10 <= len(value) <= 40:
            return None
        try:
            moment = datetime.fromisoformat(value)  # "Z" included (Python 3.11)
        except ValueError:
            return None
        if not 1970 <= moment.year < 2100:
            return None
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC).isoformat()
        return value  # already what we store
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if not math.isfinite(number):
        return None
    for scale in (1, 1e3, 1e6, 1e9):
        if abs(number / scale) < _EPOCH_MAX:
            number /= scale
            break
    if not _EPOCH_MIN <= number < _EPOCH_MAX:
        return None
    return datetime.fromtimestamp(number, tz=UTC).isoformat()


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def as_uuid(value: Any) -> str | None:
    """A UUID in its canonical form, or None (the fast path: it is one already)."""
    if not isinstance(value, str):
        return None
    if _UUID.fullmatch(value):
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def as_int(value: Any, *, low: int = 0, high: int = 2**31 - 1) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    number = int(value)
    return number if low <= number <= high else None


def as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def clean_options(raw: Any) -> dict[str, Any]:
    """Generation options this server understands, each checked the way a person's own are
    (inference/options.py); unknown or invalid ones are left out rather than refused."""
    from inference.options import FIELDS, OptionError, parse_options

    if not isinstance(raw, dict):
        return {}
    kept: dict[str, Any] = {}
    for name in FIELDS:
        value = raw.get(name)
        if value is None or (isinstance(value, dict | list) and name != "stop"):
            continue
        try:
            parse_options({name: value}, max_new_tokens_limit=settings.STELLARCHAT_MAX_NEW_TOKENS)
        except OptionError:
            continue
        kept[name] = value
    return kept


def stable_id(*parts: Any) -> str:
    """An id for a conversation its file names none for, the same every time the same file
    is read (so importing it again still adds nothing)."""
    digest = hashlib.sha256(repr(parts).encode("utf-8", "replace")).hexdigest()
    return "sha256-" + digest[:32]


def source_id(kind: str, original: Any) -> str:
    return f"{kind}:{clean_line(str(original), SOURCE_ID_MAX - len(kind) - 1)}"


def message(
    *,
    key: str,
    position: int,
    role: str,
    content: str,
    created_at: str | None,
    model: str = "",
    status: str = "complete",
    **extra: Any,
) -> dict[str, Any]:
    """One normalized message, with the defaults of a message made here."""
    return {
        "key": key,
        "position": position,
        "role": role,
        "content": content,
        "status": status,
        "created_at": created_at,
        "model": clean_line(model, MODEL_MAX),
        "feedback": 0,
        "superseded": False,
        "replaces": None,
        "group": None,
        "slot": None,
        "blind": False,
        "prompt_tokens": None,
        "completion_tokens": None,
        "ttft_ms": None,
        "tokens_per_second": None,
        **extra,
    }


def conversation(
    *,
    source_id: str,
    title: str,
    messages: list[dict[str, Any]],
    created_at: str | None,
    updated_at: str | None,
    **extra: Any,
) -> dict[str, Any]:
    """One normalized conversation: times filled from its messages where the file has none,
    and ``skip`` set when it cannot be imported (nothing left to import, too long)."""
    times = [m["created_at"] for m in messages if m["created_at"]]
    created_at = created_at or (min(times) if times else None)
    updated_at = updated_at or (max(times) if times else created_at)
    data = {
        "source_id": source_id,
        "original_id": None,
        "title": clean_line(title, TITLE_MAX),
        "created_at": created_at,
        "updated_at": updated_at,
        "model": "",
        "system_prompt": "",
        "options": {},
        "pinned": False,
        "archived": False,
        "source": "chat",
        "retain_text": True,
        "messages": messages,
        "votes": [],
        "skip": None,
        **extra,
    }
    if not messages:
        data["skip"] = SKIP_EMPTY
    elif len(messages) > MAX_MESSAGES:
        data["skip"] = SKIP_TOO_LONG
    return data


def fill_times(messages: list[dict[str, Any]], fallback: str | None) -> None:
    """A message the file gives no time takes the time of the one before it (its place in
    the conversation is what matters), or the conversation's."""
    last = fallback
    for m in messages:
        if m["created_at"]:
            last = m["created_at"]
        else:
            m["created_at"] = last


def describe(index: int, raw: Any) -> str:
    """How a refusal names a conversation: its number in the file and its title if any."""
    title = clean_line(raw.get("title"), 60) if isinstance(raw, dict) else ""
    if title:
        return _("Conversation %(number)d (“%(title)s”)") % {"number": index + 1, "title": title}
    return _("Conversation %(number)d") % {"number": index + 1}


def walk_branch(
    nodes: dict[str, Any], leaf: Any, *, parent_key: str, children_key: str, time_key: str
) -> list[dict[str, Any]]:
    """The branch a person last saw of a message tree (ChatGPT's mapping, Open WebUI's
    history): from ``leaf`` up through the parents to the root, in reading order.

    Without a usable leaf, the newest leaf (a node without children) is taken. Cycles and
    dangling parents end the walk rather than loop.
    """
    if not isinstance(leaf, str) or not isinstance(nodes.get(leaf), dict):
        leaves = [
            (k, v) for k, v in nodes.items() if isinstance(v, dict) and not v.get(children_key)
        ]
        if not leaves:
            return []
        leaf = max(leaves, key=lambda kv: _sort_time(kv[1], time_key))[0]
    branch: list[dict[str, Any]] = []
    seen: set[str] = set()
    current: Any = leaf
    while isinstance(current, str) and current not in seen:
        node = nodes.get(current)
        if not isinstance(node, dict):
            break
        seen.add(current)
        branch.append(node)
        current = node.get(parent_key)
    branch.reverse()
    return branch


def _sort_time(node: dict[str, Any], time_key: str) -> float:
    inner = node.get("message") if isinstance(node.get("message"), dict) else node
    value = inner.get(time_key) if isinstance(inner, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
