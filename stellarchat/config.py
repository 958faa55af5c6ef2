"""Typed reading of StellarChat's environment variables.

Everything the deployment can change comes through here, so that a bad value is caught at
start-up with one line naming the variable (see ``ConfigError``) instead of surfacing later as
a traceback deep inside Django. This module imports nothing from Django so it can be tested
with a plain dict.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


class ConfigError(Exception):
    """A variable has a value StellarChat cannot use; the message names it."""


def env_str(env: Mapping[str, str], name: str, default: str = "") -> str:
    return env.get(name, default).strip()


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """Only clear words count: a typo must not silently flip a security switch."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(
        f"{name}={raw!r} is not a boolean; use one of: true/false, 1/0, yes/no, on/off"
    )


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def env_port(env: Mapping[str, str], name: str) -> int | None:
    """A TCP port (1-65535), or None when unset."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    value = env_int(env, name, 0, minimum=1)
    if value > 65535:
        raise ConfigError(f"{name}={raw!r} is not a port; use 1-65535")
    return value


def check_multiproc_dir(env: Mapping[str, str]) -> None:
    """prometheus_client switches to multiprocess mode when the variable exists at all, then
    writes into it; catch a missing directory here, not as a crash at the first metric."""
    raw = env.get("PROMETHEUS_MULTIPROC_DIR")
    if raw is not None and not (raw.strip() and Path(raw).is_dir()):
        raise ConfigError(
            f"PROMETHEUS_MULTIPROC_DIR={raw!r} is not a directory; create it (empty) before "
            "the processes start, or unset it"
        )


DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DTYPE_RE = re.compile(r"auto|float32|bfloat16|float16")
BACKEND_RE = re.compile(r"transformers|test|openai")
LOG_FORMAT_RE = re.compile(r"plain|json")
LOG_LEVEL_RE = re.compile(r"debug|info|warning|error|critical")
SHARING_RE = re.compile(r"off|users|public")


def env_choice(
    env: Mapping[str, str], name: str, default: str, pattern: re.Pattern[str], choices: str
) -> str:
    raw = env_str(env, name) or default
    if not pattern.fullmatch(raw.lower()):
        raise ConfigError(f"{name}={raw!r} is not one of: {choices}")
    return raw.lower()


def env_list(env: Mapping[str, str], name: str, default: list[str]) -> list[str]:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_remote_url(env: Mapping[str, str], name: str) -> str:
    """An OpenAI-compatible server's base URL (``.../v1``), without a trailing slash."""
    raw = env_str(env, name)
    if not raw:
        return ""
    parts = urlsplit(raw)
    if parts.scheme not in {"http", "https"} or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(
            f"{name}={raw!r} is not a server URL; use one like http://gpu-box:8000/v1"
        )
    return raw.rstrip("/")


def env_secret(env: Mapping[str, str], name: str) -> str:
    """A secret from ``NAME`` or from the file named by ``NAME_FILE`` (Docker secrets)."""
    value = env.get(name, "").strip()
    path = env.get(f"{name}_FILE", "").strip()
    if value and path:
        raise ConfigError(f"set only one of {name} and {name}_FILE")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"{name}_FILE={path!r} is empty")
    return value


def parse_database_url(name: str, url: str, *, conn_max_age: int) -> dict[str, Any]:
    """Turn ``DATABASE_URL`` into Django's DATABASES entry, refusing what we don't support."""
    import dj_database_url  # small, Django-free at import

    scheme = urlsplit(url).scheme.lower()
    supported = {"sqlite", "postgres", "postgresql", "pgsql"}
    if scheme not in supported:
        raise ConfigError(
            f"{name}={url!r} is not a database URL StellarChat supports; "
            "use sqlite:///path/to/db.sqlite3 or postgres://user:pass@host:5432/name"
        )
    try:
        parsed: dict[str, Any] = dict(
            dj_database_url.parse(
                url, conn_max_age=conn_max_age, conn_health_checks=conn_max_age > 0
            )
        )
    except Exception as exc:  # dj-database-url raises ValueError/KeyError/... on junk
        raise ConfigError(f"{name}={url!r} is malformed: {exc}") from None
    if scheme != "sqlite":
        port = parsed.get("PORT")
        if not parsed.get("NAME"):
            raise ConfigError(f"{name}={url!r} names no database (…/DBNAME at the end)")
        if port not in ("", None) and not str(port).isdigit():
            raise ConfigError(f"{name}={url!r} has a bad port")
        parsed.setdefault("OPTIONS", {})
    return parsed


