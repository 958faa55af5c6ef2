"""A long prompt joining streaming replies: how long do the replies already streaming stall?

    .venv/bin/python bench/long_join.py [--streams 15] [--prompt-tokens 1500] [--repeats 3]
                                        [--model DIR] [--device cuda] [--dtype bfloat16]

On the bundled model (or ``--model``), through our batch scheduler on this process's thread,
as the model process runs it (``STELLARCHAT_TORCH_THREADS`` or one fewer than the cores): 15
replies stream (greedy, the end-of-sequence token suppressed so none ends early); once every
one has streamed ``--warm`` tokens, one request with a ``--prompt-tokens`` prompt joins. Each
token's time is recorded as the scheduler picks it (after its step). Two ways side by side,
interleaved over ``--repeats``:

- ``whole``: the prompt read in one step (what the release before did: a step reads every
  waiting prompt up to 2,048 tokens on a CPU);
- ``chunked``: the step's prompt budget as the scheduler sets it (``inference.batching``:
  about ``CHUNK_MS`` added per step, learned from the steps themselves).

Per way: the decode step (the replies' median gap between tokens before the join), the worst
gap any reply saw from the join until the long prompt's first token, the stall (that gap minus
the step), the total delay (how much later the replies' tokens came over the join than at the
step's pace), and the long request's time to first token. Goal (issue "Endurance"): the
stall within one decode step + 50 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stellarchat.settings")
os.environ.setdefault("DJANGO_DEBUG", "1")
os.environ.setdefault("STELLARCHAT_DATA_DIR", "/tmp/stellarchat-bench-long-join")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL = ROOT / "inference" / "bundled" / "stellarbyte-mini"
TOPICS = ["ships", "stars", "bread", "rivers", "chess", "bees", "trains", "music"]


def long_text(tokenizer: Any, tokens: int) -> str:
    """A user message whose prompt is about ``tokens`` tokens long."""
    words = "The lighthouse keeper wrote down every ship that passed the rocks that night."
    text = words
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < tokens - 20:
        text += " " + words
    return text


def ignore(item: Any) -> None:
    """What a streaming reply's text goes to here: its timing comes from the scheduler."""


def one_run(loaded: Any, args: argparse.Namespace, way: str, text: str) -> dict[str, float]:
    from inference.batching import Request, Scheduler
    from inference.options import GenerationOptions

    scheduler = Scheduler(loaded, max_batch=args.streams + 1, mixed=loaded.mixed)
    if way == "whole":
        scheduler._prompt_budget = lambda: scheduler.prefill_tokens  # type: ignore[method-assign]
    stamps: list[list[float]] = [[] for _ in range(args.streams)]
    long_first: list[float] = []
    joined_at: list[float] = []
    options = GenerationOptions(temperature=0, max_new_tokens=args.warm + args.after)
    requests: dict[int, int] = {}  # id(request) -> stream index
    counts = [0] * args.streams

    def long_emit(item: Any) -> None:
        if not long_first:
            long_first.append(time.perf_counter())

    def after_step() -> None:
        # Token times as the scheduler picks them (a token need not emit text: the bundled
        # model with its end token suppressed makes some that decode to nothing).
        now = time.perf_counter()
        for seq in scheduler.seqs:
            index = requests.get(id(seq.req))
            if index is not None and seq.completion > counts[index]:
                counts[index] = seq.completion
                stamps[index].append(now)
        if not joined_at and all(len(s) >= args.warm for s in stamps):
            joined_at.append(time.perf_counter())
            scheduler.submit(
                Request(
                    [{"role": "user", "content": text}],
                    GenerationOptions(temperature=0, max_new_tokens=8),
                    threading.Event(),
                    long_emit,
                )
            )

    scheduler.after_step = after_step
    for i in range(args.streams):
        content = f"Tell me about {TOPICS[i % len(TOPICS)]}, part {i}."
        turns = [{"role": "user", "content": content}]
        request = Request(turns, options, threading.Event(), ignore)
        requests[id(request)] = i
        scheduler.submit(request)
    scheduler.run_until_idle()
    if not joined_at or not long_first:
        raise SystemExit(f"{way}: the long request never joined or never answered")
    join, first = joined_at[0], long_first[0]
    before = [b - a for s in stamps for a, b in zip(s, s[1:], strict=False) if b < join]
    step = statistics.median(before[-args.streams * 10 :])
    worst, delay = 0.0, 0.0
    for s in stamps:
        during = [b - a for a, b in zip(s, s[1:], strict=False) if b > join and a < first + step]
        if during:
            worst = max(worst, max(during))
            delay = max(delay, sum(during) - step * len(during))
    return {
        "step": step * 1000,
        "worst": worst * 1000,
        "stall": (worst - step) * 1000,
        "delay": delay * 1000,
        "ttft": (first - join) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=15)
    parser.add_argument("--prompt-tokens", type=int, default=1500)
    parser.add_argument("--warm", type=int, default=40, help="tokens each reply streams first")
    parser.add_argument("--after", type=int, default=80, help="tokens each streams after that")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=str(MODEL))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None)
    args = parser.parse_args()

    import django

    django.setup()
    from inference.backends.hf import TransformersBackend
    from inference.batching import CHUNK_MS
    from inference.prompt import build_prompt

    backend = TransformersBackend(args.model, device=args.device, dtype=args.dtype)
    loaded = backend.load()
    loaded.eos_ids = frozenset()  # every reply streams to its budget
    text = long_text(loaded.tokenizer, args.prompt_tokens)
    turns = [{"role": "user", "content": text}]
    n = len(build_prompt(loaded.tokenizer, turns, budget=10**6, template=loaded.template).ids)
    print(f"model {args.model} on {args.device}, mixed steps: {loaded.mixed}, CHUNK_MS {CHUNK_MS}")
    print(f"{args.streams} replies streaming, then a {n}-token prompt joins; {args.repeats} rounds")
    results: dict[str, list[dict[str, float]]] = {"whole": [], "chunked": []}
    for _ in range(args.repeats):
        for way in results:
            results[way].append(one_run(loaded, args, way, text))
    print(
        f"{'way':8} {'step ms':>8} {'worst gap':>10} {'stall':>8} {'total delay':>12} "
        f"{'long TTFT':>10}   (medians over rounds; worst stall of any round)"
    )
    for way, runs in results.items():

        def med(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        worst_stall = max(r["stall"] for r in runs)
        print(
            f"{way:8} {med('step'):8.1f} {med('worst'):10.1f} {med('stall'):8.1f} "
            f"{med('delay'):12.1f} {med('ttft'):10.1f}   (worst stall {worst_stall:.1f})"
        )
        goal = med("step") + 50.0
        verdict = "met" if worst_stall <= goal else "NOT met"
        print(f"  goal: stall <= one step + 50 ms = {goal:.1f} ms: {verdict}")


if __name__ == "__main__":
    main()
