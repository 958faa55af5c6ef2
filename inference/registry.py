"""The one door from the web side (``chat/``, ``api/``) to the models: which models this
deployment serves, who may use which, the backend that generates a model's replies, and the
plain data a reply ends with. Nothing in ``chat/`` or ``api/`` imports ``inference.backends``
(tests/test_layering.py checks it), so the way models are configured and loaded can change
behind this module without touching a view or a consumer.

The models come from ``STELLARCHAT_MODELS_FILE`` (inference/models_file.py, docs/models.md),
read and checked once at start. Without the file there is one model built from
``STELLARCHAT_BACKEND``/``STELLARCHAT_MODEL`` (``STELLARCHAT_REMOTE_*`` for a remote one),
under the name ``/v1/models`` has always shown for it: such a deployment changes nothing.

Importing this module imports no torch: a backend, and whatever it needs, is imported when a
reply first asks for it.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from typing import Any

from inference import backends as _backends
from inference.backends import Backend
from inference.backends.base import BackendError, Result, StreamItem, Turn
from inference.models_file import ModelSpec

__all__ = [
    "Backend",
    "BackendError",
    "ModelSpec",
    "Result",
    "StreamItem",
    "Turn",
    "UnknownModel",
    "backend",
    "channel",
    "choose",
    "default_name",
    "get",
    "inference_channels",
    "served_here",
    "loaded_by_workers",
    "model_name",
    "may_use",
    "models",
    "usable",
]

_lock = threading.Lock()
_instances: dict[str, Backend] = {}


def _file() -> Any:
    from django.conf import settings

    return getattr(settings, "STELLARCHAT_MODELS", None)


def _legacy() -> ModelSpec:
    """The one model of a deployment without a models file, under its name of old (the
    backend's own display name; making the backend loads no model)."""
    from django.conf import settings

    instance = _backends.get_backend()
    name = str(getattr(instance, "display_name", None) or getattr(instance, "name", "model"))
    kind = settings.STELLARCHAT_BACKEND
    return ModelSpec(
        name=name,
        backend=kind,
        label=name,
        path=settings.STELLARCHAT_MODEL if kind == "transformers" else "",
        url=settings.STELLARCHAT_REMOTE_URL if kind == "openai" else "",
        remote_model=settings.STELLARCHAT_REMOTE_MODEL if kind == "openai" else "",
    )


def models() -> dict[str, ModelSpec]:
    """Every model this deployment serves, by name, in the file's order."""
    file = _file()
    if file is None:
        spec = _legacy()
        return {spec.name: spec}
    return dict(file.models)


def default_name() -> str:
    """The model a new conversation gets when nobody picks one."""
    file = _file()
    return _legacy().name if file is None else str(file.default)


def get(name: str) -> ModelSpec | None:
    return models().get(name)


def backend(name: str | None = None) -> Backend:
    """The backend that generates ``name``'s replies (the default model's when None): one
    instance per model and process, its model loaded by the process that generates (the
    worker, or the web process when embedded) when it first generates."""
    if _file() is None:
        return _backends.get_backend()  # as before the registry: settings decide
    spec = get(name or default_name())
    if spec is None:
        raise BackendError(f"no model named {name!r} is configured")
    with _lock:
        instance = _instances.get(spec.name)
        if instance is None:
            instance = _backends.get_backend(spec.backend, **_arguments(spec))
            _instances[spec.name] = instance
    return instance


def _arguments(spec: ModelSpec) -> dict[str, Any]:
    """A backend's own arguments for ``spec`` (plain data: backends never see specs)."""
    if spec.backend == "transformers":
        arguments: dict[str, Any] = {
            "model": spec.path,
            "device": spec.device,
            "dtype": spec.dtype,
            "trust_remote_code": spec.trust_remote_code,
        }
        if spec.max_batch is not None:
            arguments["max_batch"] = spec.max_batch
        if spec.keep_alive:
            arguments["keep_alive"] = spec.keep_alive
        return arguments
    if spec.backend == "openai":
        key = os.environ.get(spec.api_key_env, "").strip() if spec.api_key_env else ""
        return {"url": spec.url, "api_key": key, "model": spec.remote_model}
    return {}


class UnknownModel(LookupError):
    """No such model, or one this person may not use: the same answer for both, so a name
    restricted to a group is not confirmed to exist by trying it."""


def may_use(user: Any, spec: ModelSpec) -> bool:
    """Whether ``user`` may pick ``spec``: a model without groups is everyone's; one with
    groups belongs to their members and to staff. Reads the database only for the latter."""
    if not spec.groups or getattr(user, "is_staff", False):
        return True
    if not getattr(user, "is_authenticated", False):
        return False
    return bool(user.groups.filter(name__in=spec.groups).exists())


def usable(user: Any) -> list[ModelSpec]:
    """The models ``user`` may pick, in the file's order."""
    return [spec for spec in models().values() if may_use(user, spec)]


def choose(user: Any, name: str | None, *, current: str = "") -> str:
    """The model a reply is generated by: ``name`` when asked for (``UnknownModel`` when it
    does not exist or ``user`` may not use it), else ``current`` (the conversation's) while it
    is still served and theirs, else the default."""
    if name is not None:
        spec = get(name)
        if spec is None or not may_use(user, spec):
            raise UnknownModel(name)
        return spec.name
    spec = get(current) if current else None
    if spec is not None and may_use(user, spec):
        return spec.name
    return default_name()


def channel(name: str) -> str:
    """The channel-layer channel a model's jobs go on: the workers that serve it listen there.
    Without a models file it is ``inference``, as it always was (a web process and a worker of
    different releases meet there during a rolling upgrade)."""
    if _file() is None:
        return "inference"
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]  # names may hold '/'; channels not
    return f"inference.{re.sub(r'[^a-z0-9.-]', '-', name)[:60]}.{digest}"


def served_here() -> list[str]:
    """The models this process serves when it generates: ``STELLARCHAT_WORKER_MODELS`` (a
    worker given some of them: one worker per GPU, say), else all of them."""
    from django.conf import settings

    only = getattr(settings, "STELLARCHAT_WORKER_MODELS", None) or []
    return [name for name in models() if not only or name in only]


def inference_channels(names: list[str] | None = None) -> list[str]:
    """The channels a worker serving ``names`` (default: every model) listens on."""
    return list(dict.fromkeys(channel(n) for n in (list(models()) if names is None else names)))


def loaded_by_workers() -> set[str]:
    """The models some worker (or embedded web process) has loaded now, by their beats."""
    from inference import heartbeat

    return heartbeat.models_loaded(list(models()))


def model_name() -> str:
    """The name of the model replies are generated by when nobody picks one: saved on each
    reply, listed at ``/v1/models``. Loads no model."""
    return default_name()