def sqlite_database(path: Path) -> dict[str, Any]:
    """The embedded default: WAL so the web and the in-process worker don't block readers.

    Connections are kept (CONN_MAX_AGE None): a SQLite connection is a file handle, and
    opening one (PRAGMAs, Django's ~40 SQL functions) cost more than the queries of a reply:
    a fifth of the database thread's time with 16 conversations at once (py-spy)."""
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "CONN_MAX_AGE": None,
        "OPTIONS": {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }


def pooled(database: dict[str, Any], size: int) -> dict[str, Any]:
    """PostgreSQL through a connection pool per process (what Django advises under ASGI,
    where persistent connections are not reused): a message's database work no longer waits
    for a new connection (~10 ms on loopback, measured on its time to first token). Every
    connection is checked as it leaves the pool, so one cut by a database restart is replaced
    rather than handed out."""
    pool = {"min_size": min(2, size), "max_size": size, "timeout": 10}
    _retry_sooner()
    return {
        **database,
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {**database.get("OPTIONS", {}), "pool": pool},
    }


def _retry_sooner() -> None:
    """psycopg's pool waits 1 s after a connection fails its check before trying the next
    (then 2, 4, ... s), and as long between reconnection attempts. After a database restart
    every pooled connection is dead, so the first request paid seconds (and one that kept
    meeting cut connections never got one: the fault matrix's row 3). Start at 50 ms; still
    backing off, so never a busy loop. (The pool offers no setting for it.)"""
    from psycopg_pool.base import AttemptWithBackoff

    AttemptWithBackoff.INITIAL_DELAY = 0.05


