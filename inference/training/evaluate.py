"""Held-out evaluation: does the model stop by itself, stay on topic, and vary its wording?

These are the first things a user notices, so they are what we measure: the share of replies
that emit ``<|im_end|>`` within ``max_new_tokens`` (greedy and sampled with the app's default
settings), keyword relevance per held-out prompt, and how many replies are distinct.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from inference.training.data import HELDOUT, HeldOut

SAMPLING = {"do_sample": True, "temperature": 0.7, "top_p": 0.95, "top_k": 0}


@dataclass
class Reply:
    prompt: str
    mode: str  # "greedy" or "sampled:<seed>"
    text: str
    tokens: int
    ended: bool
    relevant: bool


@dataclass
class Report:
    greedy_eos_rate: float
    sampled_eos_rate: float
    greedy_relevance: float
    sampled_relevance: float
    greedy_distinct_ratio: float
    sampled_distinct_ratio: float
    verbatim_rate: float
    mean_reply_tokens: float
    prompts: int
    samples_per_prompt: int
    max_new_tokens: int
    seconds: float
    # round -> (prompts, greedy relevance, sampled relevance); see ``HeldOut.round``.
    relevance_by_round: dict[int, tuple[int, float, float]] = field(default_factory=dict)
    replies: list[Reply] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("replies")
        return data

    def lines(self) -> list[str]:
        return [
            f"held-out prompts: {self.prompts} (x{self.samples_per_prompt} samples each)",
            f"ended by itself within {self.max_new_tokens} tokens: "
            f"greedy {self.greedy_eos_rate:.0%}, sampled {self.sampled_eos_rate:.0%}",
            f"relevant (keyword match): greedy {self.greedy_relevance:.0%}, "
            f"sampled {self.sampled_relevance:.0%}",
            f"distinct replies: greedy across prompts {self.greedy_distinct_ratio:.0%}, "
            f"sampled per prompt {self.sampled_distinct_ratio:.0%}",
            *(
                f"  round {k} ({n} prompts): greedy {g:.0%}, sampled {sm:.0%} relevant"
                for k, (n, g, sm) in sorted(self.relevance_by_round.items())
            ),
            f"greedy replies identical to a training reply: {self.verbatim_rate:.0%}",
            f"mean reply length: {self.mean_reply_tokens:.0f} tokens",
        ]


def reply_to(
    model: Any,
    tokenizer: Any,
    turns: Sequence[dict[str, str]],
    *,
    max_new_tokens: int = 200,
    seed: int | None = None,
) -> tuple[str, int, bool]:
    """One reply: (text, new tokens, whether it ended with eos). Greedy when ``seed`` is None."""
    enc = tokenizer.apply_chat_template(
        list(turns), add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    options: dict[str, Any] = {"do_sample": False}
    if seed is not None:
        torch.manual_seed(seed)
        options = dict(SAMPLING)
    with torch.inference_mode():
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **options,
        )
    new = out[0, enc["input_ids"].shape[1] :].tolist()
    ended = bool(new) and new[-1] == tokenizer.eos_token_id
    text = tokenizer.decode(new, skip_special_tokens=True)
    return text, len(new), ended


def evaluate(
    model: Any,
    tokenizer: Any,
    *,
    heldout: Sequence[HeldOut] = HELDOUT,
    samples: int = 3,
    max_new_tokens: int = 200,
    training_replies: set[str] | None = None,
    log: Callable[[str], None] = print,
) -> Report:
    model.eval()
    started = time.monotonic()
    replies: list[Reply] = []
    for i, item in enumerate(heldout):
        turns = [{"role": "user", "content": item.prompt}]
        for seed in [None, *range(samples)]:
            text, n, ended = reply_to(
                model, tokenizer, turns, max_new_tokens=max_new_tokens, seed=seed
            )
            mode = "greedy" if seed is None else f"sampled:{seed}"
            replies.append(Reply(item.prompt, mode, text, n, ended, item.relevant(text)))
        if (i + 1) % 10 == 0:
            log(f"  evaluated {i + 1}/{len(heldout)} prompts")

    greedy = [r for r in replies if r.mode == "greedy"]
    sampled = [r for r in replies if r.mode != "greedy"]

    def rate(rs: Sequence[Reply], attr: str) -> float:
        return sum(getattr(r, attr) for r in rs) / max(len(rs), 1)

    per_prompt_distinct = [
        len({r.text for r in sampled if r.prompt == h.prompt}) / max(samples, 1) for h in heldout
    ]
    known = training_replies or set()
    by_round: dict[int, tuple[int, float, float]] = {}
    for round_ in sorted({h.round for h in heldout}):
        prompts = {h.prompt for h in heldout if h.round == round_}
        by_round[round_] = (
            len(prompts),
            rate([r for r in greedy if r.prompt in prompts], "relevant"),
            rate([r for r in sampled if r.prompt in prompts], "relevant"),
        )
    return Report(
        greedy_eos_rate=rate(greedy, "ended"),
        sampled_eos_rate=rate(sampled, "ended"),
        greedy_relevance=rate(greedy, "relevant"),
        sampled_relevance=rate(sampled, "relevant"),
        greedy_distinct_ratio=len({r.text for r in greedy}) / max(len(greedy), 1),
        sampled_distinct_ratio=sum(per_prompt_distinct) / max(len(per_prompt_distinct), 1),
        verbatim_rate=sum(r.text in known for r in greedy) / max(len(greedy), 1),
        mean_reply_tokens=sum(r.tokens for r in replies) / max(len(replies), 1),
        prompts=len(heldout),
        samples_per_prompt=samples,
        max_new_tokens=max_new_tokens,
        seconds=time.monotonic() - started,
        relevance_by_round=by_round,
        replies=replies,
    )
