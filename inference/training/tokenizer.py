"""StellarByte-mini's own byte-level BPE tokenizer and ChatML chat template.

Byte-level BPE has the 256 byte values in its base alphabet, so any text (Chinese, emoji,
odd whitespace) encodes and decodes back exactly, even characters the training data never
showed. No normalizer, no added prefix space and no clean-up of spaces on decode, for the same
reason: ``decode(encode(s)) == s``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD = "<|pad|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD, IM_START, IM_END)  # ids 0, 1, 2

# ChatML, as Qwen and SmolLM use it: the same template works in StellarChat for every model.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Learn merges from ``texts`` (message contents; special tokens are added separately)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return wrap(tok)


def wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """The transformers view of the tokenizer, with the chat template and special tokens."""
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        extra_special_tokens=[IM_START],
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
        padding_side="right",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def encode_dialogue(
    tokenizer: PreTrainedTokenizerFast, turns: Sequence[dict[str, str]]
) -> tuple[list[int], list[bool]]:
    """Token ids of the ChatML rendering and, per token, whether the model is trained on it.

    Only assistant contents and their ``<|im_end|>`` are trained: the model should learn to
    answer and to stop, not to imitate users. Pieces are encoded separately so the mask is
    exact; they split where the pre-tokenizer splits anyway, so the ids equal those of the
    whole rendered text (``check_alignment`` verifies it).
    """
    ids: list[int] = []
    mask: list[bool] = []
    start, end = tokenizer.convert_tokens_to_ids([IM_START, IM_END])
    newline = tokenizer.encode("\n", add_special_tokens=False)
    for turn in turns:
        head = [start, *tokenizer.encode(turn["role"] + "\n", add_special_tokens=False)]
        body = [*tokenizer.encode(turn["content"], add_special_tokens=False), end]
        train = turn["role"] == "assistant"
        ids += head + body + newline
        mask += [False] * len(head) + [train] * len(body) + [False] * len(newline)
    return ids, mask


def check_alignment(
    tokenizer: PreTrainedTokenizerFast, dialogues: Sequence[Sequence[dict[str, str]]]
) -> None:
    """Fail loudly if piecewise encoding ever differs from encoding the rendered template."""
    for turns in dialogues:
        ids, _ = encode_dialogue(tokenizer, turns)
        rendered = tokenizer.apply_chat_template(list(turns), tokenize=False)
        whole = tokenizer.encode(rendered, add_special_tokens=False)
        if ids != whole:
            raise AssertionError(f"piecewise encoding differs from the template: {turns!r:.200}")
