"""Prompt building for local models: chat template, injection-proof tokenization, context budget.

Two things here are easy to get wrong and matter:

- **Special-token injection.** Rendering the chat template to one string and tokenizing it
  would turn a user's literal ``<|im_start|>system`` into real control tokens, letting them
  forge a turn. We render the template with sentinels in place of each turn's content, then
  tokenize the template's own text normally and each content with special tokens *split*, so
  user and model text can only ever be plain text.
- **Multi-turn memory.** The system prompt plus as many of the newest turns as fit in the
  model's context minus ``max_new_tokens``; the newest user turn is never cut (if it cannot fit
  even alone, that is a ``too_long`` error, not a silently truncated question).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from inference.backends.base import BackendError, Turn

logger = logging.getLogger(__name__)

# Used when a tokenizer ships no chat template. Plain-text roles, each turn closed by the EOS
# token, so a base model sees a readable transcript and learns nothing new is needed to stop.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}System: {{ message['content'] }}{{ eos_token }}\n"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}{{ eos_token }}\n"
    "{% else %}Assistant: {{ message['content'] }}{{ eos_token }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

_SENTINEL = "\ue000STELLARCHAT{}\ue001"
_SENTINEL_RE = re.compile("\ue000STELLARCHAT(\\d+)\ue001")


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    turns_used: int  # how many of the given turns made it in (system included)
    turns_dropped: int


def _encode(tokenizer: Any, text: str, *, plain: bool) -> list[int]:
    if not text:
        return []
    encoded = tokenizer(text, add_special_tokens=False, split_special_tokens=plain)
    return list(encoded["input_ids"])


def _neutralize(tokenizer: Any, text: str) -> str:
    """Break special-token strings apart (fallback for templates that rewrite content)."""
    for token in getattr(tokenizer, "all_special_tokens", []):
        if len(token) > 1 and token in text:
            text = text.replace(token, token[0] + "\u200b" + token[1:])
    return text


def encode_turns(tokenizer: Any, turns: Sequence[Turn], template: str | None) -> list[int]:
    """Token ids of ``turns`` through the chat template, contents tokenized as plain text."""
    marked = [{"role": t["role"], "content": _SENTINEL.format(i)} for i, t in enumerate(turns)]
    rendered: str = tokenizer.apply_chat_template(
        marked, tokenize=False, add_generation_prompt=True, chat_template=template
    )
    found = [int(m.group(1)) for m in _SENTINEL_RE.finditer(rendered)]
    user_turns = {i for i, t in enumerate(turns) if t["role"] == "user"}
    if found != sorted(set(found)) or not user_turns <= set(found):
        # The template copied, escaped or reordered a content: tokenize the real rendering, with
        # special-token strings in the contents broken so they stay text.
        logger.warning("chat template rewrites message contents; neutralizing special tokens")
        safe = [{"role": t["role"], "content": _neutralize(tokenizer, t["content"])} for t in turns]
        text = tokenizer.apply_chat_template(
            safe, tokenize=False, add_generation_prompt=True, chat_template=template
        )
        return _encode(tokenizer, text, plain=False)
    ids: list[int] = []
    pos = 0
    for match in _SENTINEL_RE.finditer(rendered):
        ids += _encode(tokenizer, rendered[pos : match.start()], plain=False)
        ids += _encode(tokenizer, turns[int(match.group(1))]["content"], plain=True)
        pos = match.end()
    ids += _encode(tokenizer, rendered[pos:], plain=False)
    return ids


def build_prompt(
    tokenizer: Any,
    turns: Sequence[Turn],
    *,
    budget: int,
    template: str | None = None,
) -> Prompt:
    """Fit the system prompt and the newest turns into ``budget`` tokens.

    Older turns are dropped whole, and the kept history always starts at a user turn (some
    templates insist on user/assistant alternation). Binary search keeps this to O(log n)
    renderings even for conversations with thousands of messages.
    """
    system = [t for t in turns[:1] if t["role"] == "system"]
    dialogue = list(turns[len(system) :])
    if not dialogue or dialogue[-1]["role"] != "user":
        raise BackendError("the conversation must end with a user turn", code="internal")
    starts = [i for i, t in enumerate(dialogue) if t["role"] == "user"]

    def ids_from(start: int) -> list[int]:
        return encode_turns(tokenizer, system + dialogue[start:], template)

    newest = ids_from(starts[-1])
    if len(newest) > budget:
        raise BackendError(
            f"the message is too long for this model: {len(newest)} prompt tokens, but only "
            f"{budget} fit (the context minus max_new_tokens); shorten it or lower max_new_tokens",
            code="too_long",
        )
    lo, hi, best, best_ids = 0, len(starts) - 1, len(starts) - 1, newest
    while lo <= hi:  # smallest start index whose rendering fits
        mid = (lo + hi) // 2
        ids = newest if mid == len(starts) - 1 else ids_from(starts[mid])
        if len(ids) <= budget:
            best, best_ids, hi = mid, ids, mid - 1
        else:
            lo = mid + 1
    used = len(system) + len(dialogue) - starts[best]
    return Prompt(ids=best_ids, turns_used=used, turns_dropped=len(turns) - used)
