"""What the cancellation-safe receive of the Redis channel layer costs, and what it saves.

    .venv/bin/python bench/layer_receive.py [--sockets 25] [--messages 2000] [--rounds 3]

A web process's sockets all read one Redis queue through channels-redis's shared receive.
``stellarchat.redis_layer`` runs that queue's pop as a task of its own so that a socket closing
mid-pop cannot drop another socket's message (channels-redis's stock receive does). Measured
side by side, stock and ours alternating round by round on one Redis (a throwaway database
index of the local server):

- delivery: ``--sockets`` sockets of one process each receive their share of ``--messages``
  messages sent by another process: paced (each sent once the one before arrived: time from
  send to receipt, p50 / p95, the latency a delta pays), then all at once (messages per
  second). Prints ours / stock.
- churn: one socket receives ``--messages`` numbered messages while sockets of the same
  process open and close around it and the event loop is now and then busy; how many it
  missed (the loss fixed, counted).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from channels_redis.core import RedisChannelLayer as Stock  # noqa: E402

from stellarchat.redis_layer import RedisChannelLayer as Ours  # noqa: E402
from tests.deploy import layer_churn  # noqa: E402
from tests.e2e import livedaphne  # noqa: E402

REDIS_INDEX = 7


def make(cls: type, url: str) -> Any:
    return layer_churn.make(cls, url, capacity=100_000)


async def delivery(cls: type, url: str, sockets: int, messages: int) -> dict[str, float]:
    """Paced: one message at a time, to each socket in turn, the next sent once it arrived
    (the latency a delta pays); then a burst of all of them at once (throughput)."""
    layer, sender = make(cls, url), make(Stock, url)
    channels = [await layer.new_channel() for _ in range(sockets)]
    arrived: asyncio.Queue[float] = asyncio.Queue()

    async def socket(channel: str) -> None:
        while True:
            await layer.receive(channel)
            arrived.put_nowait(time.perf_counter())

    readers = [asyncio.ensure_future(socket(c)) for c in channels]
    try:
        await asyncio.sleep(0.2)
        latencies = []
        for i in range(messages):
            sent = time.perf_counter()
            await sender.send(channels[i % sockets], {"type": "x"})
            latencies.append(await asyncio.wait_for(arrived.get(), 10) - sent)
        started = time.perf_counter()
        for i in range(messages):
            await sender.send(channels[i % sockets], {"type": "x"})
        for _ in range(messages):
            await asyncio.wait_for(arrived.get(), 10)
        elapsed = time.perf_counter() - started
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await layer.close_pools()
        await sender.close_pools()
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))] * 1000,
        "per_s": messages / elapsed,
    }


async def churn(cls: type, url: str, messages: int, seed: int) -> dict[str, float]:
    got, closed = await layer_churn.churn(cls, url, messages, seed)
    return {"missed": messages - len(set(got)), "closed": closed}


async def main(args: argparse.Namespace) -> None:
    rows: dict[str, list[dict[str, float]]] = {"stock": [], "ours": []}
    losses: dict[str, list[dict[str, float]]] = {"stock": [], "ours": []}
    with livedaphne.redis_db(REDIS_INDEX) as url:
        for r in range(args.rounds):
            order = [("stock", Stock), ("ours", Ours)]
            if r % 2:
                order.reverse()
            for name, cls in order:
                rows[name].append(await delivery(cls, url, args.sockets, args.messages))
                losses[name].append(await churn(cls, url, args.messages, seed=r))
    print(f"delivery: {args.sockets} sockets of one process, {args.messages} messages a round")
    print(f"{'':6} {'p50 ms':>8} {'p95 ms':>8} {'msg/s':>8}   (median over {args.rounds} rounds)")
    med = {
        name: {k: statistics.median(row[k] for row in rs) for k in ("p50_ms", "p95_ms", "per_s")}
        for name, rs in rows.items()
    }
    for name, m in med.items():
        print(f"{name:6} {m['p50_ms']:8.3f} {m['p95_ms']:8.3f} {m['per_s']:8.0f}")
    print(
        "ours / stock: p50 {:.2f}x, p95 {:.2f}x, throughput {:.2f}x".format(
            med["ours"]["p50_ms"] / med["stock"]["p50_ms"],
            med["ours"]["p95_ms"] / med["stock"]["p95_ms"],
            med["ours"]["per_s"] / med["stock"]["per_s"],
        )
    )
    print(f"churn: one socket, {args.messages} messages, others closing around it")
    for name, ls in losses.items():
        missed = [int(x["missed"]) for x in ls]
        closed = [int(x["closed"]) for x in ls]
        print(f"{name:6} missed {missed} with {closed} sockets closed")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=25)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
