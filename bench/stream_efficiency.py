"""B1 + B2 stream efficiency: decode rate and time to first token seen by a WebSocket client.

    .venv/bin/python bench/stream_efficiency.py [--runs 30] [--tokens 400] [--topology both]

Measures, in one run and side by side, the bundled model (greedy, same prompt, same
``max_new_tokens``) through the whole chat path against bare ``model.generate`` in this process:

- B1: decode tokens/s seen by the client / bare decode tokens/s, both as (n - 1) / (t_last -
  t_first), so the first token (prefill) is left out. Client side: n = ``completion_tokens`` of
  ``stream.end``, t_first / t_last = arrival of the first / last ``stream.delta``. Bare side: a
  timestamp per token from a ``BaseStreamer`` that ``generate`` calls synchronously, on its own
  thread, right after each token is picked (``TextIteratorStreamer`` would add a thread hop and
  hold text back to word boundaries, so it would time the streamer, not the model). Goal >= 0.95.
- B2: client time to first token (``chat.send`` sent -> first ``stream.delta`` received) minus
  bare time to first token (prompt tokenization + ``generate`` call -> first token), per pair of
  adjacent runs; p50 and p95. Goal <= 15 ms embedded, <= 30 ms Redis (both percentiles shown).

Topologies: embedded (one daphne, SQLite in a temp STELLARCHAT_DATA_DIR, in-memory layer, worker
inside) and Redis (daphne + ``manage.py runworker inference`` + Redis db 6 + a throwaway
PostgreSQL database). Bare and live runs alternate (which goes first alternates too) so machine
noise hits both; both sides use the same torch thread count (``--threads``, default the app's
own, cores - 1; the servers get it as STELLARCHAT_TORCH_THREADS). The prompt is a list of
numbers, on which greedy
decoding of this model runs past ``max_new_tokens`` without an end token; every run checks that
both sides generated exactly ``--tokens`` tokens. ``--app-loop`` adds a third, informational
side: the app's own decode loop (``TransformersBackend.stream``) in this process, no network,
which splits the overhead into decode loop vs transport. The servers run with DEBUG off and
default settings, except a per-minute message limit high enough never to refuse the bench (the
limiter still runs). The live lines also show when ``message.saved`` and ``stream.start``
arrived and the worker's own time to first token, to tell where the overhead goes.

Run it on an idle machine: with torch's default of one thread per core, any other busy process
stalls OpenMP (measured on 2 cores next to one busy process: bare decode 10-30 tok/s with 2
threads, 160-190 with 1), and the two sides are hit unequally. ``--threads 1`` is the robust
comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["HF_HUB_OFFLINE"] = "1"  # never download: the bundled model is on disk

from tests.e2e.wsclient import LONG_PROMPT  # noqa: E402

MODEL = ROOT / "inference" / "bundled" / "stellarbyte-mini"
PROMPT = LONG_PROMPT  # greedy: no end token for 700+ tokens
SECRET = "bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
REDIS_INDEX = 6
GOAL_RATIO = 0.95
GOAL_TTFT_MS = {"embedded": 15.0, "redis": 30.0}


@dataclass
class Sample:
    n: int  # tokens generated (first included)
    ttft_ms: float
    rate: float  # decode tokens/s, first token excluded
    text: str
    prompt_tokens: int
    finish: str = "length"
    stages: dict[str, float] = field(default_factory=dict)  # live: ms after the send


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def decode_rate(n: int, first: float, last: float) -> float:
    return (n - 1) / (last - first) if n > 1 and last > first else float("nan")


# --- bare model.generate ----------------------------------------------------------------------


class Bare:
    def __init__(self) -> None:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        transformers.logging.set_verbosity_error()
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(MODEL)
        self.model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()

    def run(self, content: str, tokens: int) -> Sample:
        from transformers.generation.streamers import BaseStreamer

        from inference.prompt import encode_turns  # the app's own prompt building

        stamps: list[float] = []

        class Stamps(BaseStreamer):
            """generate() calls put() with the prompt first, then once per picked token."""

            def __init__(self) -> None:
                self.prompt = True

            def put(self, value: Any) -> None:
                if self.prompt:
                    self.prompt = False
                else:
                    stamps.append(time.perf_counter())

            def end(self) -> None:
                pass

        torch = self.torch
        started = time.perf_counter()
        ids = encode_turns(self.tokenizer, [{"role": "user", "content": content}], None)
        x = torch.tensor([ids])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = self.model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                streamer=Stamps(),
            )
        new = out[0, x.shape[1] :].tolist()
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return Sample(
            n=len(new),
            ttft_ms=(stamps[0] - started) * 1000,
            rate=decode_rate(len(stamps), stamps[0], stamps[-1]),
            text=text,
            prompt_tokens=len(ids),
            finish="length" if len(new) == tokens else "stop",
        )


class AppLoop:
    """The app's decode loop (batched scheduler, incremental detokenizer) in this process."""

    def __init__(self, data_dir: str) -> None:
        os.environ.update(
            DJANGO_SETTINGS_MODULE="stellarchat.settings",
            DJANGO_DEBUG="0",
            DJANGO_SECRET_KEY=SECRET,
            DJANGO_SECURE_SSL_REDIRECT="0",
            STELLARCHAT_DATA_DIR=data_dir,
            DJANGO_LOG_LEVEL="error",
        )
        import django

        django.setup()
        from inference.backends.hf import TransformersBackend

        self.backend = TransformersBackend(str(MODEL))
        self.backend.load()

    def run(self, content: str, tokens: int) -> Sample:
        from inference.backends.base import Result
        from inference.options import GenerationOptions

        options = GenerationOptions(temperature=0.0, max_new_tokens=tokens)
        started = time.perf_counter()
        first = last = 0.0
        text = ""
        result: Any = None
        for item in self.backend.stream([{"role": "user", "content": content}], options):
            now = time.perf_counter()
            if isinstance(item, Result):
                result = item
            elif item:
                first = first or now
                last = now
                text += item
        n = result.completion_tokens
        return Sample(
            n=n,
            ttft_ms=(first - started) * 1000,
            rate=decode_rate(n, first, last),
            text=text,
            prompt_tokens=result.prompt_tokens,
            finish=result.finish_reason,
        )


