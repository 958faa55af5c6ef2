"""The database work before a follow-up turn's reply can start, on its time to first token.

    .venv/bin/python bench/turn_start.py [--turns 300] [--rounds 3] [--baseline DIR]

What ``chat.actions._start`` runs in its one trip to the database thread when a person sends
a message in an existing conversation: ``services.reply_request`` (lock, limits, the user's
turn and the reply placeholder, one transaction) and the context the job carries
(``selectors.context_turns``). Timed per turn on a throwaway PostgreSQL database (production)
and on SQLite (``make run``), with the default per-user limits; a fresh conversation every 10
turns keeps the context a typical length. ``--baseline DIR`` loads another checkout's
``chat/services.py`` and ``chat/selectors.py`` (a ``git worktree`` of an earlier commit; the
models must be the same) into the same process beside this one's and alternates the two turn
by turn, so both meet the same moment of a noisy host; it prints after / before. B2 itself
(bench/stream_efficiency.py) sends one-turn new conversations, which take
``services.conversation_start`` instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load(root: Path | None) -> tuple[Any, Any]:
    """(services, selectors): this checkout's, or ``root``'s files loaded beside them (same
    models and helpers; the two versions then take turns in one process)."""
    from chat import selectors, services

    if root is None:
        return services, selectors
    loaded = []
    for name in ("services", "selectors"):
        spec = importlib.util.spec_from_file_location(f"baseline_{name}", root / f"chat/{name}.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        loaded.append(module)
    return loaded[0], loaded[1]


def measure(turns: int, baseline: Path | None) -> dict[str, list[float]]:
    """Milliseconds per follow-up turn start for each version, turn by turn (run as a child)."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from chat.models import Message

    call_command("migrate", verbosity=0)
    versions = {"this checkout": load(None)}
    if baseline is not None:
        versions["baseline"] = load(baseline)
    conversations: dict[str, Any] = {}
    times: dict[str, list[float]] = {label: [] for label in versions}
    for i in range(turns + 20):  # the first 20: warm-up (connections, query compilation)
        order = list(versions.items())
        if i % 2:
            order.reverse()  # neither version always goes first
        for label, (services, selectors) in order:
            if i % 10 == 0:  # a fresh conversation every 10 turns: a typical context length
                user = get_user_model().objects.create_user(
                    f"{label}{i}.{time.time_ns()}", password="x" * 16
                )
                conversation, _, first = services.conversation_start(
                    owner=user, content="Tell me about stars.", model_name="bench"
                )
                Message.objects.filter(pk=first.pk).update(status="complete", content="Stars.")
                conversations[label] = conversation
            began = time.perf_counter()
            _, reply = services.reply_request(
                conversation=conversations[label], content=f"And then? ({i})", model_name="bench"
            )
            sent = selectors.context_turns(message=reply, max_chars=64_000)
            elapsed = time.perf_counter() - began
            assert sent and sent[-1]["content"] == f"And then? ({i})"
            Message.objects.filter(pk=reply.pk).update(status="complete", content="More.")
            if i >= 20:
                times[label].append(elapsed * 1000)
    return times


def run_child(database_url: str, turns: int, baseline: Path | None) -> dict[str, list[float]]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "stellarchat.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_LOG_LEVEL": "error",
        "STELLARCHAT_DATA_DIR": tempfile.mkdtemp(prefix="stellarchat-bench-"),
        "DATABASE_URL": database_url,
    }
    args = [sys.executable, str(Path(__file__).resolve()), "--child", "--turns", str(turns)]
    if baseline is not None:
        args += ["--baseline", str(baseline)]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300, help="timed turns per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout, timed in the same run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    baseline = args.baseline.resolve() if args.baseline else None
    if args.child:
        print(json.dumps(measure(args.turns, baseline)))
        return

    from tests.e2e import livedaphne

    results: dict[tuple[str, str], list[float]] = {}
    with livedaphne.postgres_database() as pg_url:
        for round_ in range(args.rounds):
            sqlite = Path(tempfile.mkdtemp(prefix="stellarchat-bench-")) / "db.sqlite3"
            for db, url in (("postgresql", pg_url), ("sqlite", f"sqlite:///{sqlite}")):
                for label, times in run_child(url, args.turns, baseline).items():
                    results.setdefault((label, db), []).extend(times)
                    print(f"round {round_ + 1}: {label:14} {db:10} p50 {pct(times, 0.5):.2f} ms")

    print(f"\nfollow-up turn start, ms ({args.turns} turns x {args.rounds} rounds per row)")
    print(f"{'':14} {'database':10} {'p50':>7} {'p95':>7} {'mean':>7}")
    for (label, db), times in results.items():
        print(
            f"{label:14} {db:10} {pct(times, 0.5):7.2f} {pct(times, 0.95):7.2f} "
            f"{statistics.fmean(times):7.2f}"
        )
    if args.baseline:
        print("\nthis checkout / baseline (lower is faster)")
        for db in ("postgresql", "sqlite"):
            now, before = results[("this checkout", db)], results[("baseline", db)]
            print(
                f"{db:10} p50 {pct(now, 0.5) / pct(before, 0.5):.2f}x  "
                f"p95 {pct(now, 0.95) / pct(before, 0.95):.2f}x"
            )


if __name__ == "__main__":
    main()
