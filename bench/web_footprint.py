"""B4 web footprint: memory of one daphne web process holding 1,000 idle logged-in WebSockets.

    .venv/bin/python bench/web_footprint.py [--sockets 1000] [--users 10]

Production topology, web side only: one daphne (``STELLARCHAT_BACKEND`` left at its default,
``transformers``, so a web process that imported torch would show), Redis db 6 and a throwaway
PostgreSQL database; no worker (idle sockets need none). A few users sign up over HTTP; their
session cookies are reused across sockets, opened concurrently from this process with the
``websockets`` package (at most ``--concurrency`` handshakes in flight) and left idle.

Measures, in one run and side by side, the web process's resident memory (VmRSS and VmHWM from
/proc/PID/status, PSS from /proc/PID/smaps_rollup) warm and idle with 0 sockets, then holding
``--sockets`` sockets (the server's own count, from /metrics, is checked), then again after they
closed; prints the per-socket cost and whether torch is mapped in the process
(/proc/PID/maps). Goal: <= 250 MB RSS with 1,000 sockets, torch not imported.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECRET = "bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
REDIS_INDEX = 6
GOAL_MB = 250.0
MB = 1024 * 1024


def memory(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM (peak RSS) and Pss of a process, in bytes (Pss absent without smaps)."""
    found: dict[str, float] = {}
    status = Path(f"/proc/{pid}/status").read_text()
    for key in ("VmRSS", "VmHWM"):
        match = re.search(rf"^{key}:\s+(\d+) kB", status, re.M)
        if match:
            found[key] = int(match.group(1)) * 1024.0
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return found
    match = re.search(r"^Pss:\s+(\d+) kB", rollup, re.M)
    if match:
        found["Pss"] = int(match.group(1)) * 1024.0
    return found


def torch_loaded(pid: int) -> bool:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "libtorch" in maps or "/torch/lib/" in maps


def open_sockets_metric(base: str) -> int | None:
    """The server's own count of open chat sockets (its /metrics, open without a token)."""
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    match = re.search(r"^stellarchat_websocket_connections(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    return int(float(match.group(1))) if match else None


async def open_many(base: str, cookies: list[str], count: int, concurrency: int) -> list[Any]:
    import websockets

    url = base.replace("http", "ws", 1) + "/ws/chat/"
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Any:
        async with gate:
            return await websockets.connect(
                url,
                additional_headers={"Cookie": cookies[i % len(cookies)]},
                origin=base,
                ping_interval=None,  # idle means idle (daphne still pings every 20 s)
                open_timeout=60,
            )

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def show(label: str, mem: dict[str, float]) -> None:
    pss = f"{mem['Pss'] / MB:7.1f} MB" if "Pss" in mem else "    n/a"
    print(
        f"{label:<28} RSS {mem['VmRSS'] / MB:7.1f} MB   PSS {pss}   peak RSS "
        f"{mem['VmHWM'] / MB:7.1f} MB"
    )


async def run(args: argparse.Namespace) -> None:
    from tests.e2e import livedaphne
    from tests.e2e.wsclient import signup

    env = {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": SECRET,
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_LOG_LEVEL": "warning",
        "HF_HUB_OFFLINE": "1",
    }
    with ExitStack() as stack:
        env["STELLARCHAT_DATA_DIR"] = stack.enter_context(
            tempfile.TemporaryDirectory(prefix="stellarchat-bench-")
        )
        env["DATABASE_URL"] = stack.enter_context(livedaphne.postgres_database())
        env["REDIS_URL"] = stack.enter_context(livedaphne.redis_db(REDIS_INDEX))
        server = stack.enter_context(livedaphne.daphne(env))
        pid = server.service.pid
        cookies = [signup(server.url, f"footprint{i}") for i in range(args.users)]
        # Warm: every code path a socket takes has run once (imports, first queries, caches).
        warm = await open_many(server.url, cookies, len(cookies), args.concurrency)
        for ws in warm:
            await ws.close()
        await asyncio.sleep(args.settle)
        idle = memory(pid)

        started = time.perf_counter()
        sockets = await open_many(server.url, cookies, args.sockets, args.concurrency)
        opened_in = time.perf_counter() - started
        await asyncio.sleep(args.settle)
        held = memory(pid)
        counted = open_sockets_metric(server.url)
        alive = sum(1 for ws in sockets if ws.state.name == "OPEN")

        for ws in sockets:
            await ws.close()
        await asyncio.sleep(args.settle)
        after = memory(pid)
        torch = torch_loaded(pid)

    print(
        f"B4 web footprint: one daphne web process (Redis topology, STELLARCHAT_BACKEND default), "
        f"{args.users} users"
    )
    print(
        f"opened {args.sockets} sockets in {opened_in:.1f} s ({args.concurrency} handshakes at "
        f"a time); open on the client: {alive}; the server counts: {counted}"
    )
    show("idle, 0 sockets", idle)
    show(f"holding {args.sockets} sockets", held)
    show("after closing them", after)
    per_rss = (held["VmRSS"] - idle["VmRSS"]) / args.sockets / 1024
    line = f"per socket: RSS {per_rss:.1f} KB"
    if "Pss" in held and "Pss" in idle:
        line += f", PSS {(held['Pss'] - idle['Pss']) / args.sockets / 1024:.1f} KB"
    ratio = held["VmRSS"] / idle["VmRSS"]
    print(f"{line}; RSS holding / idle: {ratio:.2f}x")
    print(f"torch imported in the web process: {'YES' if torch else 'no'}")
    ok = held["VmRSS"] <= GOAL_MB * MB and not torch and alive == args.sockets
    print(
        f"goal (<= {GOAL_MB:.0f} MB RSS with {args.sockets} sockets, torch not imported): "
        f"{'met' if ok else 'NOT met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=50, help="handshakes in flight")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before each reading")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.sockets * 2 + 256  # this process and daphne (which inherits it)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    os.environ["HF_HUB_OFFLINE"] = "1"
    started = time.perf_counter()
    asyncio.run(run(args))
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
