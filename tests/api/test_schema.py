"""OpenAI request parsing and response shapes (api.schema): pure functions, no Django I/O.

Every refusal is an ``ApiError`` with status 400 naming the parameter; nothing a client can
put in a body may raise anything else (that would be a 500).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from api import schema
from api.schema import ApiError, CompletionRequest, parse_request

MAX_CHARS = 100
MAX_NEW = 256
USER = {"role": "user", "content": "hi"}


def parse(body: bytes | dict[str, Any] | Any) -> CompletionRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_request(raw, max_chars=MAX_CHARS, max_new_tokens_limit=MAX_NEW)


def req(**fields: Any) -> dict[str, Any]:
    """A minimal valid body, with ``fields`` on top."""
    return {"model": "m", "messages": [USER], **fields}


def refused(body: bytes | dict[str, Any] | Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(body)
    assert info.value.status == 400
    assert info.value.body()["error"]["type"] == "invalid_request_error"
    return info.value


# --- valid requests --------------------------------------------------------------------------


def test_it_parses_a_minimal_request() -> None:
    got = parse(req())
    assert got == CompletionRequest(
        model="m", system_prompt="", turns=[("user", "hi")], options={}, stream=False
    )
    assert got.include_usage is False


def test_it_strips_the_model_id() -> None:
    assert parse(req(model="  stellarchat-test ")).model == "stellarchat-test"


def test_system_and_developer_messages_become_the_system_prompt_in_order() -> None:
    got = parse(
        req(
            messages=[
                {"role": "system", "content": "first"},
                {"role": "user", "content": "q1"},
                {"role": "developer", "content": "second"},
                {"role": "assistant", "content": "a1"},
                {"role": "system", "content": "   "},  # blank: dropped
                {"role": "system", "content": "third"},
                {"role": "user", "content": "q2"},
            ]
        )
    )
    assert got.system_prompt == "first\n\nsecond\n\nthird"
    assert got.turns == [("user", "q1"), ("assistant", "a1"), ("user", "q2")]


def test_text_content_parts_are_joined() -> None:
    parts = [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}]
    got = parse(req(messages=[{"role": "user", "content": parts}]))
    assert got.turns == [("user", "Hello, world")]


def test_assistant_content_may_be_null() -> None:
    got = parse(
        req(
            messages=[
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": None},
                {"role": "user", "content": "b"},
            ]
        )
    )
    assert got.turns == [("user", "a"), ("assistant", ""), ("user", "b")]


def test_neutral_values_of_unsupported_parameters_are_accepted() -> None:
    got = parse(
        req(
            n=1,
            presence_penalty=0,
            frequency_penalty=0.0,
            tools=[],
            logprobs=False,
            tool_choice="none",
            store=False,
            service_tier="auto",
            user="end-user-42",
            response_format={"type": "text"},
        )
    )
    assert got.turns == [("user", "hi")]


def test_options_are_passed_on_under_their_internal_names() -> None:
    got = parse(
        req(temperature=0, top_p=1, top_k=5, seed=7, max_tokens=10, stop="END", stream=True)
    )
    assert got.options == {
        "temperature": 0,
        "top_p": 1,
        "top_k": 5,
        "seed": 7,
        "max_new_tokens": 10,
        "stop": ["END"],
    }
    assert got.stream is True


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    got = parse(req(max_tokens=10, max_completion_tokens=20))
    assert got.options["max_new_tokens"] == 20


def test_a_null_max_completion_tokens_does_not_hide_max_tokens() -> None:
    assert parse(req(max_tokens=5, max_completion_tokens=None)).options["max_new_tokens"] == 5


def test_stop_as_a_list_is_kept() -> None:
    assert parse(req(stop=["a", "b"])).options["stop"] == ["a", "b"]


def test_stream_options_with_stream() -> None:
    got = parse(req(stream=True, stream_options={"include_usage": True}))
    assert got.stream and got.include_usage


def test_stream_null_means_false() -> None:
    assert parse(req(stream=None)).stream is False


def test_content_exactly_at_the_limit_is_fine() -> None:
    got = parse(req(messages=[{"role": "user", "content": "x" * MAX_CHARS}]))
    assert got.turns[0][1] == "x" * MAX_CHARS


# --- messages refused ---------------------------------------------------------------------


def test_an_image_part_is_refused_naming_the_message() -> None:
    parts = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
    ]
    exc = refused(
        req(messages=[{"role": "system", "content": "s"}, USER, USER | {"content": parts}])
    )
    assert exc.param == "messages[2].content"


def test_a_text_part_without_string_text_is_refused() -> None:
    exc = refused(req(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]))
    assert exc.param == "messages[0].content"


def test_null_user_content_is_refused() -> None:
    exc = refused(req(messages=[{"role": "user", "content": None}]))
    assert exc.param == "messages[0].content"


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        [{"role": "system", "content": "only instructions"}],
        [{"role": "assistant", "content": "a"}, {"role": "system", "content": "s"}],
    ],
)
def test_the_last_turn_must_be_the_users(messages: list[dict[str, Any]]) -> None:
    assert refused(req(messages=messages)).param == "messages"


@pytest.mark.parametrize("messages", [[], {}, "hi", None, 5])
def test_messages_must_be_a_non_empty_array(messages: Any) -> None:
    assert refused(req(messages=messages)).param == "messages"


def test_messages_is_required() -> None:
    assert refused({"model": "m"}).param == "messages"


def test_at_most_1000_messages() -> None:
    thousand = [USER] * 1000
    assert len(parse(req(messages=thousand)).turns) == 1000
    assert refused(req(messages=[*thousand, USER])).param == "messages"


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ("hi", "messages[0]"),
        ({"role": "tool", "content": "x"}, "messages[0].role"),
        ({"role": "function", "content": "x"}, "messages[0].role"),
        ({"content": "x"}, "messages[0].role"),
        ({"role": "USER", "content": "x"}, "messages[0].role"),
        ({"role": "user", "content": 5}, "messages[0].content"),
        ({"role": "user", "content": {"text": "x"}}, "messages[0].content"),
        ({"role": "assistant", "content": "x", "tool_calls": [{"id": "1"}]}, "messages[0]"),
    ],
)
def test_malformed_messages_are_refused(message: Any, param: str) -> None:
    assert refused(req(messages=[message, USER])).param == param


@pytest.mark.parametrize("role", [[], {}, ["user"]])
def test_an_unhashable_role_is_a_400(role: Any) -> None:
    assert refused(req(messages=[{"role": role, "content": "x"}])).param == "messages[0].role"


def test_nul_in_content_is_refused() -> None:
    assert refused(req(messages=[{"role": "user", "content": "a\x00b"}])).param == (
        "messages[0].content"
    )


def test_nul_in_a_text_part_is_refused() -> None:
    parts = [{"type": "text", "text": "a\x00b"}]
    assert refused(req(messages=[{"role": "user", "content": parts}])).param == (
        "messages[0].content"
    )


def test_content_over_the_limit_is_string_above_max_length() -> None:
    exc = refused(req(messages=[{"role": "user", "content": "x" * (MAX_CHARS + 1)}]))
    assert exc.code == "string_above_max_length"
    assert exc.param == "messages[0].content"
    assert str(MAX_CHARS) in exc.message


def test_the_limit_applies_to_joined_parts() -> None:
    parts = [{"type": "text", "text": "x" * 60}, {"type": "text", "text": "y" * 60}]
    exc = refused(req(messages=[{"role": "user", "content": parts}]))
    assert exc.code == "string_above_max_length"


def test_a_lone_surrogate_is_refused() -> None:
    exc = refused(b'{"model": "m", "messages": [{"role": "user", "content": "a\\ud800"}]}')
    assert exc.param == "messages[0].content"


def test_an_empty_last_user_turn_is_refused() -> None:
    assert refused(req(messages=[{"role": "user", "content": ""}])).param is not None


# --- the body -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"{",
        b'{"model": "m",}',
        b"[]",
        b'[{"model": "m"}]',
        b'"a string"',
        b"42",
        b"null",
        b'{"model": "\xff\xfe"}',
        b"\xc3\x28",
    ],
)
def test_a_body_that_is_not_a_json_object_is_invalid_json(body: bytes) -> None:
    assert refused(body).code == "invalid_json"


def test_deeply_nested_json_is_invalid_json() -> None:
    assert refused(b"[" * 100_000).code == "invalid_json"


@pytest.mark.parametrize("name", ["functions_x", "temprature", "prompt", "best_of", "echo"])
def test_an_unknown_parameter_is_named(name: str) -> None:
    exc = refused(req(**{name: 1}))
    assert exc.param == name and exc.code == "unknown_parameter" and name in exc.message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("n", 2),
        ("n", True),
        ("tools", [{"type": "function", "function": {"name": "f"}}]),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("presence_penalty", 0.5),
        ("frequency_penalty", -1),
        ("tool_choice", "auto"),
        ("logit_bias", {"50256": -100}),
        ("store", True),
        ("service_tier", "flex"),
        ("parallel_tool_calls", True),
        ("response_format", {"type": "json_object"}),
    ],
)
def test_a_parameter_we_do_not_implement_is_unsupported_value(name: str, value: Any) -> None:
    exc = refused(req(**{name: value}))
    assert exc.param == name and exc.code == "unsupported_value"


@pytest.mark.parametrize("model", [None, "", "   ", 5, ["m"], {"id": "m"}])
def test_model_must_be_a_non_empty_string(model: Any) -> None:
    assert refused(req(model=model)).param == "model"


def test_model_is_required() -> None:
    assert refused({"messages": [USER]}).param == "model"


@pytest.mark.parametrize("stream", ["true", 1, 0, [], {}])
def test_stream_must_be_a_boolean(stream: Any) -> None:
    assert refused(req(stream=stream)).param == "stream"


@pytest.mark.parametrize(
    "fields",
    [
        {"stream_options": {"include_usage": True}},
        {"stream": False, "stream_options": {"include_usage": True}},
        {"stream": True, "stream_options": {"include_usage": True, "extra": 1}},
        {"stream": True, "stream_options": {"include_usage": "yes"}},
        {"stream": True, "stream_options": "include_usage"},
    ],
)
def test_stream_options_are_strict(fields: dict[str, Any]) -> None:
    assert refused(req(**fields)).param == "stream_options"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("temperature", -1),
        ("temperature", 2.5),
        ("temperature", "hot"),
        ("temperature", True),
        ("top_p", 0),
        ("top_p", 1.5),
        ("top_k", -1),
        ("top_k", 2.5),
        ("seed", 2**63),
        ("seed", -1),
        ("seed", "42"),
        ("stop", [1]),
        ("stop", [""]),
        ("stop", [f"s{i}" for i in range(9)]),
        ("stop", {"a": 1}),
    ],
)
def test_out_of_range_options_are_refused_naming_them(name: str, value: Any) -> None:
    exc = refused(req(**{name: value}))
    assert exc.param == name and exc.code == "invalid_value" and name in exc.message


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_temperature_is_refused(literal: bytes) -> None:
    body = (
        b'{"model": "m", "temperature": '
        + literal
        + b', "messages": [{"role": "user", "content": "x"}]}'
    )
    assert refused(body).param == "temperature"


@pytest.mark.parametrize("value", [0, -5, MAX_NEW + 1, 1.5, "10", True])
def test_max_tokens_is_checked(value: Any) -> None:
    exc = refused(req(max_tokens=value))
    assert exc.param == "max_tokens" and "max_new_tokens" not in exc.message


@pytest.mark.parametrize("value", [0, MAX_NEW + 1, 1.5])
def test_max_completion_tokens_is_named_when_it_was_used(value: Any) -> None:
    exc = refused(req(max_completion_tokens=value))
    assert exc.param == "max_completion_tokens"


def test_max_tokens_at_the_limit_is_fine() -> None:
    assert parse(req(max_tokens=MAX_NEW)).options["max_new_tokens"] == MAX_NEW
    assert parse(req(max_tokens=2.0)).options["max_new_tokens"] == 2.0  # a whole float is fine


def test_eight_stop_strings_are_fine() -> None:
    assert len(parse(req(stop=[f"s{i}" for i in range(8)])).options["stop"]) == 8


# --- fuzzing: nothing but a 400 ----------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def only_api_errors(body: bytes) -> None:
    try:
        parse(body)
    except ApiError as exc:
        assert exc.status == 400
        assert set(exc.body()["error"]) == {"message", "type", "param", "code"}


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_body_is_parsed_or_refused_with_a_400(value: Any) -> None:
    only_api_errors(json.dumps(value).encode())


@hsettings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_parsed_or_refused_with_a_400(body: bytes) -> None:
    only_api_errors(body)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
    | st.sampled_from(["user", "system", "assistant", "developer", "stellarchat-test", "text"])
)
message_values = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["user", "system", "assistant", "developer"]),
        "content": scalars
        | st.lists(
            st.fixed_dictionaries({}, optional={"type": scalars, "text": scalars}), max_size=3
        ),
        "name": scalars,
    },
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        **{name: scalars | st.lists(scalars, max_size=3) for name in schema.KNOWN},
        "messages": st.lists(message_values, max_size=4) | scalars,
        "stream_options": st.dictionaries(st.sampled_from(["include_usage", "x"]), scalars)
        | scalars,
    },
)


@hsettings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_any_body_with_known_parameters_is_parsed_or_refused_with_a_400(
    body: dict[str, Any],
) -> None:
    only_api_errors(json.dumps(body).encode())


# --- response shapes --------------------------------------------------------------------

MESSAGE_ID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


def test_completion_shape() -> None:
    body = schema.completion(
        message_id=MESSAGE_ID,
        model="stellarchat-test",
        created=1700000000,
        text="Hello 🌍",
        finish_reason="length",
        prompt_tokens=7,
        completion_tokens=3,
    )
    assert body == {
        "id": "chatcmpl-1b4e28ba2fa111d2883f0016d3cca427",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "stellarchat-test",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello 🌍", "refusal": None},
                "logprobs": None,
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


@pytest.mark.parametrize(
    ("ours", "openai"),
    [("stop", "stop"), ("length", "length"), ("cancelled", "stop"), ("weird", "stop")],
)
def test_finish_reasons_map_onto_openai(ours: str, openai: str) -> None:
    common = {"message_id": MESSAGE_ID, "model": "m", "created": 1}
    body = schema.completion(
        **common, text="", finish_reason=ours, prompt_tokens=0, completion_tokens=0
    )
    assert body["choices"][0]["finish_reason"] == openai
    assert (
        schema.chunk(**common, delta={}, finish_reason=ours)["choices"][0]["finish_reason"]
        == openai
    )


def test_chunk_shape() -> None:
    body = schema.chunk(message_id=MESSAGE_ID, model="m", created=5, delta={"content": "hé"})
    assert body == {
        "id": "chatcmpl-1b4e28ba2fa111d2883f0016d3cca427",
        "object": "chat.completion.chunk",
        "created": 5,
        "model": "m",
        "choices": [
            {"index": 0, "delta": {"content": "hé"}, "logprobs": None, "finish_reason": None}
        ],
    }


def test_usage_chunk_shape() -> None:
    body = schema.usage_chunk(
        message_id=MESSAGE_ID, model="m", created=5, prompt_tokens=4, completion_tokens=6
    )
    assert body["object"] == "chat.completion.chunk" and body["choices"] == []
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
    assert body["id"] == schema.completion_id(MESSAGE_ID)


def test_sse_framing_keeps_non_ascii() -> None:
    framed = schema.sse({"text": "你好 🌌\n<b>"})
    assert framed.startswith(b"data: ") and framed.endswith(b"\n\n")
    assert framed.count(b"\n") == 2  # a newline in the text is escaped, not a frame break
    assert json.loads(framed[6:-2].decode()) == {"text": "你好 🌌\n<b>"}
    assert "你好 🌌".encode() in framed
    assert schema.sse("[DONE]") == b"data: [DONE]\n\n"


@pytest.mark.parametrize(
    ("code", "status", "kind", "openai_code"),
    [
        ("too_long", 400, "invalid_request_error", "context_length_exceeded"),
        ("invalid_option", 400, "invalid_request_error", "invalid_value"),
        ("inference_unavailable", 503, "server_error", "inference_unavailable"),
        ("rate_limited", 429, "rate_limit_error", "rate_limit_exceeded"),
        ("internal", 500, "server_error", "internal_error"),
        ("something_new", 500, "server_error", "internal_error"),
    ],
)
def test_error_codes_map_onto_http(code: str, status: int, kind: str, openai_code: str) -> None:
    exc = schema.from_error_code(code, "what happened")
    assert exc.status == status
    assert exc.body() == {
        "error": {"message": "what happened", "type": kind, "param": None, "code": openai_code}
    }


def test_api_error_body_and_headers() -> None:
    exc = ApiError(429, "slow down", type="rate_limit_error", headers={"Retry-After": "3"})
    assert exc.body() == {
        "error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": None}
    }
    assert exc.headers == {"Retry-After": "3"}
    assert str(exc) == "slow down"
