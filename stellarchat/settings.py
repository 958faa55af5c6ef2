"""StellarChat settings: one module, driven by environment variables (see README's table).

Values are parsed by ``stellarchat.config``; a bad one stops start-up with one line naming
the variable rather than a traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from stellarchat import config

BASE_DIR = Path(__file__).resolve().parent.parent

try:
    CONFIG = config.load(os.environ, base_dir=BASE_DIR)
except config.ConfigError as exc:
    # SystemExit with a string prints just that line to stderr and exits 1.
    raise SystemExit(f"StellarChat configuration error: {exc}") from None

DEBUG = CONFIG.debug
SECRET_KEY = CONFIG.secret_key
ALLOWED_HOSTS = CONFIG.allowed_hosts
CSRF_TRUSTED_ORIGINS = CONFIG.csrf_trusted_origins
DATA_DIR = CONFIG.data_dir

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "servestatic",  # its configuration checks (without it, DEBUG warns at every start)
    "django_htmx",
    "template_partials",
    "csp",
    # Before "channels": inference's runworker (sweeper + model warm-up) overrides channels'.
    "inference",
    "chat",
    "api",
    "sharing",
    "portability",
    "channels",
    "django_prometheus",
    # The task queue (imports): Django 6's Tasks backported, its jobs kept in the database.
    "django_tasks",
    "django_tasks_db",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",  # first: whole-request timing
    "stellarchat.logs.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "chat.middleware.UserLanguageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",  # last: per-view metrics
]

ROOT_URLCONF = "stellarchat.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "chat.context_processors.stellarchat",
            ],
        },
    },
]

WSGI_APPLICATION = None
ASGI_APPLICATION = "stellarchat.asgi.application"

# The same engines wrapped by django-prometheus, which counts connections, queries and errors.
_METERED_ENGINES = {
    "django.db.backends.sqlite3": "django_prometheus.db.backends.sqlite3",
    "django.db.backends.postgresql": "django_prometheus.db.backends.postgresql",
}
DATABASES = {
    "default": {
        **CONFIG.database,
        "ENGINE": _METERED_ENGINES.get(CONFIG.database["ENGINE"], CONFIG.database["ENGINE"]),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if CONFIG.redis_url:
    CHANNEL_LAYERS = {
        "default": {
            # channels-redis's, with a group send of two trips to Redis instead of four.
            "BACKEND": "stellarchat.redis_layer.RedisChannelLayer",
            "CONFIG": {
                # socket_timeout None: a worker's blocking read must not time out (PITFALLS.md).
                "hosts": [{"address": CONFIG.redis_url, "socket_timeout": None}],
                # channels-redis counts capacity per Redis key, and every socket of a web
                # process shares ONE key (its "specific.<process>!" queue): with the default
                # 100, a process whose receive loop lags a moment behind its sockets' deltas
                # silently drops group messages for all of them (a whole turn's frames, once,
                # under load: tests/deploy/test_layer_capacity.py). 5,000 x ~0.3 KB at most
                # per process; messages still expire after 60 s.
                "capacity": 5000,
                # Jobs queued before "queue full", per model ("inference.<model>...": a glob).
                "channel_capacity": {"inference": 1000, "inference.*": 1000},
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CONFIG.redis_url,
            "KEY_PREFIX": "stellarchat",
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "stellarchat.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# After `collectstatic` (the Docker image runs it) serve hashed, compressed files; before it
# (a fresh clone, tests) serve straight from the source folders so nothing needs collecting.
# `collectstatic` itself must use the hashing storage, or it never writes the manifest.
COLLECTING = sys.argv[1:2] == ["collectstatic"]
COLLECTED_STATIC = COLLECTING or (STATIC_ROOT / "staticfiles.json").exists()
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "servestatic.storage.CompressedManifestStaticFilesStorage"
        if COLLECTED_STATIC
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
SERVESTATIC_USE_FINDERS = not COLLECTED_STATIC
SERVESTATIC_AUTOREFRESH = DEBUG

# --- Security: on by default whenever DEBUG is off. -----------------------------------
SECURE_SSL_REDIRECT = CONFIG.ssl_redirect
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]  # probes, scrapes
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = CONFIG.hsts_seconds
SECURE_HSTS_INCLUDE_SUBDOMAINS = CONFIG.hsts_seconds > 0
# Allows (does not make) a submission to the browsers' preload list.
SECURE_HSTS_PRELOAD = CONFIG.hsts_preload
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
SESSION_ENGINE = "stellarchat.sessions"  # database sessions; hostile keys never reach a query
SESSION_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
# No inline script or style anywhere: everything the page runs is a static file of ours.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# Failed log-ins per username (and 4x that per client address) before the login page answers
# 429 for a while (chat/throttle.py); 0 = off. The client address is REMOTE_ADDR unless
# STELLARCHAT_TRUSTED_PROXIES says how many proxies in front append to X-Forwarded-For.
STELLARCHAT_LOGIN_FAILURE_LIMIT = CONFIG.login_failure_limit
STELLARCHAT_LOGIN_LOCKOUT_MINUTES = CONFIG.login_lockout_minutes
STELLARCHAT_TRUSTED_PROXIES = CONFIG.trusted_proxies

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "stellarchat.logs.RequestIdFilter"},
        "startup_noise": {"()": "stellarchat.logs.StartupNoise"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "stellarchat.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": CONFIG.log_format,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": CONFIG.log_level},
    # httpx logs every request at INFO: one line per remote reply is noise.
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "daphne.server": {"filters": ["startup_noise"]},
    },
}

# --- StellarChat -------------------------------------------------------------------------
STELLARCHAT_BACKEND = CONFIG.backend
STELLARCHAT_MAX_MESSAGE_CHARS = CONFIG.max_message_chars
STELLARCHAT_STREAM_TIMEOUT = CONFIG.stream_timeout
STELLARCHAT_DRAIN_SECONDS = CONFIG.drain_seconds
STELLARCHAT_TEST_BACKEND_DELAY_MS = CONFIG.test_backend_delay_ms
STELLARCHAT_MODEL = CONFIG.model
# The models file (STELLARCHAT_MODELS_FILE) as read and checked at start, or None: one model
# from the variables above (inference/registry.py).
STELLARCHAT_MODELS = CONFIG.models_file
# The models a `runworker inference` process serves (STELLARCHAT_WORKER_MODELS; None: all).
STELLARCHAT_WORKER_MODELS = CONFIG.worker_models
STELLARCHAT_ALLOW_SIGNUP = CONFIG.allow_signup
STELLARCHAT_MAX_NEW_TOKENS = CONFIG.max_new_tokens
STELLARCHAT_DEVICE = CONFIG.device
STELLARCHAT_DTYPE = CONFIG.dtype
STELLARCHAT_TRUST_REMOTE_CODE = CONFIG.trust_remote_code
STELLARCHAT_METRICS_TOKEN = CONFIG.metrics_token
STELLARCHAT_WORKER_METRICS_PORT = CONFIG.worker_metrics_port
STELLARCHAT_REMOTE_URL = CONFIG.remote_url
STELLARCHAT_REMOTE_API_KEY = CONFIG.remote_api_key
STELLARCHAT_REMOTE_MODEL = CONFIG.remote_model
STELLARCHAT_REMOTE_TIMEOUT = CONFIG.remote_timeout
# Limits per user, on the chat WebSocket and the REST API alike (0 = no limit).
STELLARCHAT_RATE_LIMIT_PER_MINUTE = CONFIG.rate_limit_per_minute
STELLARCHAT_MAX_CONCURRENT_STREAMS = CONFIG.max_concurrent_streams
STELLARCHAT_TOKENS_PER_DAY = CONFIG.tokens_per_day
# What one account may cost the chat socket's server (0 = off): frames per socket (a token
# bucket) and unsent bytes a socket may hold, inside daphne (stellarchat/wsserver.py); sockets
# per person (across web processes through Redis) and handshakes per client address a minute
# (chat/socket_limits.py).
STELLARCHAT_WS_FRAMES_PER_SECOND = CONFIG.ws_frames_per_second
STELLARCHAT_WS_FRAME_BURST = CONFIG.ws_frame_burst
STELLARCHAT_MAX_SOCKETS_PER_USER = CONFIG.max_sockets_per_user
STELLARCHAT_WS_HANDSHAKES_PER_MINUTE = CONFIG.ws_handshakes_per_minute
STELLARCHAT_WS_SEND_BUFFER_KB = CONFIG.ws_send_buffer_kb
# Share links: off, users (anyone logged in who has the link) or public (docs/sharing.md).
STELLARCHAT_SHARING = CONFIG.sharing
# The largest file Settings -> Import takes (docs/import.md).
STELLARCHAT_IMPORT_MAX_MB = CONFIG.import_max_mb
# Background work (imports) goes through a durable queue: each task is a database row, so a
# restart loses none. Production runs `manage.py task_worker` (Compose's `tasks`); embedded
# (no REDIS_URL, `make run`) the web process runs the same worker on a thread of its own.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
STELLARCHAT_EMBEDDED_TASKS = not CONFIG.redis_url
# Replies one inference worker decodes together (batched decode steps).
STELLARCHAT_MAX_BATCH = CONFIG.max_batch
# torch's threads in a process that generates on the CPU (0 = one fewer than the cores).
STELLARCHAT_TORCH_THREADS = CONFIG.torch_threads
# The transformers backend runs its model in a child process (1) or on a thread (0).
STELLARCHAT_MODEL_PROCESS = CONFIG.model_process
