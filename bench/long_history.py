"""B5 long history: the page of a 2,000-message conversation.

    .venv/bin/python bench/long_history.py [--messages 2000] [--runs 30]

Measures, in one run and side by side: server time and HTML size of the conversation page
as shipped (newest 50 messages, older ones page in on scroll-up) against rendering every
message at once. Server time is the Django view through the test client (no network), on a
throwaway SQLite database with Markdown-heavy replies. Goals: <= 100 ms, <= 200 KB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REPLY = (
    "Here is **a reply** with a list:\n\n- one\n- two\n- three\n\n"
    "```python\ndef answer(n):\n    return n * 42\n```\n\nAnd a [link](https://example.com)."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    data = tempfile.mkdtemp(prefix="stellarchat-bench-")
    os.environ.update(
        DJANGO_SETTINGS_MODULE="stellarchat.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        DJANGO_SECURE_SSL_REDIRECT="0",
        DJANGO_ALLOWED_HOSTS="testserver",
        STELLARCHAT_DATA_DIR=data,
        DJANGO_LOG_LEVEL="error",
    )
    os.environ.pop("DATABASE_URL", None)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment

    from chat import selectors, services
    from chat.models import Conversation, Message

    setup_test_environment()
    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="bench-password-123")
    conversation = services.conversation_create(owner=user, title="Long history")
    Message.objects.bulk_create(
        Message(
            conversation=conversation,
            position=i,
            role="user" if i % 2 == 0 else "assistant",
            content=f"question {i}: how does this work?" if i % 2 == 0 else f"{REPLY} ({i})",
            completion_tokens=None if i % 2 == 0 else 60,
            tokens_per_second=None if i % 2 == 0 else 41.5,
        )
        for i in range(args.messages)
    )
    Conversation.objects.filter(pk=conversation.pk).update(next_position=args.messages)
    client = Client()
    client.force_login(user)
    url = f"/c/{conversation.pk}/"

    def measure(label: str) -> tuple[float, float, int]:
        client.get(url)  # warm-up (template compilation, first query)
        times = []
        size = 0
        for _ in range(args.runs):
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
            size = len(response.content)
        p50 = statistics.median(times)
        p95 = sorted(times)[max(0, int(len(times) * 0.95) - 1)]
        print(f"{label:<28} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   HTML {size / 1024:8.1f} KB")
        return p50, p95, size

    print(f"B5 long history: {args.messages} messages, {args.runs} runs each")
    shipped = measure("shipped (newest 50)")
    defaults = selectors.message_window.__kwdefaults__
    defaults["limit"] = args.messages  # the naive page: every message at once
    everything = measure(f"all {args.messages} at once")
    defaults["limit"] = selectors.MESSAGE_PAGE
    print(
        f"ratio naive/shipped: time {everything[0] / shipped[0]:.1f}x, "
        f"size {everything[2] / shipped[2]:.1f}x"
    )
    ok = shipped[0] <= 100 and shipped[2] <= 200 * 1024
    print(f"goal (<= 100 ms, <= 200 KB): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
