"""The test backend keeps the real contract, so tests built on it mean something."""

from __future__ import annotations

import threading

from inference.backends import get_backend
from inference.backends.base import Backend, Result
from inference.backends.fake import TestBackend, reply_for
from inference.options import GenerationOptions

OPTS = GenerationOptions(max_new_tokens=100)


def run(backend: TestBackend, text: str, options: GenerationOptions = OPTS) -> tuple[str, Result]:
    items = list(backend.stream([{"role": "user", "content": text}], options))
    assert isinstance(items[-1], Result)
    return "".join(items[:-1]), items[-1]  # type: ignore[arg-type]


def test_it_is_a_backend_and_is_deterministic() -> None:
    backend = TestBackend(delay=0)
    assert isinstance(backend, Backend)
    text, result = run(backend, "hello 🌟")
    assert (
        text
        == reply_for([{"role": "user", "content": "hello 🌟"}])
        == "You said: hello 🌟 (turn 1)"
    )
    assert result.finish_reason == "stop" and result.completion_tokens == 6


def test_it_honours_max_new_tokens_and_stop() -> None:
    backend = TestBackend(delay=0)
    text, result = run(backend, "[[long 50]]", GenerationOptions(max_new_tokens=10))
    assert result.finish_reason == "length" and result.completion_tokens == 10
    assert text == " ".join(f"w{i}" for i in range(10)) + " "
    text, result = run(backend, "[[long 50]]", GenerationOptions(stop=("w5",)))
    assert text == "w0 w1 w2 w3 w4 " and result.finish_reason == "stop"


def test_it_fails_on_purpose() -> None:
    text, result = run(TestBackend(delay=0), "[[fail]] please")
    assert result.finish_reason == "error" and result.error_code == "internal"
    assert text == "You said: "


def test_it_cancels_between_words() -> None:
    cancel = threading.Event()
    seen = []
    for item in TestBackend(delay=0.01).stream(
        [{"role": "user", "content": "[[long 1000]]"}], OPTS, cancel
    ):
        if isinstance(item, str):
            seen.append(item)
            cancel.set()
        else:
            result = item
    assert seen == ["w0 "] and result.finish_reason == "cancelled"
    assert result.completion_tokens == 1


def test_registry_returns_one_instance_per_process() -> None:
    assert get_backend("test") is get_backend("test")
    assert get_backend("test").name == "test"