# --- live: a WebSocket client against real processes ----------------------------------------


class Live:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.stages: str | None = None  # --stages: the file the servers stamp, and we too

    def stamp(self, stage: str, at: float) -> None:
        if self.stages:
            with open(self.stages, "a") as out:
                out.write(f"{at:.6f} {stage}\n")

    @classmethod
    async def open(cls, base: str, cookie: str) -> Live:
        import websockets

        ws = await websockets.connect(
            base.replace("http", "ws", 1) + "/ws/chat/",
            additional_headers={"Cookie": cookie},
            origin=base,
            max_size=2**24,
            ping_interval=None,
            open_timeout=30,
        )
        return cls(ws)

    async def run(self, content: str, tokens: int, timeout: float = 300) -> Sample:
        frame = {
            "type": "chat.send",
            "conversation": None,  # a new conversation each run: the same one-turn prompt
            "content": content,
            "options": {"temperature": 0, "max_new_tokens": tokens},
        }
        started = time.perf_counter()
        self.stamp(SENT, started)
        await self.ws.send(json.dumps(frame))
        first = last = 0.0
        text = ""
        stages: dict[str, float] = {}
        deadline = started + timeout
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), max(0.1, deadline - time.perf_counter()))
            now = time.perf_counter()
            got = json.loads(raw)
            kind = got["type"]
            if kind in ("message.saved", "stream.start"):
                stages[kind] = (now - started) * 1000
                self.stamp(f"client: {kind} received", now)
            if kind == "stream.delta":
                if not first:
                    self.stamp(FIRST, now)
                first = first or now
                last = now
                text += got["delta"]
            elif kind == "error":
                raise RuntimeError(f"server error: {got}")
            elif kind == "stream.end":
                n = got["usage"]["completion_tokens"]
                return Sample(
                    n=n,
                    ttft_ms=(first - started) * 1000,
                    rate=decode_rate(n, first, last),
                    text=text,
                    prompt_tokens=got["usage"]["prompt_tokens"],
                    finish=got["finish_reason"],
                    stages={**stages, "server ttft": got["timings"]["ttft_ms"] or 0.0},
                )

    async def settle(self, seconds: float) -> None:
        """Let the reply's after-work (save, title) finish; drop frames that arrive meanwhile."""
        deadline = time.perf_counter() + seconds
        while (left := deadline - time.perf_counter()) > 0:
            try:
                await asyncio.wait_for(self.ws.recv(), left)
            except TimeoutError:
                return

    async def close(self) -> None:
        await self.ws.close()


