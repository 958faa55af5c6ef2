"""Chat-template special tokens typed as text must stay text: with the bundled model's own
tokenizer and a tiny ChatML model, the ids of any conversation hold the special ids exactly
where the template puts them, whatever the turns contain. Model output is text too: what the
detokenizer releases can always be saved (no NUL) and shown."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from inference.prompt import encode_turns
from inference.text import TextAssembler
from tests.inference import tinymodels
from tests.reliability import hostile

BUNDLED = Path(__file__).resolve().parents[2] / "inference" / "bundled" / "stellarbyte-mini"
ROLES = ("system", "user", "assistant")


@pytest.fixture(scope="module")
def bundled() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(BUNDLED)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return tinymodels.byte_level_tokenizer(tmp_path_factory.mktemp("tiny-chatml"))


def special_counts(tokenizer: Any, ids: list[int]) -> Counter[int]:
    special = set(tokenizer.all_special_ids)
    return Counter(i for i in ids if i in special)


def expected_counts(tokenizer: Any, turns: list[dict[str, str]]) -> Counter[int]:
    """The special ids the template itself puts in: the same turns with harmless content."""
    plain = [{"role": t["role"], "content": "x"} for t in turns]
    return special_counts(tokenizer, encode_turns(tokenizer, plain, None))


def conversation(text: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": text},
        {"role": "user", "content": text},
        {"role": "assistant", "content": text},
        {"role": "user", "content": "and " + text},
    ]


SPECIAL_TEXTS = hostile.entries("text", tags={"special"})


@pytest.mark.parametrize("which", ["bundled", "tiny"])
def test_special_token_strings_in_every_role_stay_text(which: str, request: Any) -> None:
    tokenizer = request.getfixturevalue(which)
    for entry in SPECIAL_TEXTS:
        turns = conversation(entry.value)
        ids = encode_turns(tokenizer, turns, None)
        assert special_counts(tokenizer, ids) == expected_counts(tokenizer, turns), entry.name
        decoded = tokenizer.decode(ids)
        assert decoded.count(entry.value) >= 3, entry.name  # still there, as text


def test_every_special_token_of_the_bundled_model_stays_text(bundled: Any) -> None:
    for token in bundled.all_special_tokens:
        turns = conversation(f"{token}system\n{token}")
        ids = encode_turns(bundled, turns, None)
        assert special_counts(bundled, ids) == expected_counts(bundled, turns), token


def test_a_template_that_rewrites_contents_still_keeps_special_tokens_text(bundled: Any) -> None:
    """A template that trims contents defeats the sentinel split; the fallback breaks the
    special strings apart instead."""
    trims = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}"
        "<|im_end|>\n{% endfor %}<|im_start|>assistant\n"
    )
    turns = [{"role": "user", "content": "  " + hostile.FORGED_TURN + "  "}]
    ids = encode_turns(bundled, turns, trims)
    plain = encode_turns(bundled, [{"role": "user", "content": "x"}], trims)
    assert special_counts(bundled, ids) == special_counts(bundled, plain)


special_soup = st.lists(
    st.one_of(st.sampled_from(hostile.SPECIAL_TOKENS + ["\n", "system", "user"]), st.text()),
    max_size=12,
).map("".join)


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=special_soup, role=st.sampled_from(ROLES))
def test_any_text_in_any_role_adds_no_special_ids(bundled: Any, text: str, role: str) -> None:
    turns = [{"role": role, "content": text}]
    if role != "user":
        turns.append({"role": "user", "content": "ok"})
    if not hostile.encodable(text):
        return  # never reaches a backend: every entry point refuses lone surrogates
    ids = encode_turns(bundled, turns, None)
    assert special_counts(bundled, ids) == expected_counts(bundled, turns)


# --- model output -----------------------------------------------------------------------------


def test_nul_in_model_output_is_released_as_a_replacement_character(bundled: Any) -> None:
    """PostgreSQL refuses NUL in text, so a reply holding one could never be saved; the
    detokenizer releases U+FFFD instead (one character for one, so offsets still agree)."""
    ids = bundled.encode("a\x00b\x00", add_special_tokens=False)
    assembler = TextAssembler(bundled)
    text = "".join(assembler.add(i) for i in ids) + assembler.finish()
    assert text == "a\ufffdb\ufffd"
    assert assembler.emitted == text
