"""Settings come from the environment; bad values stop start-up with one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stellarchat import config
from stellarchat.config import ConfigError
from tests.e2e.livedaphne import clean_env

BASE = Path(__file__).resolve().parents[2]
SECRET = "s" * 50


def load(tmp_path: Path, **env: str) -> config.Config:
    env.setdefault("STELLARCHAT_DATA_DIR", str(tmp_path))
    return config.load(env, base_dir=BASE)


def test_it_works_with_nothing_set_in_debug(tmp_path: Path) -> None:
    cfg = load(tmp_path, DJANGO_DEBUG="1")
    assert cfg.debug is True
    assert cfg.database["ENGINE"] == "django.db.backends.sqlite3"
    assert cfg.database["NAME"] == str(tmp_path / "db.sqlite3")
    assert cfg.redis_url == ""
    assert cfg.model == str(BASE / "inference" / "bundled" / "stellarbyte-mini")
    assert cfg.allow_signup is True
    # The generated secret is kept, so sessions survive a restart.
    assert (tmp_path / "secret_key").read_text().strip() == cfg.secret_key
    assert load(tmp_path, DJANGO_DEBUG="1").secret_key == cfg.secret_key
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_debug_is_off_by_default_and_then_needs_a_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DJANGO_SECRET_KEY is required"):
        load(tmp_path)
    cfg = load(tmp_path, DJANGO_SECRET_KEY=SECRET)
    assert cfg.debug is False
    assert cfg.ssl_redirect is True
    assert cfg.hsts_seconds >= 31_536_000


def test_it_rejects_a_short_production_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="too short"):
        load(tmp_path, DJANGO_SECRET_KEY="short")


def test_secret_can_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(SECRET + "\n")
    assert load(tmp_path, DJANGO_SECRET_KEY_FILE=str(path)).secret_key == SECRET
    with pytest.raises(ConfigError, match="DJANGO_SECRET_KEY_FILE"):
        load(tmp_path, DJANGO_SECRET_KEY_FILE=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="only one of"):
        load(tmp_path, DJANGO_SECRET_KEY=SECRET, DJANGO_SECRET_KEY_FILE=str(path))


@pytest.mark.parametrize("word", ["1", "true", "TRUE", " yes ", "on"])
def test_booleans_accept_true_words(tmp_path: Path, word: str) -> None:
    assert load(tmp_path, DJANGO_DEBUG=word).debug is True


@pytest.mark.parametrize("word", ["0", "false", "No", "off"])
def test_booleans_accept_false_words(tmp_path: Path, word: str) -> None:
    assert load(tmp_path, DJANGO_DEBUG=word, DJANGO_SECRET_KEY=SECRET).debug is False


@pytest.mark.parametrize("word", ["maybe", "2", "tru", "yes please", "\u202etrue"])
def test_it_rejects_a_boolean_that_is_not_one(tmp_path: Path, word: str) -> None:
    with pytest.raises(ConfigError, match="DJANGO_DEBUG=.* is not a boolean"):
        load(tmp_path, DJANGO_DEBUG=word)
    with pytest.raises(ConfigError, match="STELLARCHAT_ALLOW_SIGNUP"):
        load(tmp_path, DJANGO_DEBUG="1", STELLARCHAT_ALLOW_SIGNUP=word)


def test_signup_can_be_switched_off(tmp_path: Path) -> None:
    assert load(tmp_path, DJANGO_DEBUG="1", STELLARCHAT_ALLOW_SIGNUP="false").allow_signup is False


def test_postgres_url_uses_psycopg(tmp_path: Path) -> None:
    cfg = load(tmp_path, DJANGO_DEBUG="1", DATABASE_URL="postgres://u:p@db.example:5433/stellar")
    assert cfg.database["ENGINE"] == "django.db.backends.postgresql"
    assert (cfg.database["HOST"], cfg.database["PORT"], cfg.database["NAME"]) == (
        "db.example",
        5433,
        "stellar",
    )


def test_postgres_connections_come_from_a_checked_pool(tmp_path: Path) -> None:
    url = "postgres://u:p@db.example:5433/stellar"
    cfg = load(tmp_path, DJANGO_DEBUG="1", DATABASE_URL=url)
    assert cfg.database["OPTIONS"]["pool"] == {"min_size": 2, "max_size": 10, "timeout": 10}
    assert cfg.database["CONN_MAX_AGE"] == 0 and cfg.database["CONN_HEALTH_CHECKS"]
    small = load(tmp_path, DJANGO_DEBUG="1", DATABASE_URL=url, DJANGO_DB_POOL_SIZE="1")
    assert small.database["OPTIONS"]["pool"]["max_size"] == 1
    assert small.database["OPTIONS"]["pool"]["min_size"] == 1
    off = load(tmp_path, DJANGO_DEBUG="1", DATABASE_URL=url, DJANGO_DB_POOL_SIZE="0")
    assert "pool" not in off.database["OPTIONS"]
    # Persistent connections asked for by name replace the pool (Django refuses both).
    kept = load(tmp_path, DJANGO_DEBUG="1", DATABASE_URL=url, DJANGO_CONN_MAX_AGE="60")
    assert "pool" not in kept.database["OPTIONS"] and kept.database["CONN_MAX_AGE"] == 60
    for bad in ("-1", "ten", "1.5"):
        with pytest.raises(ConfigError, match="DJANGO_DB_POOL_SIZE"):
            load(tmp_path, DJANGO_DEBUG="1", DATABASE_URL=url, DJANGO_DB_POOL_SIZE=bad)


def test_sqlite_connections_are_kept(tmp_path: Path) -> None:
    assert load(tmp_path, DJANGO_DEBUG="1").database["CONN_MAX_AGE"] is None
    sqlite = load(tmp_path, DJANGO_DEBUG="1", DATABASE_URL=f"sqlite:///{tmp_path}/x.sqlite3")
    assert sqlite.database["CONN_MAX_AGE"] is None and "pool" not in sqlite.database["OPTIONS"]


def test_the_model_process_is_on_unless_switched_off(tmp_path: Path) -> None:
    assert load(tmp_path, DJANGO_DEBUG="1").model_process is True
    assert load(tmp_path, DJANGO_DEBUG="1", STELLARCHAT_MODEL_PROCESS="0").model_process is False
    with pytest.raises(ConfigError, match="STELLARCHAT_MODEL_PROCESS"):
        load(tmp_path, DJANGO_DEBUG="1", STELLARCHAT_MODEL_PROCESS="thread")


def test_sqlite_url_keeps_the_embedded_tuning(tmp_path: Path) -> None:
    cfg = load(tmp_path, DJANGO_DEBUG="1", DATABASE_URL=f"sqlite:///{tmp_path}/x.sqlite3")
    assert cfg.database["NAME"] == f"{tmp_path}/x.sqlite3"
    assert "journal_mode=WAL" in cfg.database["OPTIONS"]["init_command"]


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "mysql://u@h/db",
        "postgres://u@h:notaport/db",
        "postgres://u@h:5432/",
        "http://example.com/db",
        "",
    ],
)
def test_it_rejects_a_malformed_database_url(tmp_path: Path, url: str) -> None:
    if url == "":  # empty means "the default", not an error
        assert load(tmp_path, DJANGO_DEBUG="1", DATABASE_URL=url).database["NAME"]
        return
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        load(tmp_path, DJANGO_DEBUG="1", DATABASE_URL=url)


def test_redis_url_is_checked(tmp_path: Path) -> None:
    assert load(tmp_path, DJANGO_DEBUG="1", REDIS_URL="redis://127.0.0.1:6379/0").redis_url
    for bad in ("localhost:6379", "http://h:6379", "redis://h:port/0", "redis:///0"):
        with pytest.raises(ConfigError, match="REDIS_URL"):
            load(tmp_path, DJANGO_DEBUG="1", REDIS_URL=bad)


def test_hosts_and_origins_are_lists(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        DJANGO_DEBUG="1",
        DJANGO_ALLOWED_HOSTS="chat.example.com, .example.org",
        DJANGO_CSRF_TRUSTED_ORIGINS="https://chat.example.com",
    )
    assert cfg.allowed_hosts == ["chat.example.com", ".example.org"]
    assert cfg.csrf_trusted_origins == ["https://chat.example.com"]
    with pytest.raises(ConfigError, match="DJANGO_CSRF_TRUSTED_ORIGINS"):
        load(tmp_path, DJANGO_DEBUG="1", DJANGO_CSRF_TRUSTED_ORIGINS="chat.example.com")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STELLARCHAT_DEVICE", "tpu"),
        ("STELLARCHAT_DTYPE", "int4"),
        ("STELLARCHAT_MAX_NEW_TOKENS", "lots"),
        ("STELLARCHAT_MAX_NEW_TOKENS", "0"),
        ("STELLARCHAT_TRUST_REMOTE_CODE", "please"),
        ("STELLARCHAT_BACKEND", "gpt"),
        ("DJANGO_LOG_LEVEL", "loud"),
    ],
)
def test_it_names_the_bad_variable(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load(tmp_path, DJANGO_DEBUG="1", **{name: value})


def test_model_can_be_any_folder_or_hub_id(tmp_path: Path) -> None:
    cfg = load(tmp_path, DJANGO_DEBUG="1", STELLARCHAT_MODEL="Qwen/Qwen2.5-0.5B-Instruct")
    assert cfg.model == "Qwen/Qwen2.5-0.5B-Instruct"


# --- The real start-up path: one line, no traceback. --------------------------------------


def run_manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE,
        env=clean_env(STELLARCHAT_DATA_DIR=str(tmp_path), **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG"),
        ({"DJANGO_DEBUG": "1", "DATABASE_URL": "mysql:/nope"}, "DATABASE_URL"),
        ({}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_DEBUG": "1", "REDIS_URL": "localhost"}, "REDIS_URL"),
    ],
)
def test_bad_values_stop_startup_with_one_line(
    tmp_path: Path, env: dict[str, str], variable: str
) -> None:
    proc = run_manage(tmp_path, "check", **env)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("StellarChat configuration error:")
    assert variable in lines[0]


def test_production_settings_turn_https_hardening_on(tmp_path: Path) -> None:
    code = (
        "from django.conf import settings as s;"
        "print(s.DEBUG, s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE,"
        " s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS > 0)"
    )
    proc = run_manage(tmp_path, "shell", "-v", "0", "-c", code, DJANGO_SECRET_KEY=SECRET)
    assert proc.stdout.split() == ["False", "True", "True", "True", "True"], proc.stderr
    proc = run_manage(
        tmp_path,
        "shell",
        "-v",
        "0",
        "-c",
        code,
        DJANGO_SECRET_KEY=SECRET,
        DJANGO_SECURE_SSL_REDIRECT="0",
    )
    assert proc.stdout.split() == ["False", "False", "True", "True", "True"], proc.stderr


def test_the_models_file_is_read_at_start_and_a_bad_one_names_itself(tmp_path: Path) -> None:
    assert load(tmp_path, DJANGO_DEBUG="1").models_file is None  # one model, as before
    good = tmp_path / "models.toml"
    good.write_text('[models.echo]\nbackend = "test"\noptions = {max_new_tokens = 300}\n')
    cfg = load(tmp_path, DJANGO_DEBUG="1", STELLARCHAT_MODELS_FILE=str(good))
    assert list(cfg.models_file.models) == ["echo"] and cfg.models_file.default == "echo"
    # options are checked against this deployment's own ceiling
    with pytest.raises(config.ConfigError, match="options.max_new_tokens"):
        load(
            tmp_path,
            DJANGO_DEBUG="1",
            STELLARCHAT_MODELS_FILE=str(good),
            STELLARCHAT_MAX_NEW_TOKENS="100",
        )
    with pytest.raises(config.ConfigError) as caught:
        load(tmp_path, DJANGO_DEBUG="1", STELLARCHAT_MODELS_FILE=str(tmp_path / "nope.toml"))
    assert str(caught.value).startswith("STELLARCHAT_MODELS_FILE ") and "not a file" in str(
        caught.value
    )


def test_sharing_and_import_limits_are_read_and_checked() -> None:
    from pathlib import Path

    from stellarchat.config import ConfigError, load

    base = {"DJANGO_DEBUG": "1"}
    config = load(base, base_dir=Path("/tmp"))
    assert config.sharing == "users" and config.import_max_mb == 50
    config = load(
        {**base, "STELLARCHAT_SHARING": "Public", "STELLARCHAT_IMPORT_MAX_MB": "5"},
        base_dir=Path("/tmp"),
    )
    assert config.sharing == "public" and config.import_max_mb == 5
    for name, value in (
        ("STELLARCHAT_SHARING", "everyone"),
        ("STELLARCHAT_IMPORT_MAX_MB", "0"),
        ("STELLARCHAT_IMPORT_MAX_MB", "5MB"),
    ):
        with pytest.raises(ConfigError, match=name):
            load({**base, name: value}, base_dir=Path("/tmp"))
