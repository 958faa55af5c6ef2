"""Every option is validated, and every error names its field."""

from __future__ import annotations

from typing import Any

import pytest

from inference.options import GenerationOptions, OptionError, parse_options

LIMIT = 1024


def parse(data: Any) -> GenerationOptions:
    return parse_options(data, max_new_tokens_limit=LIMIT)


def test_defaults_when_nothing_is_given() -> None:
    options = parse(None)
    assert options == parse({})
    assert 0 < options.temperature <= 2 and options.max_new_tokens <= LIMIT
    assert options.stop == () and options.seed is None


def test_it_accepts_every_option_in_range() -> None:
    options = parse(
        {
            "temperature": 0,
            "top_p": 1,
            "top_k": 40,
            "max_new_tokens": LIMIT,
            "stop": ["\n\n", "END"],
            "seed": 7,
        }
    )
    assert options.greedy
    assert (options.top_p, options.top_k, options.max_new_tokens) == (1.0, 40, LIMIT)
    assert options.stop == ("\n\n", "END") and options.seed == 7


def test_temperature_zero_is_greedy_not_an_error() -> None:
    assert parse({"temperature": 0.0}).greedy
    assert not parse({"temperature": 2}).greedy


def test_a_single_stop_string_is_a_list_of_one() -> None:
    assert parse({"stop": "###"}).stop == ("###",)


def test_null_means_default() -> None:
    assert parse({"temperature": None, "seed": None}) == parse({})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -0.1),
        ("temperature", 2.01),
        ("temperature", "hot"),
        ("temperature", True),
        ("temperature", float("nan")),
        ("temperature", float("inf")),
        ("temperature", [1]),
        ("top_p", 0),
        ("top_p", 1.5),
        ("top_p", -1),
        ("top_p", "0.5"),
        ("top_k", -1),
        ("top_k", 2.5),
        ("top_k", False),
        ("top_k", "10"),
        ("max_new_tokens", 0),
        ("max_new_tokens", LIMIT + 1),
        ("max_new_tokens", 10**30),
        ("max_new_tokens", 1.5),
        ("max_new_tokens", None.__class__.__name__),
        ("stop", 5),
        ("stop", [""]),
        ("stop", ["ok", 3]),
        ("stop", ["x" * 201]),
        ("stop", [str(i) for i in range(9)]),
        ("stop", {"a": 1}),
        ("seed", -1),
        ("seed", 2**63),
        ("seed", "42"),
        ("seed", 1.5),
        ("seed", True),
    ],
)
def test_it_rejects_bad_values_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(OptionError) as info:
        parse({field: value})
    assert info.value.field == field
    assert field in str(info.value)


def test_it_rejects_unknown_options() -> None:
    with pytest.raises(OptionError) as info:
        parse({"temperature": 1, "presence_penalty": 1})
    assert info.value.field == "presence_penalty"


def test_it_rejects_options_that_are_not_an_object() -> None:
    for bad in ([], "fast", 3):
        with pytest.raises(OptionError) as info:
            parse(bad)
        assert info.value.field == "options"


def test_whole_float_counts_as_integer() -> None:
    assert parse({"max_new_tokens": 64.0, "top_k": 5.0}).max_new_tokens == 64
