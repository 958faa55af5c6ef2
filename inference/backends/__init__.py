"""Backend registry: a name maps to a dotted path, imported only when first used, so a web
process that never generates never imports torch."""

from __future__ import annotations

import threading
from importlib import import_module
from typing import Any

from inference.backends.base import Backend, BackendError, Result, StreamItem, Turn

__all__ = [
    "Backend",
    "BackendError",
    "Result",
    "StreamItem",
    "Turn",
    "get_backend",
    "model_name",
    "BACKENDS",
]

BACKENDS: dict[str, str] = {
    "transformers": "inference.backends.process.transformers_backend",
    "test": "inference.backends.fake.TestBackend",
    "openai": "inference.backends.remote.RemoteBackend",
}

_lock = threading.Lock()
_instances: dict[tuple[str, tuple[tuple[str, Any], ...]], Backend] = {}


def _import(dotted: str) -> type:
    module_name, _, attr = dotted.rpartition(".")
    return getattr(import_module(module_name), attr)  # type: ignore[no-any-return]


def get_backend(name: str | None = None, **kwargs: Any) -> Backend:
    """The process-wide backend instance for ``name`` (default: settings.STELLARCHAT_BACKEND).

    Instances are cached per (name, kwargs): the model behind one is loaded once per process.
    """
    if name is None:
        from django.conf import settings

        name = settings.STELLARCHAT_BACKEND
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    key = (name, tuple(sorted(kwargs.items())))
    with _lock:
        backend = _instances.get(key)
        if backend is None:
            backend = _import(BACKENDS[name])(**kwargs)
            _instances[key] = backend
    return backend


def model_name() -> str:
    """The name of the model this process serves: saved on replies, listed at /v1/models.
    No model is loaded for it."""
    backend = get_backend()
    return str(getattr(backend, "display_name", backend.name))
