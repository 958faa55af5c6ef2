"""Open WebUI's chat export (Settings → Chats → Export, or one chat's "Export chat (.json)"):
a list of ``{id, user_id, title, chat, created_at, updated_at, archived, pinned, ...}``.

``chat.history`` holds the messages as a tree ({id: {id, parentId, childrenIds, role,
content, timestamp, model, files, ...}}, ``currentId`` the last one shown); we take the branch
from ``currentId`` up to the root, as for ChatGPT. Older exports have only the flat
``chat.messages`` list, taken as it is. A system message becomes the conversation's system
prompt; attached files and images leave a note.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _

from portability.importers import common
from portability.importers.common import ImportRefused

KIND = "openwebui"

# Open WebUI's names for the options we understand (its "params"), ours on the right.
PARAMS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "max_tokens": "max_new_tokens",
    "seed": "seed",
    "stop": "stop",
}


def matches(keys: set[str]) -> bool:
    return "chat" in keys


def normalize(raw: Any, index: int) -> dict[str, Any]:
    """One chat of the file, normalized (portability/importers/common.py)."""
    if not isinstance(raw, dict):
        raise ImportRefused(
            _("%(what)s is not a conversation (an object was expected).")
            % {"what": common.describe(index, raw)}
        )
    chat = raw.get("chat")
    if not isinstance(chat, dict):
        raise ImportRefused(
            _("%(what)s has no “chat”: is this an Open WebUI chat export?")
            % {"what": common.describe(index, raw)}
        )
    history = chat.get("history")
    if isinstance(history, dict) and isinstance(history.get("messages"), dict):
        branch = common.walk_branch(
            history["messages"],
            history.get("currentId"),
            parent_key="parentId",
            children_key="childrenIds",
            time_key="timestamp",
        )
    elif isinstance(chat.get("messages"), list):
        branch = [m for m in chat["messages"] if isinstance(m, dict)]
    else:
        raise ImportRefused(
            _("%(what)s has no messages (neither “history” nor “messages”).")
            % {"what": common.describe(index, raw)}
        )
    created = common.parse_time(raw.get("created_at")) or common.parse_time(chat.get("timestamp"))
    params = chat.get("params") if isinstance(chat.get("params"), dict) else {}
    system_prompt = chat.get("system") or params.get("system")
    messages: list[dict[str, Any]] = []
    for turn in branch:
        role = turn.get("role")
        if role == "system" and not messages and not system_prompt:
            system_prompt = turn.get("content")
            continue
        if role not in ("user", "assistant"):
            continue
        text = _content(turn)
        if not text.strip():
            continue
        model = turn.get("model") if role == "assistant" else ""
        status = "failed" if turn.get("error") else "complete"
        if role == "assistant" and turn.get("done") is False:
            status = "cancelled"
        messages.append(
            common.message(
                key=str(turn.get("id") or len(messages)),
                position=len(messages),
                role=role,
                content=common.clean_text(text),
                created_at=common.parse_time(turn.get("timestamp")),
                model=model if isinstance(model, str) else "",
                status=status,
            )
        )
    common.fill_times(messages, created)
    original = raw.get("id") or chat.get("id")
    if not isinstance(original, str) or not original.strip():
        original = common.stable_id(raw.get("title"), raw.get("created_at"), len(branch))
    models = chat.get("models")
    model = models[0] if isinstance(models, list) and models and isinstance(models[0], str) else ""
    return common.conversation(
        source_id=common.source_id(KIND, original),
        title=common.clean_line(raw.get("title") or chat.get("title"), common.TITLE_MAX),
        messages=messages,
        created_at=created,
        updated_at=common.parse_time(raw.get("updated_at")),
        model=common.clean_line(model, common.MODEL_MAX),
        system_prompt=common.clean_text(system_prompt),
        options=common.clean_options({ours: params.get(theirs) for theirs, ours in PARAMS.items()}),
        pinned=raw.get("pinned") is True,
        archived=raw.get("archived") is True,
    )


def _content(turn: dict[str, Any]) -> str:
    """The message's text (a string, or OpenAI-style parts), then a note per attachment."""
    content = turn.get("content")
    pieces: list[str] = []
    if isinstance(content, str):
        pieces.append(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, dict) and part.get("type") == "text":
                pieces.append(str(part.get("text") or ""))
            elif isinstance(part, dict):
                image = "image" in str(part.get("type"))
                pieces.append(common.omitted("image" if image else "file"))
    files = turn.get("files")
    if isinstance(files, list):
        for attached in files:
            if isinstance(attached, dict):
                kind = str(attached.get("type") or "")
                pieces.append(common.omitted("image" if kind == "image" else "file"))
    return "\n\n".join(p for p in pieces if p)
