"""Export and import of a big account: time and each process's peak memory.

    .venv/bin/python bench/portability.py [--conversations 10000] [--messages 20]

Production's shape on this machine: a throwaway PostgreSQL database, Redis for the channel
layer (so the web process runs no task worker of its own), one daphne, and the import's task
worker as its own process (``manage.py task_worker``, as Compose's ``tasks`` service runs it).

1. A person with ``--conversations`` conversations of ``--messages`` messages each (a few
   sentences a message) is written straight into the database.
2. ``manage.py export_user`` writes their ZIP: wall time and the process's peak RSS.
3. The same export downloaded from Settings through daphne: time to the first byte, to the
   last, and daphne's peak RSS (its RSS before, for comparison).
4. That ZIP uploaded by another person through Settings -> Import (the real form): the
   request's time (the whole file is checked before anything is queued) and daphne's peak RSS;
   then ``manage.py task_worker --until-idle`` imports it: wall time and peak RSS, and the
   number of conversations the importer ends with.

RSS is sampled every 50 ms from /proc (psutil), children included.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402

from tests.e2e import livedaphne  # noqa: E402
from tests.e2e.wsclient import signup  # noqa: E402

MB = 1024 * 1024
PASSWORD = "a-long-and-fine-passphrase"

SEED = """
from django.contrib.auth import get_user_model
from chat.models import Conversation, Message
user = get_user_model().objects.create_user("exporter", password={password!r})
words = "The quick brown fox jumps over the lazy dog while the stars turn slowly overhead. "
model = "stellarchat-test"
for start in range(0, {conversations}, 500):
    stop = min(start + 500, {conversations})
    convs = [
        Conversation(owner=user, title=f"Conversation {{i}} about foxes", model_name=model,
                     next_position={messages})
        for i in range(start, stop)
    ]
    Conversation.objects.bulk_create(convs)
    rows = []
    for c in convs:
        for p in range({messages}):
            user_turn = p % 2 == 0
            rows.append(Message(
                conversation=c, position=p, role="user" if user_turn else "assistant",
                content=words * (2 if user_turn else 6), model_name="" if user_turn else model,
                completion_tokens=None if user_turn else 120,
            ))
    Message.objects.bulk_create(rows, batch_size=5000)
mine = Message.objects.filter(conversation__owner=user)
print(Conversation.objects.filter(owner=user).count(), mine.count())
"""


class Peak:
    """The highest RSS of a process (and its children) while it runs, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        try:
            proc = psutil.Process(self.pid)
            total = proc.memory_info().rss
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            return total
        except psutil.Error:
            return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.05)

    def __enter__(self) -> Peak:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def manage(env: dict[str, str], *args: str, timeout: float = 3600) -> tuple[float, int, str]:
    """Run a manage.py command; (seconds, peak RSS in bytes, stdout)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=livedaphne.clean_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with Peak(proc.pid) as peak:
        out, err = proc.communicate(timeout=timeout)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{err[-2000:]}")
    return seconds, peak.peak, out


def login_client(base: str, username: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=600, follow_redirects=False)
    page = client.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token, "no CSRF token on the login page"
    answer = client.post(
        "/accounts/login/",
        data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token.group(1)},
        headers={"Referer": base + "/accounts/login/"},
    )
    assert answer.status_code == 302, answer.status_code
    return client


def timed(run: Callable[[], Any], pid: int) -> tuple[float, int, Any]:
    with Peak(pid) as peak:
        started = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - started
    return seconds, peak.peak, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=20)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="stellarchat-bench-portability-"))
    print(f"{args.conversations} conversations x {args.messages} messages; data in {folder}")
    with livedaphne.postgres_database() as db_url, livedaphne.redis_db(7) as redis_url:
        env = {
            "DJANGO_DEBUG": "1",
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "STELLARCHAT_DATA_DIR": str(folder),
            "STELLARCHAT_BACKEND": "test",
            "STELLARCHAT_IMPORT_MAX_MB": "200",
            "STELLARCHAT_RATE_LIMIT_PER_MINUTE": "0",
        }
        livedaphne.migrate(env)
        seconds, _, out = manage(
            env,
            "shell",
            "-v",
            "0",
            "-c",
            SEED.format(
                password=PASSWORD, conversations=args.conversations, messages=args.messages
            ),
        )
        print(f"seeded {out.strip()} (conversations, messages) in {seconds:.1f} s")

        zip_path = folder / "export.zip"
        seconds, peak, _ = manage(env, "export_user", "exporter", "--out", str(zip_path))
        size = zip_path.stat().st_size
        print(f"export_user: {seconds:.1f} s, peak RSS {peak / MB:.0f} MB, ZIP {size / MB:.1f} MB")

        with livedaphne.daphne(env) as server:
            pid = server.service.proc.pid
            rest = Peak(pid).rss()
            exporter = login_client(server.url, "exporter")

            def download() -> tuple[float, int]:
                first = None
                total = 0
                started = time.perf_counter()
                with exporter.stream("GET", "/settings/data/export.zip") as response:
                    assert response.status_code == 200, response.status_code
                    for chunk in response.iter_bytes():
                        if first is None:
                            first = time.perf_counter() - started
                        total += len(chunk)
                return first or 0.0, total

            seconds, peak, (first, total) = timed(download, pid)
            print(
                f"download through daphne: first byte {first:.2f} s, all {total / MB:.1f} MB "
                f"in {seconds:.1f} s; daphne RSS {rest / MB:.0f} MB at rest, peak "
                f"{peak / MB:.0f} MB"
            )

            signup(server.url, "importer", PASSWORD)
            importer = login_client(server.url, "importer")
            page = importer.get("/settings/import/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
            assert token, "no CSRF token on the import page"

            def upload() -> httpx.Response:
                with zip_path.open("rb") as handle:
                    return importer.post(
                        "/settings/import/",
                        data={"csrfmiddlewaretoken": token.group(1)},
                        files={"file": ("export.zip", handle, "application/zip")},
                        headers={"Referer": server.url + "/settings/import/"},
                    )

            rest = Peak(pid).rss()
            seconds, peak, response = timed(upload, pid)
            assert response.status_code in (200, 302), (response.status_code, response.text[:500])
            print(
                f"upload through Settings -> Import: {seconds:.1f} s (checked whole, queued); "
                f"daphne RSS {rest / MB:.0f} MB before, peak {peak / MB:.0f} MB"
            )

        seconds, peak, _ = manage(env, "task_worker", "--until-idle")
        _, _, out = manage(
            env,
            "shell",
            "-v",
            "0",
            "-c",
            "from chat.models import Conversation, Message; "
            "print(Conversation.objects.filter(owner__username='importer').count(), "
            "Message.objects.filter(conversation__owner__username='importer').count())",
        )
        print(
            f"task_worker imports it: {seconds:.1f} s, peak RSS {peak / MB:.0f} MB; the importer "
            f"now has {out.strip()} (conversations, messages)"
        )


if __name__ == "__main__":
    main()
