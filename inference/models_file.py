"""The models file (``STELLARCHAT_MODELS_FILE``): which models a deployment serves, read once at
start with the standard library's ``tomllib`` and checked whole, so a mistake stops start-up
with one line naming the file, the model and the field instead of failing a reply at night.

Plain data only (no Django, no torch): settings read it, the registry and the workers use it.
The reference, with a full example, is docs/models.md.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from inference.options import OptionError, parse_options

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._/-]{0,63}")
BACKENDS = ("transformers", "openai", "test")
DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DTYPES = ("auto", "float32", "bfloat16", "float16")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MAX_FILE_BYTES = 1024 * 1024  # a models file is a page or two; more is a wrong file
MAX_TEXT = 20_000  # characters of a system prompt or a description

TOP_KEYS = ("default", "arena", "models", "providers")
COMMON_KEYS = ("label", "backend", "description", "system_prompt", "options", "groups")
BACKEND_KEYS = {
    "transformers": (
        "path",
        "device",
        "dtype",
        "max_batch",
        "trust_remote_code",
        "keep_alive",
    ),
    "openai": ("url", "remote_model", "api_key_env"),
    "test": (),
}
PROVIDER_KEYS = ("url", "api_key_env", "prefix", "label", "description", "groups")


class ModelsFileError(ValueError):
    """The models file is wrong; the message is one line naming the file, model and field."""


@dataclass(frozen=True)
class ModelSpec:
    """One model as the file describes it (or a preset made of one, ``base`` set)."""

    name: str
    backend: str
    label: str = ""
    description: str = ""
    system_prompt: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)  # checked, only those given
    groups: tuple[str, ...] = ()
    # transformers
    path: str = ""
    device: str = "auto"
    dtype: str = "auto"
    max_batch: int | None = None
    trust_remote_code: bool = False
    keep_alive: int = 0  # seconds idle before its model process exits; 0 = never
    # openai
    url: str = ""
    remote_model: str = ""
    api_key_env: str = ""
    provider: str = ""  # the [providers.X] that listed it, if any
    base: str = ""  # a preset's: the model it is made of (inference/models.py)


@dataclass(frozen=True)
class ProviderSpec:
    """An OpenAI-compatible server whose every listed model is served, under ``prefix``."""

    name: str
    url: str
    api_key_env: str = ""
    prefix: str = ""
    label: str = ""
    description: str = ""
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelsFile:
    models: Mapping[str, ModelSpec]  # in the file's order
    default: str
    arena: tuple[str, ...] = ()
    providers: Mapping[str, ProviderSpec] = field(default_factory=dict)


def read(
    path: str | Path,
    *,
    env: Mapping[str, str],
    base_dir: Path,
    max_new_tokens_limit: int,
) -> ModelsFile:
    """Read and check the file at ``path`` (relative paths inside it are tried against
    ``base_dir``, then the file's own folder)."""
    file = Path(path)
    where = str(path)
    try:
        if not file.is_file():
            raise ModelsFileError(f"{where}: not a file")
        if file.stat().st_size > MAX_FILE_BYTES:
            raise ModelsFileError(
                f"{where}: over {MAX_FILE_BYTES // 1024} KB; is it the right file?"
            )
        raw = file.read_bytes()
    except OSError as exc:
        raise ModelsFileError(f"{where}: cannot be read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ModelsFileError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ModelsFileError(f"{where}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses per nested array or table
        raise ModelsFileError(f"{where}: nested too deep to be a models file") from None
    return parse(
        data,
        where=where,
        env=env,
        folders=(base_dir, file.resolve().parent),
        max_new_tokens_limit=max_new_tokens_limit,
    )


def parse(
    data: Mapping[str, Any],
    *,
    where: str,
    env: Mapping[str, str],
    folders: tuple[Path, ...] = (),
    max_new_tokens_limit: int,
) -> ModelsFile:
    """Check the decoded file; raise ``ModelsFileError`` at the first problem."""

    def fail(message: str) -> ModelsFileError:
        return ModelsFileError(f"{where}: {message}")

    _unknown(data, TOP_KEYS, lambda key: fail(f"unknown key {key!r} at the top"))
    tables = data.get("models", {})
    providers_table = data.get("providers", {})
    if not isinstance(tables, dict):
        raise fail("models: must be a table of [models.NAME] sections")
    if not isinstance(providers_table, dict):
        raise fail("providers: must be a table of [providers.NAME] sections")
    if not tables and not providers_table:
        raise fail("no [models.NAME] section: name at least one model")

    models: dict[str, ModelSpec] = {}
    for name, table in tables.items():
        models[name] = _model(
            name, table, fail=fail, env=env, folders=folders, limit=max_new_tokens_limit
        )
    providers = {
        name: _provider(name, table, fail=fail, env=env) for name, table in providers_table.items()
    }

    def known(model: str) -> bool:
        """A model of this file, or one a provider will list (checked once listed)."""
        return model in models or any(
            p.prefix and model.startswith(p.prefix) for p in providers.values()
        )

    default = data.get("default")
    if default is None:
        default = next(iter(models), "")  # none here: the first model a provider lists
    elif not isinstance(default, str):
        raise fail("default: must be a model's name in quotes")
    elif not known(default):
        raise fail(f"default: {default!r} is not a model of this file")

    arena = data.get("arena", [])
    if not isinstance(arena, list) or not all(isinstance(a, str) for a in arena):
        raise fail('arena: must be a list of model names, like ["mini", "qwen"]')
    for name in arena:
        if not known(name):
            raise fail(f"arena: {name!r} is not a model of this file")
    if len(set(arena)) != len(arena):
        raise fail("arena: a model is named twice")
    if len(arena) == 1:
        raise fail("arena: needs at least two models")
    return ModelsFile(models=models, default=default, arena=tuple(arena), providers=providers)


def _model(
    name: Any,
    table: Any,
    *,
    fail: Any,
    env: Mapping[str, str],
    folders: tuple[Path, ...],
    limit: int,
) -> ModelSpec:
    _check_name(name, "model", fail)

    def wrong(key: str, message: str) -> ModelsFileError:
        return fail(f"model {name!r}: {key}: {message}")

    if not isinstance(table, dict):
        raise fail(f"model {name!r}: must be a [models.{name}] section")
    backend = table.get("backend")
    if backend is None:
        raise wrong("backend", f"missing; one of {', '.join(BACKENDS)}")
    if backend not in BACKENDS:
        raise wrong("backend", f"{backend!r} is not a backend; one of {', '.join(BACKENDS)}")
    allowed = COMMON_KEYS + BACKEND_KEYS[backend]
    _unknown(
        table,
        allowed,
        lambda key: wrong(key, f"not a key of a {backend} model; known: {', '.join(allowed)}"),
    )
    values: dict[str, Any] = {
        "label": _text(table, "label", wrong, default=name, limit=200),
        "description": _text(table, "description", wrong),
        "system_prompt": _text(table, "system_prompt", wrong),
        "groups": _groups(table, wrong),
        "options": _options(table, wrong, limit),
    }
    if backend == "transformers":
        values["path"] = _folder(_required(table, "path", wrong), folders)
        values["device"] = _text(table, "device", wrong, default="auto", limit=20)
        if not DEVICE_RE.fullmatch(values["device"]):
            raise wrong("device", "one of auto, cpu, cuda, cuda:N, mps")
        values["dtype"] = _text(table, "dtype", wrong, default="auto", limit=20)
        if values["dtype"] not in DTYPES:
            raise wrong("dtype", f"one of {', '.join(DTYPES)}")
        if "max_batch" in table:
            values["max_batch"] = _integer(table, "max_batch", wrong, minimum=1, maximum=1024)
        if "keep_alive" in table:
            values["keep_alive"] = _integer(table, "keep_alive", wrong, minimum=0)
        if "trust_remote_code" in table:
            if not isinstance(table["trust_remote_code"], bool):
                raise wrong("trust_remote_code", "must be true or false")
            values["trust_remote_code"] = table["trust_remote_code"]
    elif backend == "openai":
        values["url"] = _url(_required(table, "url", wrong), wrong)
        values["remote_model"] = _required(table, "remote_model", wrong)
        values["api_key_env"] = _key_variable(table, wrong, env)
    return ModelSpec(name=name, backend=backend, **values)


def _provider(name: Any, table: Any, *, fail: Any, env: Mapping[str, str]) -> ProviderSpec:
    _check_name(name, "provider", fail)

    def wrong(key: str, message: str) -> ModelsFileError:
        return fail(f"provider {name!r}: {key}: {message}")

    if not isinstance(table, dict):
        raise fail(f"provider {name!r}: must be a [providers.{name}] section")
    _unknown(
        table,
        PROVIDER_KEYS,
        lambda key: wrong(key, f"not a key of a provider; known: {', '.join(PROVIDER_KEYS)}"),
    )
    prefix = _text(table, "prefix", wrong, limit=32)
    if prefix and not NAME_RE.fullmatch(prefix):
        raise wrong("prefix", 'lower-case letters, digits and . _ / - only, like "vllm/"')
    return ProviderSpec(
        name=name,
        url=_url(_required(table, "url", wrong), wrong),
        api_key_env=_key_variable(table, wrong, env),
        prefix=prefix,
        label=_text(table, "label", wrong, limit=200),
        description=_text(table, "description", wrong),
        groups=_groups(table, wrong),
    )


# --- one field each ---------------------------------------------------------------------------


def _unknown(table: Mapping[str, Any], known: tuple[str, ...], error: Any) -> None:
    for key in table:
        if key not in known:
            raise error(key)


def _check_name(name: Any, kind: str, fail: Any) -> None:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise fail(
            f"{kind} name {name!r}: use 1-64 lower-case letters, digits and . _ / -, "
            "starting with a letter or digit"
        )


def _text(
    table: Mapping[str, Any], key: str, wrong: Any, *, default: str = "", limit: int = MAX_TEXT
) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise wrong(key, "must be text in quotes")
    if len(value) > limit:
        raise wrong(key, f"over {limit} characters")
    if "\x00" in value:
        raise wrong(key, "holds a NUL character")
    return value


def _required(table: Mapping[str, Any], key: str, wrong: Any) -> str:
    if key not in table:
        raise wrong(key, "missing")
    value = _text(table, key, wrong, limit=2000)
    if not value.strip():
        raise wrong(key, "is empty")
    return value


def _integer(
    table: Mapping[str, Any], key: str, wrong: Any, *, minimum: int, maximum: int = 10**9
) -> int:
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong(key, "must be a whole number")
    if not minimum <= value <= maximum:
        raise wrong(key, f"must be between {minimum} and {maximum}")
    return value


def _groups(table: Mapping[str, Any], wrong: Any) -> tuple[str, ...]:
    groups = table.get("groups", [])
    if not isinstance(groups, list) or not all(
        isinstance(g, str) and g.strip() and len(g) <= 150 for g in groups
    ):
        raise wrong("groups", 'must be a list of Django group names, like ["research"]')
    return tuple(groups)


def _options(table: Mapping[str, Any], wrong: Any, limit: int) -> dict[str, Any]:
    options = table.get("options", {})
    if not isinstance(options, dict):
        raise wrong("options", "must be a table, like {temperature = 0.7}")
    try:
        parse_options(options, max_new_tokens_limit=limit)
    except OptionError as exc:
        raise wrong(f"options.{exc.field}", exc.message) from None
    return dict(options)


def _url(value: str, wrong: Any) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc or parts.query or parts.fragment:
        raise wrong("url", f"{value!r} is not a server URL; use one like http://gpu-box:8000/v1")
    return value.rstrip("/")


def _key_variable(table: Mapping[str, Any], wrong: Any, env: Mapping[str, str]) -> str:
    """The name of the variable holding the API key: the key itself never sits in the file."""
    name = _text(table, "api_key_env", wrong, limit=128)
    if not name:
        return ""
    if not ENV_NAME_RE.fullmatch(name):
        raise wrong("api_key_env", f"{name!r} is not a variable name")
    if not env.get(name, "").strip():
        raise wrong("api_key_env", f"the variable {name} is not set")
    return name


def _folder(path: str, folders: tuple[Path, ...]) -> str:
    """A local folder as an absolute path when it exists (against the project, then the
    file's folder); anything else is left as written (a hub id, or a folder that the model
    load will report missing)."""
    given = Path(path).expanduser()
    if given.is_absolute():
        return str(given)
    for folder in folders:
        candidate = folder / given
        if candidate.exists():
            return str(candidate)
    return path
