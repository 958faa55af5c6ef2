"""A fast, deterministic backend for tests and UI work: no model, same contract.

The reply is a pure function of the conversation, streamed word by word, so tests can predict
every delta. A few directives in the last user turn exercise the unhappy paths end to end
(real processes included, where no test can reach into the backend):

- ``[[fail]]`` — stream two words, then end with ``error``.
- ``[[long N]]`` — reply with N numbered words (N up to 100000).
- ``[[slow MS]]`` — wait MS milliseconds before each word (overrides the configured delay).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence

from inference.backends.base import BackendError, Result, StreamItem, Turn, validate_turns
from inference.options import GenerationOptions

WORD_RE = re.compile(r"\S+\s*|\s+")
LONG_RE = re.compile(r"\[\[long (\d{1,6})\]\]")
SLOW_RE = re.compile(r"\[\[slow (\d{1,5})\]\]")


def reply_for(turns: Sequence[Turn]) -> str:
    """The deterministic reply: echoes the question and counts the turns it was given."""
    last = turns[-1]["content"]
    match = LONG_RE.search(last)
    if match:
        return " ".join(f"w{i}" for i in range(int(match.group(1))))
    users = sum(1 for t in turns if t["role"] == "user")
    return f"You said: {last.strip()} (turn {users})"


class TestBackend:
    """Streams ``reply_for(turns)`` one word per step; honours options and cancellation."""

    name = "test"
    __test__ = False  # not a pytest class
    display_name = "stellarchat-test"
    ready = True

    def __init__(self, delay: float | None = None) -> None:
        if delay is None:
            from django.conf import settings

            delay = getattr(settings, "STELLARCHAT_TEST_BACKEND_DELAY_MS", 0) / 1000.0
        self.delay = delay

    def stream(
        self,
        turns: Sequence[Turn],
        options: GenerationOptions,
        cancel: threading.Event | None = None,
    ) -> Iterator[StreamItem]:
        started = time.monotonic()
        cancel = cancel or threading.Event()
        try:
            validate_turns(turns)
        except BackendError as exc:
            yield Result(finish_reason="error", error_code=exc.code, error=str(exc))
            return
        last = turns[-1]["content"]
        slow = SLOW_RE.search(last)
        delay = int(slow.group(1)) / 1000.0 if slow else self.delay
        words = WORD_RE.findall(reply_for(turns))
        prompt_tokens = sum(len(WORD_RE.findall(t["content"])) + 1 for t in turns)
        text = ""
        ttft: float | None = None
        reason = "stop"
        count = 0
        for count, word in enumerate(words, start=1):
            if cancel.wait(delay) if delay else cancel.is_set():
                reason, count = "cancelled", count - 1
                break
            if count > options.max_new_tokens:
                reason, count = "length", count - 1
                break
            if ttft is None:
                ttft = (time.monotonic() - started) * 1000.0
            candidate = text + word
            hit = [candidate.find(s) for s in options.stop if s in candidate]
            if hit:
                cut = min(hit)
                if cut > len(text):
                    yield candidate[len(text) : cut]
                break
            text = candidate
            yield word
            if "[[fail]]" in last and count == 2:
                yield Result(
                    finish_reason="error",
                    prompt_tokens=prompt_tokens,
                    completion_tokens=count,
                    ttft_ms=ttft,
                    duration_ms=(time.monotonic() - started) * 1000.0,
                    error_code="internal",
                    error="the test backend failed on purpose",
                )
                return
        yield Result(
            finish_reason=reason,  # type: ignore[arg-type]
            prompt_tokens=prompt_tokens,
            completion_tokens=count,
            ttft_ms=ttft,
            duration_ms=(time.monotonic() - started) * 1000.0,
        )
