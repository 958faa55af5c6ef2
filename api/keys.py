"""Making, recognizing and checking API keys. Pure functions plus one lookup.

A key reads ``sc_<8 id chars>_<40 secret chars>``: the ``sc_`` marks it for secret scanners,
the id part is the stored ``prefix`` (shown in lists, never enough to authenticate).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from typing import Any

KEY_RE = re.compile(r"sc_([a-z0-9]{8})_([A-Za-z0-9]{40})")
ID_ALPHABET = string.ascii_lowercase + string.digits
SECRET_ALPHABET = string.ascii_letters + string.digits


def generate() -> tuple[str, str, str]:
    """A new key: (the key, its prefix, its hash). The key itself is never stored."""
    ident = "".join(secrets.choice(ID_ALPHABET) for _ in range(8))
    secret = "".join(secrets.choice(SECRET_ALPHABET) for _ in range(40))
    key = f"sc_{ident}_{secret}"
    return key, f"sc_{ident}", digest(key)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def prefix_of(key: str) -> str | None:
    """The prefix of a well-formed key, or None (malformed keys never reach the database)."""
    match = KEY_RE.fullmatch(key)
    return f"sc_{match.group(1)}" if match else None


def matches(key: str, hashed: str) -> bool:
    return hmac.compare_digest(digest(key), hashed)


def bearer_token(value: str | bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate(key: str) -> Any:
    """The active ``ApiKey`` this key belongs to (with its user), or None. Every call reads
    the database, so a revoked key stops working at once."""
    from api.models import ApiKey

    prefix = prefix_of(key)
    if prefix is None:
        return None
    found = (
        ApiKey.objects.select_related("user")
        .filter(prefix=prefix, revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if found is None or not matches(key, found.hashed):
        return None
    return found
