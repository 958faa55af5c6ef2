"""The OpenAI chat-completions request and response shapes, as pure functions.

Requests are validated strictly, like the WebSocket protocol: a wrong type, an out-of-range
value or a parameter we do not implement is a 400 naming the parameter, never silently
ignored (a client asking for ``n: 3`` or tools must hear that it will not get them).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from inference.options import OptionError, parse_options

MAX_MESSAGES = 1000
ROLES = {"system", "developer", "user", "assistant"}
# Accepted when they ask for nothing beyond the default; anything else is refused.
NEUTRAL = {
    "n": (1, None),
    "presence_penalty": (0, 0.0, None),
    "frequency_penalty": (0, 0.0, None),
    "logprobs": (False, None),
    "top_logprobs": (None,),
    "tools": (None,),
    "tool_choice": (None, "none"),
    "parallel_tool_calls": (None,),
    "functions": (None,),
    "function_call": (None, "none"),
    "logit_bias": (None,),
    "service_tier": (None, "auto", "default"),
    "store": (None, False),
    "metadata": (None,),
}
IGNORED = {"user"}  # an end-user id for the provider's abuse tracking: meaningless here
KNOWN = (
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "top_k",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "response_format",
    }
    | set(NEUTRAL)
    | IGNORED
)
OPTION_PARAM = {"max_new_tokens": "max_tokens"}


class ApiError(Exception):
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def invalid(message: str, *, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    system_prompt: str
    turns: list[tuple[str, str]]  # user/assistant, in order; the last is the user's
    options: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    include_usage: bool = False


def _content(value: Any, index: int, role: str, *, max_chars: int) -> str:
    param = f"messages[{index}].content"
    if value is None and role == "assistant":
        return ""
    if isinstance(value, list):  # content parts: text only
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise invalid("only text content parts are supported", param=param)
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid("a text part needs a string 'text'", param=param)
            texts.append(text)
        value = "".join(texts)
    if not isinstance(value, str):
        raise invalid("content must be a string or a list of text parts", param=param)
    if "\x00" in value:
        raise invalid("content must not contain NUL characters", param=param)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no text can hold it, nor the database
        raise invalid("content must be valid Unicode (no lone surrogates)", param=param) from None
    if len(value) > max_chars:
        raise invalid(
            f"content is {len(value)} characters; at most {max_chars} are allowed",
            param=param,
            code="string_above_max_length",
        )
    return value


def _messages(value: Any, *, max_chars: int) -> tuple[str, list[tuple[str, str]]]:
    if not isinstance(value, list) or not value:
        raise invalid("'messages' must be a non-empty array", param="messages")
    if len(value) > MAX_MESSAGES:
        raise invalid(f"at most {MAX_MESSAGES} messages are allowed", param="messages")
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise invalid("each message must be an object", param=f"messages[{index}]")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise invalid(
                "role must be one of system, developer, user, assistant",
                param=f"messages[{index}].role",
            )
        if message.get("tool_calls") or message.get("function_call"):
            raise invalid("tool calls are not supported", param=f"messages[{index}]")
        content = _content(message.get("content"), index, role, max_chars=max_chars)
        if role in {"system", "developer"}:
            # Instructions, wherever they appear, become the conversation's system prompt.
            if content.strip():
                system.append(content)
        else:
            turns.append((role, content))
    if turns and turns[-1][0] == "user" and not turns[-1][1].strip():
        raise invalid("the last user message is empty", param=f"messages[{len(value) - 1}]")
    if not turns or turns[-1][0] != "user":
        raise invalid(
            "the last message (after any system ones) must be the user's", param="messages"
        )
    return "\n\n".join(system), turns


def _neutral(value: Any, allowed: tuple[Any, ...]) -> bool:
    """Whether a value asks for nothing (exact type: ``0`` is not ``False``; [] is nothing)."""
    if value is None or value == [] or value == {}:
        return True
    return any(value == ok and type(value) is type(ok) for ok in allowed if ok is not None)


def parse_request(body: bytes, *, max_chars: int, max_new_tokens_limit: int) -> CompletionRequest:
    """Validate a /v1/chat/completions body; raise ``ApiError`` (400) naming the problem."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[…
        raise invalid("the body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise invalid("the body must be a JSON object", code="invalid_json")
    unknown = sorted(set(data) - KNOWN)
    if unknown:
        raise invalid(
            f"unrecognized parameter: {unknown[0]}", param=unknown[0], code="unknown_parameter"
        )
    for name, neutral in NEUTRAL.items():
        if name in data and not _neutral(data[name], neutral):
            raise invalid(f"'{name}' is not supported here", param=name, code="unsupported_value")
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise invalid("'model' is required: a model id from GET /v1/models", param="model")
    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid("'stream' must be a boolean", param="stream")
    include_usage = False
    stream_options = data.get("stream_options")
    if stream_options is not None:
        if not isinstance(stream_options, dict) or set(stream_options) - {"include_usage"}:
            raise invalid("'stream_options' may only hold include_usage", param="stream_options")
        include_usage = stream_options.get("include_usage", False)
        if not isinstance(include_usage, bool):
            raise invalid("include_usage must be a boolean", param="stream_options")
        if not stream:
            raise invalid("'stream_options' needs stream: true", param="stream_options")
    response_format = data.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise invalid(
            'only response_format {"type": "text"} is supported',
            param="response_format",
            code="unsupported_value",
        )

    raw: dict[str, Any] = {}
    for name in ("temperature", "top_p", "top_k", "seed"):
        if data.get(name) is not None:
            raw[name] = data[name]
    max_tokens = data.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = data.get("max_tokens")
    if max_tokens is not None:
        raw["max_new_tokens"] = max_tokens
    stop = data.get("stop")
    if stop is not None:
        raw["stop"] = [stop] if isinstance(stop, str) else stop
    try:
        parse_options(raw, max_new_tokens_limit=max_new_tokens_limit)
    except OptionError as exc:
        param = OPTION_PARAM.get(exc.field, exc.field)
        if param == "max_tokens" and "max_completion_tokens" in data:
            param = "max_completion_tokens"
        raise invalid(f"{param}: {exc.message}", param=param) from None

    system_prompt, turns = _messages(data.get("messages"), max_chars=max_chars)
    return CompletionRequest(
        model=model.strip(),
        system_prompt=system_prompt,
        turns=turns,
        options=raw,
        stream=stream,
        include_usage=include_usage,
    )


FINISH = {"stop": "stop", "length": "length", "cancelled": "stop"}


def completion_id(message_id: Any) -> str:
    return f"chatcmpl-{str(message_id).replace('-', '')}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(
    *,
    message_id: Any,
    model: str,
    created: int,
    text: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> dict[str, Any]:
    return {
        "id": completion_id(message_id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": FINISH.get(finish_reason, "stop"),
            }
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chunk(
    *,
    message_id: Any,
    model: str,
    created: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
) -> dict[str, Any]:
    return {
        "id": completion_id(message_id),
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": FINISH.get(finish_reason, "stop") if finish_reason else None,
            }
        ],
    }


def usage_chunk(
    *, message_id: Any, model: str, created: int, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    return {
        "id": completion_id(message_id),
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def sse(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


def now() -> int:
    return int(time.time())


# How each error ending of a reply maps onto HTTP (before the stream started) and OpenAI.
ERROR_STATUS = {
    "too_long": (400, "invalid_request_error", "context_length_exceeded"),
    "invalid_option": (400, "invalid_request_error", "invalid_value"),
    "rate_limited": (429, "rate_limit_error", "rate_limit_exceeded"),
    "inference_unavailable": (503, "server_error", "inference_unavailable"),
    "internal": (500, "server_error", "internal_error"),
}


def from_error_code(code: str, message: str) -> ApiError:
    status, kind, openai_code = ERROR_STATUS.get(code, ERROR_STATUS["internal"])
    return ApiError(status, message, type=kind, code=openai_code)
