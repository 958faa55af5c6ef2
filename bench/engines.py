"""Which decode engine: our batch scheduler against what transformers offers, in one run.

    .venv/bin/python bench/engines.py [--streams 16] [--tokens 64] [--repeats 3] [--compile]
                                      [--model DIR] [--device cuda] [--dtype bfloat16]

On the bundled model (or ``--model``, on ``--device``), the same prompts, greedy, ``--tokens``
new tokens each (the end-of-sequence token is suppressed everywhere so every engine generates
exactly as many tokens).
Prints generated tokens per second for each engine and its ratio to one stream alone:

- ``alone``: one request at a time through our scheduler (``STELLARCHAT_MAX_BATCH=1``);
- ``ours``: all requests at once through our scheduler (they join the batch inside its decode
  steps: mixed steps, ``inference/mixed.py``);
- ``ours, separate prefill``: the same without mixed steps (each group of joining prompts
  read in a forward of its own between two decode steps, what non-Llama models get);
- ``generate padded``: transformers' ``generate`` on one left-padded batch (an upper bound:
  no request joins or leaves, which a chat server cannot promise);
- ``generate_batch``: transformers' continuous batching (``model.generate_batch``);
- ``static cache``: ``generate`` one stream at a time with ``cache_implementation="static"``;
- ``static + compile`` (with ``--compile``): the same under ``torch.compile`` (slow to warm).

Engines run interleaved, ``--repeats`` rounds, medians reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stellarchat.settings")
os.environ.setdefault("DJANGO_DEBUG", "1")
os.environ.setdefault("STELLARCHAT_DATA_DIR", "/tmp/stellarchat-bench-engines")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL = ROOT / "inference" / "bundled" / "stellarbyte-mini"
TOPICS = ["ships", "stars", "bread", "rivers", "chess", "bees", "trains", "music"]


def prompts(n: int) -> list[str]:
    return [f"Tell me about {TOPICS[i % len(TOPICS)]}, part {i}." for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--model", default=str(MODEL), help="a local model folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, ... (default: auto)")
    parser.add_argument(
        "--sustained",
        type=float,
        default=6.0,
        help="seconds of the sustained comparison (0: skip it)",
    )
    args = parser.parse_args()

    import django

    django.setup()
    import torch
    from transformers import GenerationConfig

    from inference.backends.hf import TransformersBackend
    from inference.options import GenerationOptions
    from inference.prompt import build_prompt

    where = {"device": args.device, "dtype": args.dtype}
    batched = TransformersBackend(args.model, max_batch=args.streams, **where)
    single = TransformersBackend(args.model, max_batch=1, **where)
    separate = TransformersBackend(args.model, max_batch=args.streams, mixed=False, **where)
    loaded = batched.load()
    single._loaded = separate._loaded = loaded  # one model in memory, three schedulers
    model, tokenizer = loaded.model, loaded.tokenizer
    device = loaded.device

    def sync() -> None:  # a GPU's work is done when the engine's tokens are, not before
        if device.type == "cuda":
            torch.cuda.synchronize()

    # Every engine must generate exactly --tokens tokens: suppress end-of-sequence.
    real_eos, loaded.eos_ids = loaded.eos_ids, frozenset()
    texts = prompts(args.streams)
    ids = [
        build_prompt(tokenizer, [{"role": "user", "content": t}], budget=1024).ids for t in texts
    ]
    options = GenerationOptions(temperature=0, max_new_tokens=args.tokens)
    eos = sorted({int(i) for i in [tokenizer.eos_token_id] if i is not None})
    bad = [[i] for i in eos]
    config = GenerationConfig(
        max_new_tokens=args.tokens,
        min_new_tokens=args.tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=None,
        bad_words_ids=bad or None,
    )

    def through(backend: TransformersBackend, concurrent: bool) -> int:
        counts: list[int] = []

        def one(text: str) -> None:
            for item in backend.stream([{"role": "user", "content": text}], options):
                if not isinstance(item, str):
                    counts.append(item.completion_tokens)

        if concurrent:
            threads = [threading.Thread(target=one, args=(t,)) for t in texts]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:
            for text in texts:
                one(text)
        return sum(counts)

    def padded() -> int:
        tokenizer.padding_side = "left"
        width = max(len(i) for i in ids)
        input_ids = torch.tensor(
            [[tokenizer.pad_token_id] * (width - len(i)) + i for i in ids], device=device
        )
        mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids], device=device)
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config)
        return int((out.shape[1] - width) * out.shape[0])

    # generate_batch needs an end-of-sequence id; its replies may then end early, which
    # tokens/s (real tokens over wall time) allows for.
    cb_config = GenerationConfig(
        max_new_tokens=args.tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )

    def continuous() -> int:
        implementation = model.config._attn_implementation
        model.set_attn_implementation("sdpa")  # what continuous batching accepts on a CPU
        try:
            with torch.inference_mode():
                out = model.generate_batch(inputs=ids, generation_config=cb_config)
        finally:
            model.set_attn_implementation(implementation)
        return sum(len(o.generated_tokens) for o in out.values())

    def static(compiled: bool = False) -> Callable[[], int]:
        static_config = GenerationConfig(**config.to_dict())
        static_config.cache_implementation = "static"
        if compiled:
            static_config.compile_config = None

        def run() -> int:
            total = 0
            with torch.inference_mode():
                for i in ids:
                    out = model.generate(
                        input_ids=torch.tensor([i], device=device),
                        generation_config=static_config,
                    )
                    total += out.shape[1] - len(i)
            return total

        return run

    engines: dict[str, Callable[[], int]] = {
        "alone": lambda: through(single, concurrent=False),
        "ours": lambda: through(batched, concurrent=True),
        "ours, separate prefill": lambda: through(separate, concurrent=True),
        "generate padded": padded,
        "generate_batch": continuous,
        "static cache": static(),
    }
    if args.compile:
        model.forward = torch.compile(model.forward, dynamic=False)
        engines["static + compile"] = static(compiled=True)

    rates: dict[str, list[float]] = {name: [] for name in engines}
    failures: dict[str, str] = {}
    for name, run in engines.items():  # warm every engine once
        try:
            run()
            sync()
        except Exception as exc:  # an engine this build cannot run here: say so, go on
            failures[name] = " ".join(str(exc).split())[:200]
    for _ in range(args.repeats):
        for name, run in engines.items():
            if name in failures:
                continue
            started = time.perf_counter()
            tokens = run()
            sync()
            rates[name].append(tokens / (time.perf_counter() - started))

    print(
        f"\n{args.streams} streams x {args.tokens} tokens, {Path(args.model).name} "
        f"({model.dtype}), {device}, {torch.get_num_threads()} torch threads, "
        f"load {os.getloadavg()[0]:.2f}\n"
    )
    table(rates, "alone", failures)
    if args.sustained:
        sustained(args, [single, batched, separate], texts, real_eos)


def sustained(
    args: argparse.Namespace, backends: list[Any], texts: list[str], eos_ids: frozenset[int]
) -> None:
    """Requests arriving while others generate, as on a busy server: ``--streams`` clients
    each send their next request the moment their reply ends (sampled, replies of every
    length, end-of-sequence allowed); generated tokens/s over ``--sustained`` seconds. This is
    where mixed steps matter: a prompt joins every few steps instead of all at once."""
    from inference.options import GenerationOptions

    backends[0]._loaded.eos_ids = eos_ids  # replies end by themselves here

    def run(backend: Any, streams: int) -> float:
        stop = time.perf_counter() + args.sustained
        counts: list[int] = []

        def client(i: int) -> None:
            k = 0
            while time.perf_counter() < stop:
                options = GenerationOptions(
                    temperature=0.8, top_p=0.95, max_new_tokens=128, seed=97 * k + i
                )
                k += 1
                turns = [{"role": "user", "content": texts[i % len(texts)]}]
                for item in backend.stream(turns, options):
                    if not isinstance(item, str):
                        counts.append(item.completion_tokens)

        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(streams)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sum(counts) / (time.perf_counter() - started)

    rates: dict[str, list[float]] = {
        "alone (1 client)": [],
        "ours": [],
        "ours, separate prefill": [],
    }
    for _ in range(args.repeats):
        rates["alone (1 client)"].append(run(backends[0], 1))
        rates["ours"].append(run(backends[1], args.streams))
        rates["ours, separate prefill"].append(run(backends[2], args.streams))
    print(
        f"\nsustained: {args.streams} clients, each sending again as its reply ends, "
        f"{args.sustained:g} s, sampled (temperature 0.8, top-p 0.95), replies end by themselves"
    )
    table(rates, "alone (1 client)", {})


def table(rates: dict[str, list[float]], alone: str, failures: dict[str, str]) -> None:
    """Median tokens/s of each engine and its ratio to ``alone``."""
    base = statistics.median(rates[alone])
    print(f"{'engine':<24} {'tokens/s':>10} {'x alone':>8}")
    for name, values in rates.items():
        if name in failures:
            print(f"{name:<24} {'failed':>10}  {failures[name]}")
            continue
        rate = statistics.median(values)
        print(f"{name:<24} {rate:>10.0f} {rate / base:>8.2f}")


if __name__ == "__main__":
    main()
