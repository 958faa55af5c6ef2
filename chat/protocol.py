"""WebSocket protocol v1: parsing and validating client frames (docs/websocket-api.md).

Pure functions over text, no Django I/O, so every hostile frame can be tested without a socket.
A frame that is not JSON, has a wrong type, a missing or wrong-typed field, or an unknown
``type`` raises ``ProtocolError("invalid_frame", ...)``; the socket stays open.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from inference.options import OptionError, parse_options

CLIENT_ID_MAX = 128
ERROR_CODES = (
    "invalid_frame",
    "not_found",
    "busy",
    "too_long",
    "invalid_option",
    "unknown_model",
    "already_voted",
    "rate_limited",
    "inference_unavailable",
    "internal",
)


class ProtocolError(Exception):
    def __init__(
        self,
        code: str,
        detail: str,
        *,
        client_id: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        assert code in ERROR_CODES, code
        # Details may quote the client (an option's name): a lone surrogate there would make
        # the error frame itself unsendable as UTF-8, so such characters are shown escaped.
        detail = detail.encode("utf-8", "backslashreplace").decode("utf-8")
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.client_id = client_id
        self.retry_after = retry_after

    def frame(self) -> dict[str, Any]:
        frame = error_frame(self.code, self.detail, client_id=self.client_id)
        if self.retry_after is not None:
            frame["retry_after"] = self.retry_after  # seconds, with rate_limited
        return frame


def error_frame(code: str, detail: str, *, client_id: str | None = None) -> dict[str, Any]:
    return {"type": "error", "code": code, "detail": detail, "client_id": client_id}


@dataclass(frozen=True)
class Frame:
    type: str
    conversation: uuid.UUID | None = None
    content: str = ""
    message: uuid.UUID | None = None
    client_id: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    model: str | None = None  # chat.send: the model from this turn on (None: keep it)
    models: tuple[str, ...] = ()  # chat.send: 2 or 3 models answer side by side
    arena: bool = False  # chat.send: two models drawn from the arena pool answer, blind
    group: uuid.UUID | None = None  # chat.vote: the compare group voted on
    winner: str = ""  # chat.vote: a reply's id (canonical UUID text), "tie" or "both_bad"


def _invalid(detail: str, client_id: str | None = None) -> ProtocolError:
    return ProtocolError("invalid_frame", detail, client_id=client_id)


def _uuid(data: dict[str, Any], name: str, *, nullable: bool, cid: str | None) -> uuid.UUID | None:
    if name not in data:
        raise _invalid(f"'{name}' is required", cid)
    value = data[name]
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise _invalid(f"'{name}' must be a UUID string" + (" or null" if nullable else ""), cid)
    try:
        return uuid.UUID(value)
    except ValueError:
        raise _invalid(f"'{name}' is not a valid UUID", cid) from None


def _content(data: dict[str, Any], *, max_chars: int, cid: str | None) -> str:
    if "content" not in data:
        raise _invalid("'content' is required", cid)
    content = data["content"]
    if not isinstance(content, str):
        raise _invalid("'content' must be a string", cid)
    if not content.strip():
        raise _invalid("'content' must not be empty", cid)
    if len(content) > max_chars:
        raise ProtocolError(
            "too_long",
            f"the message is {len(content)} characters; the limit is {max_chars}",
            client_id=cid,
        )
    if "\x00" in content:
        raise _invalid("'content' must not contain NUL characters", cid)
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid("'content' is not valid Unicode (lone surrogate)", cid) from None
    return content


def _client_id(data: dict[str, Any]) -> str | None:
    value = data.get("client_id")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > CLIENT_ID_MAX:
        raise _invalid(f"'client_id' must be a string of at most {CLIENT_ID_MAX} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid("'client_id' is not valid Unicode") from None
    return value


VERDICTS = ("tie", "both_bad")
MAX_COMPARED = 3


def _model_name(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 200


def _compared(data: dict[str, Any], cid: str | None) -> tuple[str, ...]:
    """chat.send's ``models``: 2 or 3 different models' names (absent: none)."""
    models = data.get("models")
    if models is None:
        return ()
    if (
        not isinstance(models, list)
        or not 2 <= len(models) <= MAX_COMPARED
        or not all(_model_name(m) for m in models)
    ):
        raise _invalid(f"'models' must list 2 to {MAX_COMPARED} models' names", cid)
    if len(set(models)) != len(models):
        raise _invalid("'models' names a model twice", cid)
    return tuple(models)


def max_frame_bytes(max_chars: int) -> int:
    """Largest raw frame worth parsing: the content fully \\u-escaped, plus room for the rest."""
    return max_chars * 12 + 64 * 1024


def parse_frame(text: str | None, *, max_chars: int, max_new_tokens_limit: int) -> Frame:
    """Validate one client frame; raise ``ProtocolError`` with the code the client gets."""
    if text is None:
        raise _invalid("frames must be JSON text, not binary")
    if len(text) > max_frame_bytes(max_chars):
        raise ProtocolError("too_long", f"the frame is larger than {max_frame_bytes(max_chars)}")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise _invalid("the frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise _invalid("the frame must be a JSON object")
    cid = _client_id(data)
    kind = data.get("type")
    if not isinstance(kind, str):
        raise _invalid("'type' is required and must be a string", cid)

    if kind == "chat.send":
        options = data.get("options")
        if options is not None and not isinstance(options, dict):
            raise _invalid("'options' must be an object", cid)
        content = _content(data, max_chars=max_chars, cid=cid)
        conversation = _uuid(data, "conversation", nullable=True, cid=cid)
        try:
            parse_options(options, max_new_tokens_limit=max_new_tokens_limit)
        except OptionError as exc:
            raise ProtocolError("invalid_option", str(exc), client_id=cid) from None
        model = data.get("model")
        if model is not None and not _model_name(model):
            raise _invalid("'model' must be a model's name (see /v1/models)", cid)
        models = _compared(data, cid)
        arena = data.get("arena", False)
        if not isinstance(arena, bool):
            raise _invalid("'arena' must be true or false", cid)
        if sum((model is not None, bool(models), arena)) > 1:
            raise _invalid("give at most one of 'model', 'models' and 'arena'", cid)
        return Frame(
            kind,
            conversation,
            content,
            client_id=cid,
            options=options or {},
            model=model,
            models=models,
            arena=arena,
        )
    if kind == "chat.vote":
        conversation = _uuid(data, "conversation", nullable=False, cid=cid)
        group = _uuid(data, "group", nullable=False, cid=cid)
        winner = data.get("winner")
        if winner not in VERDICTS:
            if not isinstance(winner, str):
                raise _invalid('\'winner\' must be a reply\'s id, "tie" or "both_bad"', cid)
            try:
                winner = str(uuid.UUID(winner))
            except ValueError:
                raise _invalid(
                    '\'winner\' must be a reply\'s id, "tie" or "both_bad"', cid
                ) from None
        return Frame(kind, conversation, client_id=cid, group=group, winner=winner)
    if kind in ("chat.stop", "chat.regenerate", "chat.subscribe"):
        return Frame(kind, _uuid(data, "conversation", nullable=False, cid=cid), client_id=cid)
    if kind == "chat.edit":
        conversation = _uuid(data, "conversation", nullable=False, cid=cid)
        message = _uuid(data, "message", nullable=False, cid=cid)
        content = _content(data, max_chars=max_chars, cid=cid)
        return Frame(kind, conversation, content, message=message, client_id=cid)
    raise _invalid(f"unknown frame type {kind[:40]!r}", cid)
