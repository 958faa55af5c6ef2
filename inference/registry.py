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
import logging
import os
import re
import threading
import time
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
    "refresh_providers",
    "worker_channels",
    "served_here",
    "serving",
    "loaded_by_workers",
    "model_name",
    "may_use",
    "models",
    "usable",
]

logger = logging.getLogger(__name__)
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
    """Every model this deployment serves, by name: the file's, in its order, then those its
    providers list (as last listed: never waits for a provider, ``refresh_providers``)."""
    file = _file()
    if file is None:
        spec = _legacy()
        return {spec.name: spec}
    found = dict(file.models)
    if file.providers:
        _start_refresher()
        for name, spec in _provided.items():
            found.setdefault(name, spec)  # a model of the file keeps its name
    return found


# --- providers: every model an OpenAI-compatible server lists ----------------------------------

PROVIDER_REFRESH = 60.0  # seconds between two listings of a provider's models
PROVIDER_TIMEOUT = 5.0
PROVIDER_MAX_MODELS = 500  # a listing longer than this is cut (and said so)
_provided: dict[str, ModelSpec] = {}
_refresher: threading.Thread | None = None


def provided_name(prefix: str, model_id: str) -> str | None:
    """A provider's model id as a registry name: ``prefix`` + the id in lower case, other
    characters as '-'; None when that is no valid name."""
    from inference.models_file import NAME_RE

    name = prefix + re.sub(r"[^a-z0-9._/-]", "-", model_id.strip().lower())
    return name if NAME_RE.fullmatch(name) else None


def refresh_providers() -> dict[str, ModelSpec]:
    """List every provider's models now (blocking: at most ``PROVIDER_TIMEOUT`` a provider).
    A provider that does not answer keeps its last list, and says why in the log."""
    import httpx

    global _provided
    file = _file()
    if file is None or not file.providers:
        return {}
    found: dict[str, ModelSpec] = {}
    for provider in file.providers.values():
        key = _api_key(provider.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            response = httpx.get(
                f"{provider.url}/models", headers=headers, timeout=PROVIDER_TIMEOUT
            )
            response.raise_for_status()
            listed = response.json()["data"]
            ids = [str(entry["id"]) for entry in listed if isinstance(entry, dict)]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            logger.warning(
                "provider %s: listing %s/models failed: %s", provider.name, provider.url, exc
            )
            found.update({n: s for n, s in _provided.items() if s.provider == provider.name})
            continue
        if len(ids) > PROVIDER_MAX_MODELS:
            logger.warning(
                "provider %s lists %d models; the first %d are served",
                provider.name,
                len(ids),
                PROVIDER_MAX_MODELS,
            )
        for model_id in ids[:PROVIDER_MAX_MODELS]:
            name = provided_name(provider.prefix, model_id)
            if name is None or name in file.models:
                logger.warning(
                    "provider %s: model %.100r has no usable name here; skipped",
                    provider.name,
                    model_id,
                )
                continue
            found[name] = ModelSpec(
                name=name,
                backend="openai",
                label=f"{model_id} ({provider.label})"[:200] if provider.label else model_id[:200],
                description=provider.description,
                groups=provider.groups,
                url=provider.url,
                remote_model=model_id,
                api_key_env=provider.api_key_env,
                provider=provider.name,
            )
    _provided = found
    return dict(found)


def _start_refresher() -> None:
    """Once per process: a thread that lists the providers' models now and every
    ``PROVIDER_REFRESH`` seconds (a request never waits on a provider)."""
    global _refresher
    with _lock:
        if _refresher is not None:
            return
        _refresher = threading.Thread(target=_refresh_forever, name="providers", daemon=True)
        _refresher.start()


def _refresh_forever() -> None:
    while True:
        try:
            refresh_providers()
        except Exception:  # a bug here must not end the listing for good
            logger.exception("listing the providers' models failed")
        time.sleep(PROVIDER_REFRESH)


def default_name() -> str:
    """The model a new conversation gets when nobody picks one (a file of providers only,
    without ``default``: the first model they list)."""
    file = _file()
    if file is None:
        return _legacy().name
    return str(file.default) or next(iter(models()), "")


def get(name: str) -> ModelSpec | None:
    return models().get(name)


def serving(name: str) -> ModelSpec | None:
    """The model a job names, as the process that generates it finds it: without a models
    file, the one model whatever the name (a web process of another release, or another
    ``STELLARCHAT_MODEL``, may have named it otherwise); with one, the name's (a provider's
    model this process has not listed yet is looked up now: blocking, call it off the loop),
    the default's for a job that names none."""
    if _file() is None:
        return _legacy()
    spec = get(name or default_name())
    if spec is None and name:
        refresh_providers()
        spec = get(name)
    return spec


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


def _api_key(variable: str) -> str:
    """The key in the variable a models file names (read when used: never kept in the file)."""
    return os.environ.get(variable, "").strip() if variable else ""


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
        return {"url": spec.url, "api_key": _api_key(spec.api_key_env), "model": spec.remote_model}
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
    """The channel-layer channel a model's jobs go on: the workers that serve it listen there
    (a provider's models share their provider's). Without a models file it is ``inference``,
    as it always was (a web process and a worker of different releases meet there during a
    rolling upgrade)."""
    file = _file()
    if file is None:
        return "inference"
    if name not in file.models:
        for provider in sorted(file.providers.values(), key=lambda p: -len(p.prefix)):
            if name.startswith(provider.prefix):
                return _channel_of(f"provider:{provider.name}")
    return _channel_of(name)


def _channel_of(key: str) -> str:
    """A channel name for ``key``: readable, and unique (names may hold '/'; channels not)."""
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return f"inference.{re.sub(r'[^a-z0-9.-]', '-', key)[:60]}.{digest}"


def served_here() -> list[str]:
    """The models of the file this process serves when it generates:
    ``STELLARCHAT_WORKER_MODELS`` (a worker given some of them: one worker per GPU, say),
    else all of them."""
    from django.conf import settings

    only = getattr(settings, "STELLARCHAT_WORKER_MODELS", None) or []
    file = _file()
    names = list(file.models) if file is not None else list(models())
    return [name for name in names if not only or name in only]


def worker_channels() -> list[str]:
    """The channels this process listens on when it generates: those of ``served_here``,
    and every provider's when it serves every model (``STELLARCHAT_WORKER_MODELS`` unset)."""
    from django.conf import settings

    file = _file()
    found = [channel(name) for name in served_here()]
    if file is not None and not getattr(settings, "STELLARCHAT_WORKER_MODELS", None):
        found += [_channel_of(f"provider:{name}") for name in file.providers]
    return list(dict.fromkeys(found))


def loaded_by_workers() -> set[str]:
    """The models some worker (or embedded web process) has loaded now, by their beats."""
    from inference import heartbeat

    return heartbeat.models_loaded(list(models()))


def model_name() -> str:
    """The name of the model replies are generated by when nobody picks one: saved on each
    reply, listed at ``/v1/models``. Loads no model."""
    return default_name()
