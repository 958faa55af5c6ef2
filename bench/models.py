"""Two local models at once against one: aggregate tokens/s and each model process's memory.

    .venv/bin/python bench/models.py [--repeats 3] [--seconds 6] [--keep-alive 40]

One daphne in the embedded topology (as ``make run``: the model processes are children of the
web process) with a models file of two local models, ``a`` and ``b``. Both are the bundled
model's folder under two names, so each has a model process and a batch of its own while the
work per token is the same: the comparison measures splitting the work over two models, not a
smaller model. Per-user limits are off.

Shapes, sustained (each client sends its next message as soon as its reply ends; tokens
counted inside a ``--seconds`` window after a 1 s warm-up, as bench/concurrency.py does):

- ``one model x 16``: 16 conversations with ``a``;
- ``two models x 8``: 8 conversations with ``a`` and 8 with ``b`` at the same time;
- ``one alone``: 1 conversation with ``a`` (the reference the ratios are over).

The shapes alternate within each repetition, so machine noise spreads evenly; the figures are
medians over repetitions. Then memory: each model process's resident memory once loaded and
after the runs, and, with ``b``'s ``keep_alive``, whether its process is gone and what the
machine got back after ``b`` sat idle that long (``a`` has no keep_alive and stays).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.concurrency import Run, one_reply  # noqa: E402
from bench.load import rss  # noqa: E402
from tests.e2e import livedaphne  # noqa: E402
from tests.e2e.wsclient import LiveSocket, signup  # noqa: E402

MB = 1024 * 1024


def models_file(folder: Path, keep_alive: int) -> Path:
    path = folder / "models.toml"
    bundled = ROOT / "inference" / "bundled" / "stellarbyte-mini"
    path.write_text(
        f"""
default = "a"
[models.a]
backend = "transformers"
path = "{bundled}"
[models.b]
backend = "transformers"
path = "{bundled}"
keep_alive = {keep_alive}
"""
    )
    return path


async def sustained(sockets: list[tuple[LiveSocket, str]], seconds: float, seed: int) -> Run:
    """Every socket keeps one conversation going with its model for 1 s + ``seconds``."""
    begin = time.perf_counter() + 1.0
    window = (begin, begin + seconds)

    async def client(i: int, ws: LiveSocket, model: str) -> list:
        got = []
        while time.perf_counter() < window[1]:
            got.append(await one_reply(ws, i, 128, seed + 97 * len(got) + i, model=model))
        return got

    per_client = await asyncio.gather(*(client(i, ws, m) for i, (ws, m) in enumerate(sockets)))
    await asyncio.sleep(0.5)
    return Run([s for streams in per_client for s in streams], window)


def model_processes(pid: int) -> set[int]:
    """Every process under ``pid`` (a model process may hang under a start-method helper)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in livedaphne.children(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


async def main_async(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="stellarchat-bench-models-"))
    env = {
        "DJANGO_DEBUG": "1",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "STELLARCHAT_DATA_DIR": str(data),
        "STELLARCHAT_MODELS_FILE": str(models_file(data, args.keep_alive)),
        "STELLARCHAT_RATE_LIMIT_PER_MINUTE": "0",
        "STELLARCHAT_MAX_CONCURRENT_STREAMS": "0",
        "HF_HUB_OFFLINE": "1",
    }
    with ExitStack() as stack:
        server = stack.enter_context(livedaphne.daphne(env))
        pid = server.service.proc.pid
        with ThreadPoolExecutor(max_workers=4) as pool:
            cookies = list(pool.map(lambda i: signup(server.url, f"bench{i}"), range(16)))
        sockets = [await LiveSocket.open(server.url, c) for c in cookies]
        rest = rss(pid) or 0.0
        processes: dict[str, int] = {}
        seen: set[int] = set()
        for name in ("a", "b"):  # each model's process is up after its first reply (the
            warm = await one_reply(sockets[0], 0, 16, 1, model=name)  # default's, earlier)
            if warm.error:
                raise SystemExit(f"warm-up reply of {name} failed: {warm.error}")
            (processes[name],) = model_processes(pid) - seen
            seen.add(processes[name])
        loaded = {name: rss(p) or 0.0 for name, p in processes.items()}
        print(
            f"web process {rest / MB:.0f} MB; loaded: "
            + ", ".join(f"{n} {v / MB:.0f} MB (pid {processes[n]})" for n, v in loaded.items())
        )
        shapes = {
            "one model x 16": [(ws, "a") for ws in sockets],
            "two models x 8": [(ws, "a" if i < 8 else "b") for i, ws in enumerate(sockets)],
            "one alone": [(sockets[0], "a")],
        }
        results: dict[str, list[Run]] = {name: [] for name in shapes}
        peak = dict(loaded)
        for rep in range(args.repeats):
            for name, plan in shapes.items():
                run = await sustained(plan, args.seconds, 1000 + rep)
                results[name].append(run)
                for model, p in processes.items():
                    peak[model] = max(peak[model], rss(p) or 0.0)
                errors = sum(1 for s in run.streams if s.error)
                print(
                    f"  rep {rep + 1}/{args.repeats} {name:<15} {run.aggregate:7.1f} tok/s"
                    f"{f'  {errors} errors' if errors else ''}",
                    flush=True,
                )
        alone = statistics.median(r.aggregate for r in results["one alone"])
        print(f"\n{'shape':<16} {'tok/s (median)':>15} {'min-max':>12} {'x alone':>8}")
        for name, runs in results.items():
            aggs = [r.aggregate for r in runs]
            med = statistics.median(aggs)
            print(f"{name:<16} {med:15.1f} {min(aggs):6.0f}-{max(aggs):<5.0f} {med / alone:8.2f}")
        two = statistics.median(r.aggregate for r in results["two models x 8"])
        one = statistics.median(r.aggregate for r in results["one model x 16"])
        print(f"two models x 8 / one model x 16: {two / one:.2f}")
        print(
            "model process RSS, loaded -> peak: "
            + ", ".join(f"{n} {loaded[n] / MB:.0f} -> {peak[n] / MB:.0f} MB" for n in processes)
        )
        if args.keep_alive:
            idle_from = time.monotonic()
            total_before = sum(rss(p) or 0.0 for p in processes.values())
            deadline = idle_from + args.keep_alive + 30
            while rss(processes["b"]) is not None and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            gone = rss(processes["b"]) is None
            total_after = sum(rss(p) or 0.0 for p in processes.values())
            print(
                f"b idle, keep_alive {args.keep_alive} s: its process "
                f"{'exited' if gone else 'STILL THERE'} after "
                f"{time.monotonic() - idle_from:.1f} s; model processes "
                f"{total_before / MB:.0f} MB -> {total_after / MB:.0f} MB "
                f"(a {(rss(processes['a']) or 0) / MB:.0f} MB stays); "
                f"web process {(rss(pid) or 0) / MB:.0f} MB"
            )
            again = await one_reply(sockets[0], 0, 16, 2, model="b")
            print(
                "b again after its unload: "
                + (
                    f"error {again.error}"
                    if again.error
                    else f"answered, first token {1000 * ((again.first or 0) - again.sent):.0f} ms "
                    "(the model loads again)"
                )
            )
        for ws in sockets:
            await ws.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument(
        "--keep-alive", type=int, default=40, help="b's keep_alive (0: no unload check)"
    )
    args = parser.parse_args()
    print(
        f"two models vs one: {args.repeats} repetitions, {args.seconds:g} s windows, "
        f"{os.cpu_count()} CPUs, load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
