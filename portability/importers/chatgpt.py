"""ChatGPT's data export: ``conversations.json`` (alone, or in the ZIP it comes in).

Each conversation holds its messages as a tree, ``mapping`` (node id → {id, message, parent,
children}): an edited question or a regenerated answer is a sibling branch. We take the branch
the person last saw, from ``current_node`` up to the root. Left out: nodes without a message,
system and tool messages, hidden ones (custom instructions), the assistant's calls to tools
(``recipient`` other than "all"), its hidden reasoning, and messages with nothing in them.
Parts that are not text (images, audio, files) leave a note such as "[image omitted]".
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _

from portability.importers import common
from portability.importers.common import ImportRefused

KIND = "chatgpt"

# Content types that hold nothing a reader of the conversation saw as a message.
HIDDEN_CONTENT = {
    "thoughts",
    "reasoning_recap",
    "user_editable_context",
    "model_editable_context",
    "system_error",
}
AUDIO_PARTS = {"audio_asset_pointer", "real_time_user_audio_video_asset_pointer"}


def matches(keys: set[str]) -> bool:
    return "mapping" in keys


def normalize(raw: Any, index: int) -> dict[str, Any]:
    """One conversation of the file, normalized (portability/importers/common.py)."""
    if not isinstance(raw, dict):
        raise ImportRefused(
            _("%(what)s is not a conversation (an object was expected).")
            % {"what": common.describe(index, raw)}
        )
    mapping = raw.get("mapping")
    if not isinstance(mapping, dict):
        raise ImportRefused(
            _("%(what)s has no “mapping” of messages: is this ChatGPT's conversations.json?")
            % {"what": common.describe(index, raw)}
        )
    created = common.parse_time(raw.get("create_time"))
    original = raw.get("conversation_id") or raw.get("id")
    if not isinstance(original, str) or not original.strip():
        original = common.stable_id(raw.get("title"), raw.get("create_time"), sorted(mapping))
    branch = common.walk_branch(
        mapping,
        raw.get("current_node"),
        parent_key="parent",
        children_key="children",
        time_key="create_time",
    )
    messages: list[dict[str, Any]] = []
    for node in branch:
        turn = _message(node.get("message"), node_id=node.get("id"), position=len(messages))
        if turn is not None:
            messages.append(turn)
    common.fill_times(messages, created)
    models = [m["model"] for m in messages if m["model"]]
    model = raw.get("default_model_slug") if isinstance(raw.get("default_model_slug"), str) else ""
    return common.conversation(
        source_id=common.source_id(KIND, original),
        title=common.clean_line(raw.get("title"), common.TITLE_MAX),
        messages=messages,
        created_at=created,
        updated_at=common.parse_time(raw.get("update_time")),
        model=common.clean_line(model or (models[-1] if models else ""), common.MODEL_MAX),
        archived=raw.get("is_archived") is True,
    )


def _message(message: Any, *, node_id: Any, position: int) -> dict[str, Any] | None:
    if not isinstance(message, dict):
        return None  # the root placeholder, and other empty nodes
    author = message.get("author")
    role = author.get("role") if isinstance(author, dict) else None
    if role not in ("user", "assistant"):
        return None  # system and tool messages
    metadata = message.get("metadata") if isinstance(message.get("metadata"), dict) else {}
    if metadata.get("is_visually_hidden_from_conversation") or metadata.get(
        "is_user_system_message"
    ):
        return None
    if message.get("recipient") not in (None, "all"):
        return None  # the assistant calling a tool (code to run, a search, an image)
    text = _content(message.get("content"))
    if not text.strip():
        return None
    unfinished = message.get("status") in ("in_progress", "finished_partial_completion")
    model = metadata.get("model_slug") if role == "assistant" else ""
    return common.message(
        key=str(message.get("id") or node_id or position),
        position=position,
        role=role,
        content=common.clean_text(text),
        created_at=common.parse_time(message.get("create_time")),
        model=model if isinstance(model, str) else "",
        status="cancelled" if unfinished else "complete",
    )


def _content(content: Any) -> str:
    """The text a person saw, with a note for each part that is not text."""
    if not isinstance(content, dict):
        return ""
    kind = content.get("content_type")
    if kind in HIDDEN_CONTENT:
        return ""
    if kind == "code":
        language = content.get("language")
        language = language if isinstance(language, str) and language != "unknown" else ""
        code = content.get("text") if isinstance(content.get("text"), str) else ""
        return f"```{common.clean_line(language, 30)}\n{code}\n```" if code.strip() else ""
    parts = content.get("parts")
    if isinstance(parts, list):
        return "\n\n".join(p for p in (_part(part) for part in parts) if p)
    if isinstance(content.get("text"), str):
        return str(content["text"])
    return common.omitted(str(kind)) if kind and kind != "text" else ""


def _part(part: Any) -> str:
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        return ""
    kind = part.get("content_type")
    if kind == "audio_transcription" and isinstance(part.get("text"), str):
        return str(part["text"])  # what was said in voice mode
    if kind == "image_asset_pointer":
        return common.omitted("image")
    if kind in AUDIO_PARTS:
        return common.omitted("audio")
    if isinstance(kind, str) and "video" in kind:
        return common.omitted("video")
    return common.omitted("file")
