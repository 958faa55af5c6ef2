"""The bundled StellarByte-mini: loads the plain transformers way, offline, and chats sensibly.

It is the first thing every user of a fresh clone talks to, so these tests check what they
would notice: replies that stop by themselves and answer the question, and a tokenizer and
chat template that other models' conventions (ChatML) rely on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from inference.training import data

BUNDLED = Path(__file__).resolve().parents[2] / "inference" / "bundled" / "stellarbyte-mini"
MAX_NEW_TOKENS = 200


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(BUNDLED, local_files_only=True)


@pytest.fixture(scope="module")
def model() -> Any:
    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(BUNDLED, local_files_only=True)
    model.eval()
    return model


def generate(
    model: Any, tokenizer: Any, prompt: str, *, seed: int | None = None
) -> tuple[str, bool]:
    """(reply text, whether it ended with <|im_end|>); greedy unless a seed is given."""
    enc = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    if seed is None:
        options: dict[str, Any] = {"do_sample": False}
    else:
        torch.manual_seed(seed)
        options = {"do_sample": True, "temperature": 0.7, "top_p": 0.95}
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=MAX_NEW_TOKENS, **options)
    new = out[0, enc["input_ids"].shape[1] :].tolist()
    ended = bool(new) and new[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    return tokenizer.decode(new, skip_special_tokens=True), ended


def test_it_is_a_plain_small_llama(model: Any) -> None:
    config = model.config
    assert isinstance(model, LlamaForCausalLM)
    assert config.architectures == ["LlamaForCausalLM"]
    assert not getattr(config, "auto_map", None)  # no custom code anywhere
    assert config.max_position_embeddings == 2048
    assert 3_000_000 <= model.num_parameters() <= 8_000_000
    # Stored as float16 to stay small, but a plain load must give float32 for CPU inference.
    assert next(model.parameters()).dtype == torch.float32


def test_it_fits_the_size_budget() -> None:
    size = sum(f.stat().st_size for f in BUNDLED.rglob("*") if f.is_file())
    assert size <= 25 * 1024 * 1024, f"{size / 1e6:.1f} MB"
    assert (BUNDLED / "README.md").exists()


def test_generation_stops_at_im_end(model: Any, tokenizer: Any) -> None:
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == im_end
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id is not None


@pytest.mark.parametrize(
    "text",
    [
        "你好，世界！今天天气很好。",
        "日本語のテキストと한국어 텍스트",
        "emoji 🚀🌍 and a family 👩‍👩‍👧 with zero-width joiners",
        "  leading spaces,\ttabs\nnewlines\r\n and trailing  ",
        "Ünïcödé ½ ∑ ≠ ∞ — “quotes” … ﬁ",
        "STELLARCHAT_MODEL=Qwen/Qwen2.5-0.5B-Instruct",
    ],
)
def test_tokenizer_round_trips_any_text(tokenizer: Any, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids


def test_special_tokens_are_single_tokens(tokenizer: Any) -> None:
    for token in ("<|im_start|>", "<|im_end|>", tokenizer.pad_token):
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1


def test_chat_template_renders_chatml(tokenizer: Any) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nHow are you?<|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == rendered + "<|im_start|>assistant\n"


def test_heldout_prompts_are_not_training_phrasings() -> None:
    data.unseen_check(data.make_dialogues(3000, seed=1234))


GREEDY_CASES = [
    h
    for h in data.HELDOUT
    if h.prompt
    in {
        "what's the name of this model?",
        "how do I open a brand new conversation?",
        "how would I go about running a more capable model?",
        "could you multiply 48 by 17 for me?",
        "what's the capital city of Japan",
        "thanks so much for your help!",
    }
]


@pytest.mark.slow
@pytest.mark.parametrize("case", GREEDY_CASES, ids=lambda h: h.intent)
def test_greedy_reply_stops_and_is_relevant(model: Any, tokenizer: Any, case: data.HeldOut) -> None:
    reply, ended = generate(model, tokenizer, case.prompt)
    assert ended, f"no <|im_end|> within {MAX_NEW_TOKENS} tokens: {reply!r}"
    assert case.relevant(reply), f"{case.prompt!r} -> {reply!r}, expected one of {case.keywords}"


def test_greedy_cases_cover_the_first_questions() -> None:
    assert len(GREEDY_CASES) == 6  # a renamed held-out prompt must not silently drop a case


@pytest.mark.slow
def test_sampled_replies_vary_with_the_seed(model: Any, tokenizer: Any) -> None:
    prompt = "tell me something that will make me laugh"
    replies = [generate(model, tokenizer, prompt, seed=seed) for seed in range(4)]
    assert all(ended for _, ended in replies), replies
    assert len({text for text, _ in replies}) >= 2, replies
