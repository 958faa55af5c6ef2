"""B6 wire cost: WebSocket bytes per generated token over a long reply.

    .venv/bin/python bench/wire_cost.py [--tokens 800] [--long 2000]

Embedded topology (one daphne, a throwaway STELLARCHAT_DATA_DIR), one logged-in socket. Counts
the UTF-8 payload bytes of every text frame received from ``stream.start`` to ``stream.end``
inclusive (the column "+hdr" adds the 2 or 4 bytes of each server frame's WebSocket header);
tokens = ``usage.completion_tokens`` of ``stream.end``. Two rows, in one run:

- the bundled model (transformers backend), greedy, ``--tokens`` new tokens on a prompt where
  it runs that long;
- the ``test`` backend (no delay) answering ``[[long N]]`` with N numbered words (N tokens).

Each row is set against a naive protocol computed from the same reply: one frame per token
carrying the whole text so far (the same envelope, ``"text"`` in place of ``"delta"`` and
``"offset"``, the same ``stream.start`` / ``stream.end``). Token k's text so far is the first
round(k * L / n) characters of the L-character reply (the server does not say where tokens end;
on the model's reply the proportional cut sums 0.6 % above the exact per-token cut). Deltas are
coalesced every 30 ms, so bytes/token depends on decode speed: run it on an idle machine.
Goal: <= 60 bytes/token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.wsclient import LONG_PROMPT  # noqa: E402

SECRET = "bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
PROMPT = LONG_PROMPT  # greedy: no end token for 700+ tokens
GOAL = 60.0


def dumps(frame: dict[str, Any]) -> str:
    """JSON as the server writes it (chat.consumers.ChatConsumer.encode_json)."""
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def header_bytes(payload: int) -> int:
    """A server frame's WebSocket header (unmasked): 2 bytes, 4 up to 64 KiB, else 10."""
    return 2 if payload < 126 else 4 if payload < 65536 else 10


@dataclass
class Row:
    label: str
    tokens: int
    finish: str
    frames: dict[str, int]
    payload: int
    with_headers: int
    naive: int
    chars: int
    rate: float | None  # the server's decode tokens/s (stream.end timings)


async def one_reply(base: str, cookie: str, content: str, options: dict[str, Any]) -> Row:
    import websockets

    async with websockets.connect(
        base.replace("http", "ws", 1) + "/ws/chat/",
        additional_headers={"Cookie": cookie},
        origin=base,
        max_size=2**24,
        ping_interval=None,
        open_timeout=30,
    ) as ws:
        frame = {"type": "chat.send", "conversation": None, "content": content, "options": options}
        await ws.send(json.dumps(frame))
        counting = False
        frames: dict[str, int] = {}
        payload = with_headers = 0
        text = ""
        start: dict[str, Any] = {}
        while True:
            raw = await asyncio.wait_for(ws.recv(), 600)
            assert isinstance(raw, str), "binary frame"
            got = json.loads(raw)
            kind = got["type"]
            if kind == "error":
                raise RuntimeError(f"server error: {got}")
            if kind == "stream.start":
                counting, start = True, got
            if not counting:
                continue
            size = len(raw.encode("utf-8"))
            payload += size
            with_headers += size + header_bytes(size)
            frames[kind] = frames.get(kind, 0) + 1
            if kind == "stream.delta":
                assert got["offset"] == len(text), "a gap or overlap"
                text += got["delta"]
            if kind == "stream.end":
                end_raw = raw
                break
    n = got["usage"]["completion_tokens"]
    envelope = {"type": "stream.delta", "conversation": got["conversation"]}
    envelope["message"] = got["message"]
    naive = len(dumps(start).encode()) + len(end_raw.encode())
    for k in range(1, n + 1):
        prefix = text[: round(k * len(text) / n)]
        naive += len(dumps({**envelope, "text": prefix}).encode())
    rate = got["timings"]["tokens_per_second"]
    return Row("", n, got["finish_reason"], frames, payload, with_headers, naive, len(text), rate)


async def measure(backend: str, content: str, options: dict[str, Any], label: str) -> Row:
    from tests.e2e import livedaphne
    from tests.e2e.wsclient import signup

    with tempfile.TemporaryDirectory(prefix="stellarchat-bench-") as data:
        env = {
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": SECRET,
            "DJANGO_SECURE_SSL_REDIRECT": "0",
            "DJANGO_LOG_LEVEL": "warning",
            "STELLARCHAT_DATA_DIR": data,
            "STELLARCHAT_BACKEND": backend,
            "STELLARCHAT_MAX_NEW_TOKENS": str(max(1024, options["max_new_tokens"])),
            "HF_HUB_OFFLINE": "1",
        }
        with livedaphne.daphne(env) as server:
            cookie = signup(server.url, "wire")
            row = await one_reply(server.url, cookie, content, options)
    row.label = label
    return row


async def run(args: argparse.Namespace) -> None:
    rows = [
        await measure(
            "transformers",
            PROMPT,
            {"temperature": 0, "max_new_tokens": args.tokens},
            "bundled model (greedy)",
        ),
        await measure(
            "test",
            f"[[long {args.long}]]",
            {"max_new_tokens": args.long},
            f"test backend [[long {args.long}]]",
        ),
    ]
    print(
        "B6 wire cost: bytes of every text frame from stream.start to stream.end inclusive, "
        "per completion token"
    )
    header = (
        f"{'reply':<30} {'tokens':>6} {'tok/s':>7} {'chars':>6} {'deltas':>6} {'tok/delta':>9} "
        f"{'bytes':>8} {'B/token':>8} {'+hdr':>6} {'naive B/token':>13} {'naive/ours':>10}  goal"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        deltas = r.frames.get("stream.delta", 0)
        per = r.payload / r.tokens
        print(
            f"{r.label:<30} {r.tokens:>6} {r.rate or 0:>7.0f} {r.chars:>6} {deltas:>6} "
            f"{r.tokens / deltas:>9.1f} "
            f"{r.payload:>8} {per:>8.1f} {r.with_headers / r.tokens:>6.1f} "
            f"{r.naive / r.tokens:>13.0f} {r.naive / r.payload:>9.0f}x  "
            f"{'pass' if per <= GOAL else 'FAIL'} (<= {GOAL:.0f})"
        )
        if r.finish != "length" and r.label.startswith("bundled"):
            print(f"  note: the model stopped by itself ({r.finish}) before --tokens")
    print(
        "deltas are coalesced every 30 ms, so bytes/token falls as decode speed (tok/s) rises; "
        f"load average (1 min) now {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    print(
        "naive = one frame per token carrying the whole text so far; frames counted: "
        + "; ".join(f"{r.label}: {r.frames}" for r in rows)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=800, help="the model's max_new_tokens")
    parser.add_argument("--long", type=int, default=2000, help="words of the test backend reply")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    started = time.perf_counter()
    asyncio.run(run(args))
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
