"""Streamed deltas joined equal the full decode, byte for byte, whatever the token boundaries."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from inference.text import TextAssembler
from tests.inference import tinymodels

SAMPLES = [
    "Hello, world!",
    "你好，世界！今天天气很好。",
    "Emoji: 🌟🚀✨🙂👩‍🚀 mixed with café and naïve",
    "Stop here: ### and after",
    "こんにちは世界。",
    "",
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return tinymodels.byte_level_tokenizer(Path(tmp_path_factory.mktemp("tok")))


def run(tokenizer: Any, ids: list[int], stop: tuple[str, ...] = ()) -> tuple[list[str], str]:
    text = TextAssembler(tokenizer, stop=stop)
    deltas = []
    for token in ids:
        deltas.append(text.add(token))
        if text.stopped:
            break
    deltas.append(text.finish())
    return [d for d in deltas if d], text.emitted


def test_byte_level_tokenizer_splits_characters_across_tokens(tokenizer: Any) -> None:
    # The point of this suite: one CJK character or emoji often spans several tokens.
    ids = tokenizer("🌟", add_special_tokens=False)["input_ids"]
    pieces = [tokenizer.decode([i]) for i in ids]
    assert len(ids) > 1 and "\ufffd" in "".join(pieces)


@pytest.mark.parametrize("sample", SAMPLES)
def test_deltas_join_to_the_full_decode(tokenizer: Any, sample: str) -> None:
    ids = tokenizer(sample, add_special_tokens=False)["input_ids"]
    deltas, emitted = run(tokenizer, ids)
    assert "".join(deltas) == emitted == tokenizer.decode(ids, skip_special_tokens=True) == sample
    assert all("\ufffd" not in d for d in deltas)  # no half characters on the wire


def test_random_token_sequences_round_trip(tokenizer: Any) -> None:
    """Random ids (invalid UTF-8, stray specials) still join exactly to the full decode."""
    rng = random.Random(1234)
    vocab = len(tokenizer)
    for _ in range(300):
        ids = [rng.randrange(vocab) for _ in range(rng.randrange(1, 40))]
        deltas, _ = run(tokenizer, ids)
        full = tokenizer.decode(ids, skip_special_tokens=True)
        assert "".join(deltas) == full.replace("\x00", "\ufffd")  # NUL is never released


def test_special_tokens_are_not_shown(tokenizer: Any) -> None:
    ids = tokenizer("hi", add_special_tokens=False)["input_ids"] + [
        tokenizer.convert_tokens_to_ids("<|im_start|>")
    ]
    deltas, _ = run(tokenizer, ids)
    assert "".join(deltas) == "hi"


@pytest.mark.parametrize("sample", SAMPLES[:3])
def test_stop_strings_cut_the_reply_before_them(tokenizer: Any, sample: str) -> None:
    text = sample + " ### secret tail"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    deltas, emitted = run(tokenizer, ids, stop=("###",))
    assert "".join(deltas) == emitted == text[: text.index("###")]
    assert "#" not in emitted


def test_a_partial_stop_string_is_released_when_it_does_not_complete(tokenizer: Any) -> None:
    text = "a ## b # c"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    deltas, emitted = run(tokenizer, ids, stop=("###",))
    assert "".join(deltas) == emitted == text


def test_stop_strings_spanning_many_tokens_and_cjk(tokenizer: Any) -> None:
    text = "答案是四十二。结束吧朋友"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    deltas, _ = run(tokenizer, ids, stop=("结束",))
    assert "".join(deltas) == "答案是四十二。"