def check_redis_url(name: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError(
            f"{name}={url!r} is not a Redis URL; use redis://host:6379/0 (or rediss://, unix://)"
        )
    if parts.scheme != "unix":
        if not parts.hostname:
            raise ConfigError(f"{name}={url!r} names no host")
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise ConfigError(f"{name}={url!r} has a bad port") from None
    return url


def load_or_create_secret(path: Path) -> str:
    """A per-install secret for development runs, kept so sessions survive restarts."""
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(50)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
    return value


@dataclass(frozen=True)
class Config:
    debug: bool
    secret_key: str
    allowed_hosts: list[str]
    csrf_trusted_origins: list[str]
    database: dict[str, Any]
    redis_url: str
    data_dir: Path
    model: str
    allow_signup: bool
    ssl_redirect: bool
    hsts_seconds: int
    hsts_preload: bool
    log_format: str
    max_new_tokens: int
    device: str
    dtype: str
    trust_remote_code: bool
    log_level: str
    backend: str
    max_message_chars: int
    stream_timeout: int
    drain_seconds: int
    test_backend_delay_ms: int
    metrics_token: str
    worker_metrics_port: int | None
    remote_url: str
    remote_api_key: str
    remote_model: str
    remote_timeout: int
    rate_limit_per_minute: int
    max_concurrent_streams: int
    tokens_per_day: int
    max_batch: int
    torch_threads: int
    model_process: bool
    login_failure_limit: int
    login_lockout_minutes: int
    trusted_proxies: int
    ws_frames_per_second: int
    ws_frame_burst: int
    max_sockets_per_user: int
    ws_handshakes_per_minute: int
    ws_send_buffer_kb: int
    sharing: str
    import_max_mb: int
    models_file: Any = None  # inference.models_file.ModelsFile, or None: one model as before
    worker_models: list[str] | None = None  # the models a worker serves (None: all)


def load(env: Mapping[str, str], *, base_dir: Path) -> Config:
    """Read every variable; raise ``ConfigError`` naming the first bad one."""
    debug = env_bool(env, "DJANGO_DEBUG", False)
    data_dir = Path(env_str(env, "STELLARCHAT_DATA_DIR") or base_dir / "data")
    if not data_dir.is_absolute():
        data_dir = base_dir / data_dir

    secret_key = env_secret(env, "DJANGO_SECRET_KEY")
    if not secret_key:
        if not debug:
            raise ConfigError(
                "DJANGO_SECRET_KEY is required when DJANGO_DEBUG is off "
                "(or set DJANGO_DEBUG=1 for a local development run)"
            )
        secret_key = load_or_create_secret(data_dir / "secret_key")
    elif len(secret_key) < 32 and not debug:
        raise ConfigError("DJANGO_SECRET_KEY is too short; use at least 32 random characters")

    allowed_hosts = env_list(env, "DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
    origins = env_list(env, "DJANGO_CSRF_TRUSTED_ORIGINS", [])
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ConfigError(
                f"DJANGO_CSRF_TRUSTED_ORIGINS has {origin!r}; each origin needs a scheme and "
                "host, like https://chat.example.com"
            )

    conn_max_age = env_int(env, "DJANGO_CONN_MAX_AGE", 0)
    pool_size = env_int(env, "DJANGO_DB_POOL_SIZE", 10)
    db_url = env_str(env, "DATABASE_URL")
    if db_url:
        database = parse_database_url("DATABASE_URL", db_url, conn_max_age=conn_max_age)
        if database["ENGINE"].endswith("sqlite3"):
            database = {**sqlite_database(Path(database["NAME"])), "NAME": database["NAME"]}
        elif pool_size and not conn_max_age:
            database = pooled(database, pool_size)
    else:
        database = sqlite_database(data_dir / "db.sqlite3")

    redis_url = env_str(env, "REDIS_URL")
    if redis_url:
        check_redis_url("REDIS_URL", redis_url)

    hsts = env_int(env, "DJANGO_SECURE_HSTS_SECONDS", 0 if debug else 31_536_000)
    model = env_str(env, "STELLARCHAT_MODEL") or str(
        base_dir / "inference" / "bundled" / "stellarbyte-mini"
    )
    check_multiproc_dir(env)

    backend = env_choice(
        env, "STELLARCHAT_BACKEND", "transformers", BACKEND_RE, "transformers, test, openai"
    )
    remote_url = env_remote_url(env, "STELLARCHAT_REMOTE_URL")
    remote_model = env_str(env, "STELLARCHAT_REMOTE_MODEL")
    if backend == "openai" and not (remote_url and remote_model):
        raise ConfigError(
            "STELLARCHAT_BACKEND=openai needs STELLARCHAT_REMOTE_URL (like "
            "http://gpu-box:8000/v1) and STELLARCHAT_REMOTE_MODEL (the model's name there)"
        )

    max_new_tokens = env_int(env, "STELLARCHAT_MAX_NEW_TOKENS", 1024, minimum=1)
    models = None
    models_path = env_str(env, "STELLARCHAT_MODELS_FILE")
    if models_path:
        from inference import models_file  # plain data: no Django, no torch

        try:
            models = models_file.read(
                models_path, env=env, base_dir=base_dir, max_new_tokens_limit=max_new_tokens
            )
        except models_file.ModelsFileError as exc:
            raise ConfigError(f"STELLARCHAT_MODELS_FILE {exc}") from None
    worker_models = env_list(env, "STELLARCHAT_WORKER_MODELS", []) or None
    if worker_models:
        if models is None:
            raise ConfigError(
                "STELLARCHAT_WORKER_MODELS names models of STELLARCHAT_MODELS_FILE; set that too"
            )
        for name in worker_models:
            if name not in models.models:
                raise ConfigError(
                    f"STELLARCHAT_WORKER_MODELS names {name[:80]!r}, which is not a model of "
                    f"{models_path} (its models: {', '.join(models.models)})"
                )

    return Config(
        debug=debug,
        secret_key=secret_key,
        allowed_hosts=allowed_hosts,
        csrf_trusted_origins=origins,
        database=database,
        redis_url=redis_url,
        data_dir=data_dir,
        model=model,
        allow_signup=env_bool(env, "STELLARCHAT_ALLOW_SIGNUP", True),
        ssl_redirect=env_bool(env, "DJANGO_SECURE_SSL_REDIRECT", not debug),
        hsts_seconds=hsts,
        hsts_preload=env_bool(env, "DJANGO_SECURE_HSTS_PRELOAD", hsts >= 31_536_000),
        log_format=env_choice(env, "DJANGO_LOG_FORMAT", "plain", LOG_FORMAT_RE, "plain, json"),
        max_new_tokens=max_new_tokens,
        device=env_choice(
            env, "STELLARCHAT_DEVICE", "auto", DEVICE_RE, "auto, cpu, cuda, cuda:N, mps"
        ),
        dtype=env_choice(
            env, "STELLARCHAT_DTYPE", "auto", DTYPE_RE, "auto, float32, bfloat16, float16"
        ),
        trust_remote_code=env_bool(env, "STELLARCHAT_TRUST_REMOTE_CODE", False),
        backend=backend,
        max_message_chars=env_int(env, "STELLARCHAT_MAX_MESSAGE_CHARS", 32_000, minimum=1),
        stream_timeout=env_int(env, "STELLARCHAT_STREAM_TIMEOUT", 15, minimum=1),
        drain_seconds=env_int(env, "STELLARCHAT_DRAIN_SECONDS", 30),
        test_backend_delay_ms=env_int(env, "STELLARCHAT_TEST_BACKEND_DELAY_MS", 0),
        metrics_token=env_secret(env, "STELLARCHAT_METRICS_TOKEN"),
        worker_metrics_port=env_port(env, "STELLARCHAT_WORKER_METRICS_PORT"),
        remote_url=remote_url,
        remote_api_key=env_secret(env, "STELLARCHAT_REMOTE_API_KEY"),
        remote_model=remote_model,
        remote_timeout=env_int(env, "STELLARCHAT_REMOTE_TIMEOUT", 60, minimum=1),
        rate_limit_per_minute=env_int(env, "STELLARCHAT_RATE_LIMIT_PER_MINUTE", 30),
        max_concurrent_streams=env_int(env, "STELLARCHAT_MAX_CONCURRENT_STREAMS", 3),
        tokens_per_day=env_int(env, "STELLARCHAT_TOKENS_PER_DAY", 0),
        max_batch=env_int(env, "STELLARCHAT_MAX_BATCH", 32, minimum=1),
        torch_threads=env_int(env, "STELLARCHAT_TORCH_THREADS", 0),
        model_process=env_bool(env, "STELLARCHAT_MODEL_PROCESS", True),
        login_failure_limit=env_int(env, "STELLARCHAT_LOGIN_FAILURE_LIMIT", 5),
        login_lockout_minutes=env_int(env, "STELLARCHAT_LOGIN_LOCKOUT_MINUTES", 15, minimum=1),
        trusted_proxies=env_int(env, "STELLARCHAT_TRUSTED_PROXIES", 0),
        ws_frames_per_second=env_int(env, "STELLARCHAT_WS_FRAMES_PER_SECOND", 20),
        ws_frame_burst=env_int(env, "STELLARCHAT_WS_FRAME_BURST", 100, minimum=1),
        max_sockets_per_user=env_int(env, "STELLARCHAT_MAX_SOCKETS_PER_USER", 30),
        ws_handshakes_per_minute=env_int(env, "STELLARCHAT_WS_HANDSHAKES_PER_MINUTE", 60),
        ws_send_buffer_kb=env_int(env, "STELLARCHAT_WS_SEND_BUFFER_KB", 1024),
        sharing=env_choice(env, "STELLARCHAT_SHARING", "users", SHARING_RE, "off, users, public"),
        import_max_mb=env_int(env, "STELLARCHAT_IMPORT_MAX_MB", 50, minimum=1),
        models_file=models,
        worker_models=worker_models,
        log_level=env_choice(
            env, "DJANGO_LOG_LEVEL", "info", LOG_LEVEL_RE, "debug, info, warning, error, critical"
        ).upper(),
    )
