"""Property tests of WebSocket frame validation (chat.protocol.parse_frame): any JSON value and
any text give either a valid ``Frame`` or a ``ProtocolError`` with a known code and a detail a
real server can send as UTF-8; never another exception. tests/chat/test_rendering.py holds the
rendering properties, tests/api/test_schema.py those of REST bodies."""

from __future__ import annotations

import json
import uuid
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from chat.protocol import ERROR_CODES, Frame, ProtocolError, parse_frame
from tests.reliability import hostile

LIMITS = {"max_chars": 1000, "max_new_tokens_limit": 512}
TYPES = ["chat.send", "chat.stop", "chat.regenerate", "chat.subscribe", "chat.edit"]

# Hypothesis's text() never makes lone surrogates; JSON's \ud800 escapes do, so mix them in.
odd_text = st.lists(
    st.sampled_from(["\ud800", "\udfff", "\x00", "\u202e", "a", " ", "<|im_end|>"]), max_size=6
).map("".join)
any_text = st.text(max_size=30) | odd_text
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    any_text,
    st.sampled_from([h.value for h in hostile.core()]),
    st.uuids().map(str),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
frames_like = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | scalars},
    optional={
        "conversation": st.one_of(st.uuids().map(str), scalars),
        "message": st.one_of(st.uuids().map(str), scalars),
        "content": scalars,
        "client_id": scalars,
        "options": st.one_of(
            json_values,
            st.dictionaries(
                st.sampled_from(["temperature", "top_p", "top_k", "max_new_tokens", "stop", "seed"])
                | any_text,
                json_values,
                max_size=3,
            ),
        ),
    },
)


def check(text: str | None) -> None:
    try:
        frame = parse_frame(text, **LIMITS)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES and exc.detail
        json.dumps(exc.frame(), ensure_ascii=False).encode("utf-8")  # sendable as it is
        return
    assert isinstance(frame, Frame) and frame.type in TYPES
    assert frame.content == "" or hostile.storable(frame.content)
    assert frame.conversation is None or isinstance(frame.conversation, uuid.UUID)


@hypothesis_settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames_like)
def test_any_frame_shaped_object_is_parsed_or_refused_with_a_code(data: dict[str, Any]) -> None:
    check(json.dumps(data))


option_names = st.sampled_from(["temperature", "top_p", "top_k", "max_new_tokens", "stop", "seed"])


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.dictionaries(option_names | any_text, json_values | st.lists(any_text), max_size=3))
def test_any_options_of_a_valid_send_are_accepted_or_refused_with_a_code(
    options: dict[str, Any],
) -> None:
    frame = {"type": "chat.send", "conversation": None, "content": "hi", "options": options}
    check(json.dumps(frame))
    try:
        parsed = parse_frame(json.dumps(frame), **LIMITS)
    except ProtocolError:
        return
    # Accepted stop strings can cross Redis (msgpack needs valid UTF-8) and hold no NUL.
    stop = parsed.options.get("stop") or []
    assert all(hostile.storable(s) for s in ([stop] if isinstance(stop, str) else stop))


@hypothesis_settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_value_is_parsed_or_refused_with_a_code(value: Any) -> None:
    check(json.dumps(value))


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_text_frame_is_parsed_or_refused_with_a_code(text: str) -> None:
    check(text)


def test_the_corpus_documents_are_refused_with_a_code() -> None:
    for entry in hostile.entries("document"):
        check(entry.value)
    check(None)  # a binary frame
