"""B3 concurrency: aggregate tokens/s with 16 conversations at once / one conversation alone.

    .venv/bin/python bench/concurrency.py [--repeats 3] [--compare-unbatched] [--baseline DIR]
                                          [--burst] [--quick] [--timelines]

Measures through the real stack as a user sees it: one daphne process in the embedded
topology (DJANGO_DEBUG=1, a throwaway STELLARCHAT_DATA_DIR, the transformers backend with the
bundled model, per-user limits off) and N WebSocket clients (one user each, signed up over
HTTP), every message a new conversation (distinct prompts, temperature 0.8, top-p 0.95, 128 new
tokens at most, a seed per client and message).

Two shapes of "N conversations at once":

- sustained (default): each client sends its next message as soon as its reply ends, for
  ``--seconds`` (default 6) after a 1 s warm-up, so N conversations generate at once the whole
  time, as on a busy server. Aggregate tokens/s = tokens generated inside the measured window /
  its length (each reply's tokens spread evenly between its first delta and its end);
- burst (``--burst``, the first version of this benchmark): each client sends ONE message at
  the same moment; aggregate = all tokens / (last stream.end - first send). The batch shrinks as
  replies end, so this mostly measures the longest reply of the lot (the model's stopping).

Per-reply decode tokens/s = (completion tokens - 1) / (stream.end - first delta); "slowest" is
the slowest reply of all repetitions.

Every level (1, 2, 4, 8, 16, 32 conversations) runs ``--repeats`` times, levels interleaved
across repetitions so machine noise spreads evenly; the aggregate is the median over
repetitions. ``--compare-unbatched`` starts a second server with STELLARCHAT_MAX_BATCH=1,
``--compare-thread`` one with the model on a thread of the web process instead of its own
process (``STELLARCHAT_MODEL_PROCESS=0``), ``--baseline DIR`` one from another checkout of the
project (e.g. ``git worktree add
/tmp/before <commit>``: "before" and "after" side by side); each runs the same sweep in the same
run, each (repetition, level) right after the first server's, and the ratios per level are
printed. Goal (N=16): aggregate >= 6x one conversation alone, slowest reply >= half the median.
Draws aggregate and per-reply tokens/s against concurrency to data/bench/concurrency.png. Client
and server share the machine's cores, as they do on a developer's laptop.

Other work on the machine shows up as repetitions far apart (the "min-max" column); the verdict
then says INCONCLUSIVE. ``--omp-threads 1`` starts the servers with OMP_NUM_THREADS=1 (torch's
intra-op threads), to tell that contention apart from the app's own limits. ``--timelines``
prints the slowest replies at N >= 16 delta by delta (when each came, how much text), to tell
slow steps from a late ``stream.end``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e import livedaphne  # noqa: E402
from tests.e2e.wsclient import LiveSocket, signup  # noqa: E402

PNG = ROOT / "data" / "bench" / "concurrency.png"
TOPICS = [
    "the moon", "a lighthouse", "coffee", "a lost key", "rain in the city", "an old robot",
    "the ocean", "a mountain village", "a red kite", "winter mornings", "a library at night",
    "a friendly dragon", "trains", "a garden", "the first snow", "a clockmaker", "bees",
    "a desert road", "paper boats", "a jazz band", "the northern lights", "a tiny cat",
    "a market day", "volcanoes", "a violin", "the stars", "a forest path", "a bakery",
    "a sailing ship", "thunderstorms", "a chess game", "a bicycle",
]  # fmt: skip
GOAL_RATIO = 6.0


@dataclass
class Stream:
    sent: float
    first: float | None = None
    end: float | None = None
    last: float | None = None  # the last stream.delta
    tokens: int = 0
    finish: str = ""
    error: str | None = None
    deltas: list[tuple[float, int]] = field(default_factory=list)  # (time, characters)

    @property
    def decode_rate(self) -> float | None:
        if self.first is None or self.end is None or self.tokens < 2 or self.end <= self.first:
            return None
        return (self.tokens - 1) / (self.end - self.first)

    def tokens_within(self, start: float, stop: float) -> float:
        """Tokens generated in [start, stop]: the first at the first delta, the rest spread
        evenly until the end."""
        if self.first is None or self.end is None or self.tokens < 1:
            return 0.0
        count = 1.0 if start <= self.first <= stop else 0.0
        if self.tokens > 1 and self.end > self.first:
            overlap = min(stop, self.end) - max(start, self.first)
            count += (self.tokens - 1) * max(0.0, overlap) / (self.end - self.first)
        return count


@dataclass
class Run:
    streams: list[Stream]
    window: tuple[float, float] | None = None  # sustained: the measured window

    @property
    def wall(self) -> float:
        if self.window is not None:
            return self.window[1] - self.window[0]
        ends = [s.end for s in self.streams if s.end is not None]
        return max(ends) - min(s.sent for s in self.streams)

    @property
    def aggregate(self) -> float:
        if self.window is not None:
            return sum(s.tokens_within(*self.window) for s in self.streams) / self.wall
        return sum(s.tokens for s in self.streams) / self.wall


@dataclass
class Level:
    n: int
    runs: list[Run]

    @property
    def aggregate(self) -> float:
        return statistics.median(r.aggregate for r in self.runs)

    @property
    def spread(self) -> str:
        aggs = [r.aggregate for r in self.runs]
        return f"{min(aggs):.0f}-{max(aggs):.0f}"

    @property
    def noisy(self) -> bool:
        """Repetitions more than 1.5x apart: the machine was busy with something else."""
        aggs = [r.aggregate for r in self.runs]
        return max(aggs) > 1.5 * min(aggs)

    @property
    def streams(self) -> list[Stream]:
        return [s for r in self.runs for s in r.streams]

    @property
    def rates(self) -> list[float]:
        return [r for s in self.streams if (r := s.decode_rate) is not None]

    @property
    def ttfts(self) -> list[float]:
        return [s.first - s.sent for s in self.streams if s.first is not None]


class Server:
    """One daphne (embedded topology) and one open socket per signed-up user."""

    def __init__(
        self,
        label: str,
        max_batch: int,
        stack: ExitStack,
        omp_threads: int | None,
        root: Path = ROOT,
        model_process: bool = True,
        dtype: str | None = None,
    ) -> None:
        self.label = label
        data = tempfile.mkdtemp(prefix=f"stellarchat-bench-{label}-")
        env = {
            "DJANGO_DEBUG": "1",
            "DJANGO_SECURE_SSL_REDIRECT": "0",
            "STELLARCHAT_DATA_DIR": data,
            "STELLARCHAT_BACKEND": "transformers",
            "STELLARCHAT_RATE_LIMIT_PER_MINUTE": "0",
            "STELLARCHAT_MAX_CONCURRENT_STREAMS": "0",
            "STELLARCHAT_MAX_BATCH": str(max_batch),
            "STELLARCHAT_MODEL_PROCESS": "1" if model_process else "0",
            "HF_HUB_OFFLINE": "1",
        }
        if dtype:
            env["STELLARCHAT_DTYPE"] = dtype
        if omp_threads:  # torch's intra-op threads (unset: torch's default, one per core)
            env["OMP_NUM_THREADS"] = str(omp_threads)
            env["STELLARCHAT_TORCH_THREADS"] = str(omp_threads)
        self.server = stack.enter_context(livedaphne.daphne(env, root=root))
        self.url = self.server.url
        self.cookies: list[str] = []
        self.sockets: list[LiveSocket] = []

    def sign_up(self, count: int) -> None:
        with ThreadPoolExecutor(max_workers=4) as pool:
            names = [f"bench{self.label}{i}" for i in range(count)]
            self.cookies = list(pool.map(lambda name: signup(self.url, name), names))

    async def connect(self) -> None:
        self.sockets = [await LiveSocket.open(self.url, cookie) for cookie in self.cookies]

    async def close(self) -> None:
        for ws in self.sockets:
            await ws.close()


async def one_reply(
    ws: LiveSocket, client: int, max_new_tokens: int, seed: int, model: str | None = None
) -> Stream:
    """Send one message (a new conversation) and follow its reply to the end (by ``model``,
    a name of the models file; None: the server's default)."""
    frame = {
        "type": "chat.send",
        "conversation": None,
        "content": f"Tell me a short story about {TOPICS[client % len(TOPICS)]}.",
        "options": {
            "temperature": 0.8,
            "top_p": 0.95,
            "max_new_tokens": max_new_tokens,
            "seed": seed,
        },
    }
    if model is not None:
        frame["model"] = model
    stream = Stream(sent=time.perf_counter())
    await ws.send(frame)
    started = False
    while True:
        got = await ws.recv(timeout=300)
        now = time.perf_counter()
        kind = got["type"]
        if kind == "stream.start":
            started = True
        elif kind == "stream.delta":
            stream.last = now
            stream.deltas.append((now, len(got.get("delta", ""))))
            if stream.first is None:
                stream.first = now
        elif kind == "error":
            stream.error = f"{got.get('code')}: {str(got.get('detail', ''))[:90]}"
            if not started:  # refused before any reply started: no stream.end follows
                stream.end = now
                return stream
        elif kind == "stream.end":
            stream.end = now
            stream.tokens = int(got["usage"]["completion_tokens"])
            stream.finish = got["finish_reason"]
            return stream
        # conversation.created, message.saved, conversation.updated (a late title): ignored


async def run_level(
    server: Server, n: int, max_new_tokens: int, seed: int, seconds: float | None
) -> Run:
    """N clients at once: one message each (burst, ``seconds`` None), or messages back to
    back for a 1 s warm-up plus ``seconds`` (sustained)."""
    barrier = asyncio.Barrier(n)
    window: tuple[float, float] | None = None

    async def client(i: int) -> list[Stream]:
        await barrier.wait()
        if seconds is None:
            return [await one_reply(server.sockets[i], i, max_new_tokens, seed + i)]
        got: list[Stream] = []
        while time.perf_counter() < window[1]:  # type: ignore[index]
            got.append(
                await one_reply(server.sockets[i], i, max_new_tokens, seed + 97 * len(got) + i)
            )
        return got

    if seconds is not None:
        begin = time.perf_counter() + 1.0  # warm-up: every client has its first reply going
        window = (begin, begin + seconds)
    per_client = await asyncio.gather(*(client(i) for i in range(n)))
    await asyncio.sleep(0.5)  # let the last titles and saves settle before the next level
    return Run([s for streams in per_client for s in streams], window)


def fmt_rate(value: float | None) -> str:
    return f"{value:8.1f}" if value is not None else "       -"


def timelines(level: Level, count: int = 8) -> None:
    """The slowest replies' deltas (ms after the first, characters), and two median ones:
    tells a reply slowed by its steps (deltas far apart, or few characters each) from one
    slowed by the end of its reply (``stream.end`` late after the last delta)."""
    timed = sorted(
        ((s, r.window[0] if r.window else s.sent) for r in level.runs for s in r.streams),
        key=lambda pair: pair[0].decode_rate or float("inf"),
    )
    timed = [pair for pair in timed if pair[0].decode_rate is not None]
    middle = len(timed) // 2
    for stream, start in timed[:count] + timed[middle : middle + 2]:
        assert stream.first is not None and stream.end is not None
        deltas = " ".join(f"{1000 * (t - stream.first):.0f}({c})" for t, c in stream.deltas)
        ttft = 1000 * (stream.first - stream.sent)
        print(
            f"    {stream.decode_rate:.0f} tok/s, {stream.tokens} tokens, sent at "
            f"{stream.sent - start:+.2f} s, first delta after {ttft:.0f} ms; deltas {deltas}; "
            f"stream.end {1000 * (stream.end - stream.first):.0f}"
        )


def report(label: str, levels: list[Level], *, show_timelines: bool = False) -> float | None:
    base = levels[0].aggregate if levels and levels[0].n == 1 else None
    print(f"\n{label}")
    header = (
        f"{'N':>3} {'agg tok/s':>10} {'(min-max of reps)':>17} {'x N=1':>6} {'stream p50':>10} "
        f"{'slowest':>8} "
        f"{'slow/p50':>8} {'mean len':>8} {'TTFT p50':>9} {'TTFT max':>9} {'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    for level in levels:
        rates = level.rates
        p50 = statistics.median(rates) if rates else None
        slow = min(rates) if rates else None
        errors = sum(1 for s in level.streams if s.error or s.finish == "error")
        ttfts = level.ttfts
        print(
            f"{level.n:>3} {level.aggregate:>10.1f} {level.spread:>17} "
            f"{(level.aggregate / base if base else float('nan')):>5.2f}x "
            f"{fmt_rate(p50):>10} {fmt_rate(slow)} "
            f"{(slow / p50 if p50 and slow else float('nan')):>8.2f} "
            f"{statistics.mean(s.tokens for s in level.streams):>8.1f} "
            f"{(statistics.median(ttfts) * 1000 if ttfts else float('nan')):>7.0f}ms "
            f"{(max(ttfts) * 1000 if ttfts else float('nan')):>7.0f}ms {errors:>6}"
        )
    for level in levels:
        codes = Counter(s.error or "error" for s in level.streams if s.error or s.finish == "error")
        if codes:
            print(f"  N={level.n}: errors: {dict(codes)}")
    # A short reply's rate rests on few deltas (one flush interval can halve it): the slowest
    # replies with their lengths tell a slow stream from a short one.
    for level in levels:
        timed = sorted((r, s.tokens) for s in level.streams if (r := s.decode_rate) is not None)
        if level.n >= 16 and timed:
            print(
                f"  N={level.n}: slowest replies (tok/s, tokens): "
                + ", ".join(f"{rate:.0f} ({tokens})" for rate, tokens in timed[:6])
            )
            if show_timelines:
                timelines(level)
    # How long stream.end (the reply saved) trails its last delta: part of every reply's
    # measured time, so most of a short reply's.
    for level in levels:
        gaps = sorted(s.end - s.last for s in level.streams if s.end and s.last)
        if gaps:
            p95 = gaps[int(0.95 * (len(gaps) - 1))]
            print(
                f"  N={level.n}: stream.end after the last delta p50 / p95 "
                f"{statistics.median(gaps) * 1000:.1f} / {p95 * 1000:.1f} ms"
            )
    return base


def side_by_side(
    title: str,
    mine: list[Level],
    mine_base: float | None,
    theirs: list[Level],
    theirs_base: float | None,
) -> None:
    """Per level: ``mine`` / ``theirs`` aggregate, and each one's x N=1."""
    print(f"\n{title}")
    for a, b in zip(mine, theirs, strict=True):
        line = f"  N={a.n:<3} {a.aggregate / b.aggregate:5.2f}x"
        if mine_base and theirs_base:
            line += f"   {a.aggregate / mine_base:5.2f}x vs {b.aggregate / theirs_base:5.2f}x"
        print(line)
    print()


def verdict(levels: list[Level], base: float | None, label: str = "") -> None:
    at16 = next((level for level in levels if level.n == 16), None)
    if at16 is None or base is None:
        print("B3 verdict: needs levels 1 and 16")
        return
    ratio = at16.aggregate / base
    rates = at16.rates
    p50, slow = statistics.median(rates), min(rates)
    fair = slow >= p50 / 2
    shaky = [level.n for level in levels if level.n in (1, 16) and level.noisy]
    if shaky:
        print(
            f"B3 verdict: INCONCLUSIVE (repetitions at N={','.join(map(str, shaky))} differ by "
            "more than 1.5x); the figures it would give:"
        )
    print(
        f"B3 verdict{f' ({label})' if label else ''} (N=16): aggregate {ratio:.2f}x one alone "
        f"(goal >= {GOAL_RATIO:g}x): "
        f"{'met' if ratio >= GOAL_RATIO else 'NOT met'}; slowest stream {slow:.1f} tok/s vs "
        f"median {p50:.1f} ({slow / p50:.2f}, goal >= 0.5): {'met' if fair else 'NOT met'}"
    )


def plot(batched: list[Level], unbatched: list[Level] | None, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    series = [("batched", batched, "-", True)]
    if unbatched:  # dashed, hollow markers, values not printed (they would overlap)
        series.append(("unbatched (MAX_BATCH=1)", unbatched, "--", False))
    for name, levels, style, labelled in series:
        face = {} if labelled else {"markerfacecolor": "white"}
        xs = [level.n for level in levels]
        agg = [level.aggregate for level in levels]
        med = [statistics.median(level.rates) for level in levels]
        low = [m - min(level.rates) for m, level in zip(med, levels, strict=True)]
        high = [max(level.rates) - m for m, level in zip(med, levels, strict=True)]
        ax.plot(xs, agg, style, marker="o", color="tab:blue", label=f"aggregate, {name}", **face)
        ax.errorbar(
            xs,
            med,
            yerr=[low, high],
            fmt=style,
            marker="s",
            color="tab:orange",
            capsize=4,
            label=f"per stream (median, min-max), {name}",
            **face,
        )
        if not labelled:
            continue
        for x, a, m in zip(xs, agg, med, strict=True):
            ax.annotate(f"{a:.0f}", (x, a), textcoords="offset points", xytext=(0, 8),
                        ha="center", fontsize=8, color="tab:blue")  # fmt: skip
            ax.annotate(f"{m:.0f}", (x, m), textcoords="offset points", xytext=(7, -10),
                        ha="left", fontsize=8, color="tab:orange")  # fmt: skip
    if batched and batched[0].n == 1:
        one = batched[0].aggregate
        xs = [level.n for level in batched]
        ax.plot(xs, [one * x for x in xs], ":", color="grey", label="linear scaling from N=1")
        if 16 in xs:
            ax.plot([16], [GOAL_RATIO * one], "*", color="tab:green", markersize=12,
                    label=f"B3 goal: {GOAL_RATIO:g}x N=1 at N=16")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks([level.n for level in batched], [str(level.n) for level in batched])
    ax.set_xlabel("conversations generating at once (N)")
    ax.set_ylabel("tokens/s (log scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    PNG.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PNG)
    print(f"\nplot: {PNG}")


async def sweep(
    servers: list[Server],
    levels: list[int],
    repeats: int,
    max_new_tokens: int,
    seed: int,
    seconds: float | None,
) -> list[list[Level]]:
    results = [[Level(n, []) for n in levels] for _ in servers]
    for server in servers:
        await server.connect()
        warm = await run_level(server, 1, max_new_tokens, seed, None)  # loads the model
        if warm.streams[0].error:
            raise SystemExit(f"{server.label}: warm-up reply failed: {warm.streams[0].error}")
    for rep in range(repeats):
        for i, n in enumerate(levels):
            for s, server in enumerate(servers):
                run = await run_level(server, n, max_new_tokens, seed, seconds)
                results[s][i].runs.append(run)
                print(
                    f"  rep {rep + 1}/{repeats} N={n:<2} {server.label:<9} "
                    f"{run.aggregate:7.1f} tok/s  "
                    f"{run.wall:5.1f} s",
                    flush=True,
                )
    for server in servers:
        await server.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", help="comma-separated N values (default 1,2,4,8,16,32)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--max-batch", type=int, default=32, help="STELLARCHAT_MAX_BATCH")
    parser.add_argument("--seed", type=int, default=1000, help="client i uses seed + i")
    parser.add_argument(
        "--compare-unbatched",
        action="store_true",
        help="also run the sweep on a second server with STELLARCHAT_MAX_BATCH=1",
    )
    parser.add_argument(
        "--compare-thread",
        action="store_true",
        help="also run the sweep with the model on a thread (STELLARCHAT_MODEL_PROCESS=0)",
    )
    parser.add_argument(
        "--compare-dtype",
        choices=["float32", "bfloat16", "float16"],
        help="also run the sweep on a server with this STELLARCHAT_DTYPE",
    )
    parser.add_argument(
        "--omp-threads",
        type=int,
        default=None,
        help="OMP_NUM_THREADS for the servers (default: unset, as `make run` starts it)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another checkout of the project to run side by side (before/after)",
    )
    parser.add_argument(
        "--burst", action="store_true", help="one message per client instead of sustained"
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="sustained: measured window")
    parser.add_argument("--quick", action="store_true", help="one repetition of levels 1,4,16")
    parser.add_argument(
        "--timelines",
        action="store_true",
        help="print the slowest replies' deltas at N >= 16 (ms after the first, characters)",
    )
    args = parser.parse_args()
    if args.quick:
        args.levels, args.repeats = args.levels or "1,4,16", 1
    args.levels = args.levels or "1,2,4,8,16,32"
    levels = sorted({int(n) for n in args.levels.split(",")})

    load_start = os.getloadavg()
    started = time.monotonic()
    seconds = None if args.burst else args.seconds
    shape = "burst (one message each)" if args.burst else f"sustained ({args.seconds:g} s window)"
    print(
        f"B3 concurrency, {shape}: levels {levels}, {args.repeats} repetitions, max_new_tokens "
        f"{args.max_new_tokens}, STELLARCHAT_MAX_BATCH={args.max_batch}"
        f"{' vs 1' if args.compare_unbatched else ''}, {os.cpu_count()} CPUs, OMP_NUM_THREADS="
        f"{args.omp_threads or 'unset'}"
    )
    print("load average at start: " + " ".join(f"{x:.2f}" for x in load_start))
    with ExitStack() as stack:
        servers = [Server("batched", args.max_batch, stack, args.omp_threads)]
        if args.compare_unbatched:
            servers.append(Server("unbatched", 1, stack, args.omp_threads))
        if args.compare_thread:
            servers.append(
                Server("thread", args.max_batch, stack, args.omp_threads, model_process=False)
            )
        if args.compare_dtype:
            servers.append(
                Server("dtype", args.max_batch, stack, args.omp_threads, dtype=args.compare_dtype)
            )
        if args.baseline:
            base_root = args.baseline.resolve()
            servers.append(
                Server("baseline", args.max_batch, stack, args.omp_threads, root=base_root)
            )
        for server in servers:
            server.sign_up(max(levels))
        print(f"servers up, {max(levels)} users each ({time.monotonic() - started:.0f} s)")
        results = asyncio.run(
            sweep(servers, levels, args.repeats, args.max_new_tokens, args.seed, seconds)
        )
    batched = results[0]
    by_label = {server.label: result for server, result in zip(servers, results, strict=True)}
    unbatched = by_label.get("unbatched")
    shown = {"show_timelines": args.timelines}
    base = report(f"this checkout (STELLARCHAT_MAX_BATCH={args.max_batch})", batched, **shown)
    if unbatched:
        report("unbatched (STELLARCHAT_MAX_BATCH=1)", unbatched, **shown)
        title = "gain of batching, aggregate batched / unbatched:"
        side_by_side(title, batched, None, unbatched, None)
    if "thread" in by_label:
        thread = by_label["thread"]
        report(
            "model on a thread of the web process (STELLARCHAT_MODEL_PROCESS=0)", thread, **shown
        )
        side_by_side(
            "model process / model on a thread, aggregate per level:", batched, None, thread, None
        )
    if "dtype" in by_label:
        other = by_label["dtype"]
        other_base = report(f"STELLARCHAT_DTYPE={args.compare_dtype}", other, **shown)
        title = f"{args.compare_dtype} / this checkout's default, aggregate per level (x N=1):"
        side_by_side(title, other, other_base, batched, base)
        verdict(other, other_base, label=args.compare_dtype)
    if "baseline" in by_label:
        before = by_label["baseline"]
        before_base = report(f"baseline {args.baseline}", before, **shown)
        title = "this checkout / baseline, aggregate per level (x N=1 ratio: after vs before):"
        side_by_side(title, batched, base, before, before_base)
        verdict(before, before_base, label="baseline")
    print()
    verdict(batched, base)
    noisy = sorted({lv.n for result in results for lv in result if lv.noisy})
    if noisy:
        print(
            f"WARNING: noisy: at N={','.join(map(str, noisy))} repetitions differ by more than "
            "1.5x (the machine was busy?); rerun on an idle machine, more --repeats, or compare "
            "with --omp-threads 1"
        )
    load_end = os.getloadavg()
    print("load average at end:   " + " ".join(f"{x:.2f}" for x in load_end))
    print(f"total time: {time.monotonic() - started:.0f} s")
    plot(
        batched,
        unbatched,
        f"B3 {'burst' if args.burst else 'sustained'}: bundled model, embedded daphne, "
        f"{os.cpu_count()} CPUs"
        f"{f', OMP_NUM_THREADS={args.omp_threads}' if args.omp_threads else ''}, max_new_tokens "
        f"{args.max_new_tokens}, median of {args.repeats}; load {load_start[0]:.1f} -> "
        f"{load_end[0]:.1f}",
    )


if __name__ == "__main__":
    main()
