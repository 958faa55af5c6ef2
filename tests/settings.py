"""Settings for the test suite: the real settings, with the database chosen for the run.

The database-backed tests run on the real PostgreSQL on 127.0.0.1 when it answers (always in
CI). Without it they fall back to SQLite with a loud warning, except under CI, where a missing
PostgreSQL is a failure rather than a silently weaker run.
"""

from __future__ import annotations

import os
import sys

from tests import services

os.environ.setdefault("DJANGO_SECRET_KEY", "test-secret-key-not-for-production-0123456789abcdef")
os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

if "DATABASE_URL" not in os.environ:
    if services.postgres_available():
        os.environ["DATABASE_URL"] = services.POSTGRES_URL
    elif services.in_ci():
        raise SystemExit(f"CI is set but PostgreSQL does not answer at {services.POSTGRES_URL}")
    else:
        print(
            f"\n!!! PostgreSQL does not answer at {services.POSTGRES_URL}: "
            "database tests run on SQLite this time !!!\n",
            file=sys.stderr,
        )

from stellarchat.settings import *  # noqa: E402,F403
from stellarchat.settings import DATA_DIR, DATABASES  # noqa: E402

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not :memory:, so live-server tests can share it across threads and processes.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-db.sqlite3")}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
# No task worker thread inside test processes that import the ASGI app: tests run the queue
# themselves (tests/portability/test_import_queue.py).
STELLARCHAT_EMBEDDED_TASKS = False