@contextmanager
def topology(name: str, threads: int, stages: str | None = None) -> Iterator[str]:
    """Start the servers of a topology; yield the web URL. ``stages``: a file every server
    process stamps its stages in (bench/stages/sitecustomize.py)."""
    from tests.e2e import livedaphne

    env = {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": SECRET,
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_LOG_LEVEL": "warning",
        # The limiter runs (as it does by default) but never refuses the bench's pace.
        "STELLARCHAT_RATE_LIMIT_PER_MINUTE": "100000",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": str(threads),
        "STELLARCHAT_TORCH_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    if stages:
        env["PYTHONPATH"] = str(ROOT / "bench" / "stages")
        env["STELLARCHAT_STAGES_FILE"] = stages
    with ExitStack() as stack:
        data = stack.enter_context(tempfile.TemporaryDirectory(prefix="stellarchat-bench-"))
        env["STELLARCHAT_DATA_DIR"] = data
        if name == "redis":
            env["DATABASE_URL"] = stack.enter_context(livedaphne.postgres_database())
            env["REDIS_URL"] = stack.enter_context(livedaphne.redis_db(REDIS_INDEX))
        server = stack.enter_context(livedaphne.daphne(env))
        if name == "redis":
            stack.enter_context(livedaphne.worker(env))
        yield server.url


# --- the measurement --------------------------------------------------------------------------


@dataclass
class Outcome:
    topology: str
    pairs: list[tuple[Sample, Sample]]  # (bare, live)
    app: list[Sample]
    stages: list[dict[str, float]] = field(default_factory=list)  # --stages: ms after the send


async def measure(name: str, args: argparse.Namespace, bare: Bare, app: AppLoop | None) -> Outcome:
    from tests.e2e.wsclient import signup

    started = time.perf_counter()
    stamps = os.path.join(args.stage_dir, f"{name}.stages") if args.stage_dir else None
    with topology(name, args.threads, stamps) as url:
        cookie = signup(url, f"bench{name}")
        live = await Live.open(url, cookie)
        for _ in range(2):  # warm: the model loaded, code paths and caches hot, both sides
            await live.run(args.prompt, 16, timeout=300)
            await live.settle(args.settle)
            bare.run(args.prompt, 16)
        print(f"[{name}] servers up and warm in {time.perf_counter() - started:.1f} s")
        live.stages = stamps  # the measured runs only
        sides: list[tuple[str, Callable[[], Any]]] = [
            ("bare", lambda: bare.run(args.prompt, args.tokens)),
            ("live", lambda: live.run(args.prompt, args.tokens)),
        ]
        if app is not None:
            sides.append(("app", lambda: app.run(args.prompt, args.tokens)))
        pairs: list[tuple[Sample, Sample]] = []
        app_samples: list[Sample] = []
        for i in range(args.runs):
            got: dict[str, Sample] = {}
            order = sides if i % 2 == 0 else sides[::-1]  # alternate who goes first
            for side, run in order:
                result = run()
                got[side] = await result if asyncio.iscoroutine(result) else result
                if side == "live":
                    await live.settle(args.settle)
            pairs.append((got["bare"], got["live"]))
            if "app" in got:
                app_samples.append(got["app"])
            b, v = got["bare"], got["live"]
            print(
                f"[{name}] run {i + 1:>2}/{args.runs}: bare {b.rate:6.1f} tok/s ttft "
                f"{b.ttft_ms:6.1f} ms | live {v.rate:6.1f} tok/s ttft {v.ttft_ms:6.1f} ms"
                + (f" | app {got['app'].rate:6.1f} tok/s" if "app" in got else ""),
                flush=True,
            )
        await live.close()
    print(f"[{name}] done in {time.perf_counter() - started:.1f} s")
    return Outcome(name, pairs, app_samples, read_stages(stamps) if stamps else [])


SENT = "client: chat.send sent"
FIRST = "client: first stream.delta received"


def read_stages(path: str) -> list[dict[str, float]]:
    """Per measured run, each stage's first stamp after the send, in ms after it."""
    with open(path) as stamps:
        lines = stamps.read().splitlines()
    rows = sorted((float(at), stage) for at, _, stage in (line.partition(" ") for line in lines))
    runs: list[dict[str, float]] = []
    sent = 0.0
    for at, stage in rows:
        if stage == SENT:
            sent = at
            runs.append({})
        elif runs and stage not in runs[-1]:
            runs[-1][stage] = (at - sent) * 1000
    return [run for run in runs if FIRST in run]


def stage_table(runs: list[dict[str, float]]) -> list[str]:
    """Stages up to the first delta, by median: median and p95 after the send, and the step
    from the stage before (medians)."""
    end = statistics.median(run[FIRST] for run in runs)
    names = {stage for run in runs for stage in run}
    rows = []
    for stage in names:
        times = [run[stage] for run in runs if stage in run]
        if len(times) * 2 >= len(runs) and statistics.median(times) <= end:
            rows.append((statistics.median(times), pct(times, 95), stage))
    lines, before = [], 0.0
    for median, p95, stage in sorted(rows):
        lines.append(f"  {median:7.2f} {p95:7.2f}  {median - before:+6.2f}  {stage}")
        before = median
    return lines


def report(outcomes: list[Outcome], args: argparse.Namespace) -> None:
    print()
    print(
        f"B1/B2 stream efficiency: bundled model, greedy, {args.tokens} tokens, "
        f"{args.runs} interleaved runs per side, {args.threads} torch threads on both sides"
    )
    for o in outcomes:
        bare = [b for b, _ in o.pairs]
        live = [v for _, v in o.pairs]
        counts = {(s.n, s.finish) for s in bare + live + o.app}
        prompts = {s.prompt_tokens for s in bare + live}
        same_text = sum(b.text == v.text for b, v in o.pairs)
        print(
            f"[{o.topology}] tokens per run (n, finish): {sorted(counts)}; prompt tokens "
            f"{sorted(prompts)}; identical text in {same_text}/{len(o.pairs)} pairs"
        )
        if counts != {(args.tokens, "length")} or len(prompts) != 1:
            print(f"[{o.topology}] WARNING: the sides did not generate the same token count")
        med = statistics.median
        line = (
            f"[{o.topology}] decode tok/s median: bare {med(s.rate for s in bare):.1f}, "
            f"live {med(s.rate for s in live):.1f}"
        )
        if o.app:
            app_ratio = med(a.rate / b.rate for a, (b, _) in zip(o.app, o.pairs, strict=True))
            line += f", app loop in-process {med(s.rate for s in o.app):.1f}"
            line += f" (app/bare {app_ratio:.3f})"
        print(line)
        bt = [s.ttft_ms for s in bare]
        lt = [s.ttft_ms for s in live]
        at = [s.ttft_ms for s in o.app]
        # B2 read per side: each side's own percentile, then the difference (the pairs' p95
        # below also carries both prefills' jitter, two draws). Beside the pairs' verdict,
        # never instead of it.
        print(
            f"[{o.topology}] ttft ms p50/p95: bare {pct(bt, 50):.1f}/{pct(bt, 95):.1f}, "
            f"live {pct(lt, 50):.1f}/{pct(lt, 95):.1f} (live - bare: "
            f"{pct(lt, 50) - pct(bt, 50):.1f}/{pct(lt, 95) - pct(bt, 95):.1f}, B2 read per side)"
            + (f", app loop in-process {pct(at, 50):.1f}/{pct(at, 95):.1f}" if at else "")
        )
        stages = "; ".join(
            f"{k} {statistics.median(s.stages[k] for s in live):.1f}"
            for k in ("message.saved", "stream.start", "server ttft")
        )
        print(
            f"[{o.topology}] live, median ms after the send: {stages} (server ttft: the "
            f"worker's own, from its backend call to the first token); first delta "
            f"{pct(lt, 50):.1f}"
        )
        # The model's own time to first token jitters by several ms from run to run on a
        # busy machine, on both sides of B2's difference; this splits the app's part off it.
        own = [s.ttft_ms - s.stages["server ttft"] for s in live]
        print(
            f"[{o.topology}] live ttft minus the server's own ttft (the path around the "
            f"model, no prefill) p50/p95: {pct(own, 50):.1f}/{pct(own, 95):.1f} ms"
        )
        if o.stages:
            print(
                f"[{o.topology}] where the first token's time goes ({len(o.stages)} runs; "
                "every process's stamps on one clock): ms after the send, p50, p95, step"
            )
            print("\n".join(stage_table(o.stages)))
    print()
    header = (
        f"{'topology':<10} {'B1 live/bare':>12} {'goal':>7} {'':<4}  "
        f"{'B2 overhead p50 / p95 (ms)':>27} {'goal':>7}  {'p50':<4} {'p95':<4}"
    )
    print(header)
    print("-" * len(header))
    for o in outcomes:
        ratio = statistics.median(v.rate / b.rate for b, v in o.pairs)
        over = [v.ttft_ms - b.ttft_ms for b, v in o.pairs]
        p50, p95 = pct(over, 50), pct(over, 95)
        goal = GOAL_TTFT_MS[o.topology]
        print(
            f"{o.topology:<10} {ratio:>12.3f} {'>= ' + str(GOAL_RATIO):>7} "
            f"{'pass' if ratio >= GOAL_RATIO else 'FAIL':<4}  "
            f"{p50:>12.1f} / {p95:<12.1f} {'<= ' + str(int(goal)):>7}  "
            f"{'pass' if p50 <= goal else 'FAIL':<4} {'pass' if p95 <= goal else 'FAIL':<4}"
        )
    print(
        "B1 = median over pairs of live rate / bare rate; B2 = live ttft - bare ttft per pair "
        "(adjacent runs)."
    )


async def amain(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    bare = Bare()
    names = ["embedded", "redis"] if args.topology == "both" else [args.topology]
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="stellarchat-bench-") as data:
        app = AppLoop(data) if args.app_loop else None
        args.stage_dir = data if args.stages else None
        outcomes = [await measure(name, args, bare, app) for name in names]
    report(outcomes, args)
    print(
        f"load average (1 min) at start {load:.2f}, at end {os.getloadavg()[0]:.2f} on "
        f"{os.cpu_count()} CPUs (other work on the machine competes with both sides)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs per side and topology")
    parser.add_argument("--tokens", type=int, default=400, help="max_new_tokens of every run")
    parser.add_argument("--topology", choices=["both", "embedded", "redis"], default="both")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: the app's default, cores - 1)"
    )
    parser.add_argument("--settle", type=float, default=0.3, help="pause after a live run (s)")
    parser.add_argument("--app-loop", action="store_true", help="add the in-process app loop")
    parser.add_argument(
        "--stages",
        action="store_true",
        help="stamp each stage of the way to the first token in every server process and "
        "print where the time goes (bench/stages; B1 is not for reading from such a run)",
    )
    parser.add_argument("--prompt", default=PROMPT, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads <= 0:  # what the app picks (inference.backends.hf.cpu_threads)
        args.threads = max(1, len(os.sched_getaffinity(0)) - 1)
    started = time.perf_counter()
    asyncio.run(amain(args))
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
