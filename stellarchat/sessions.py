"""Database sessions whose keys are checked before they reach a query.

Django's own check accepts any cookie value of 8+ characters, so a session cookie holding a NUL
went on to PostgreSQL, which refuses NUL in text with an error: a 500 for any request (page or
WebSocket handshake) anyone sends with such a cookie. Keys Django makes are letters and digits.
The read itself is Django's, with its SQL compiled once (``stellarchat.prepared``).
"""

from __future__ import annotations

from typing import Any

from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.contrib.sessions.models import Session
from django.utils import timezone

from stellarchat.prepared import Prepared


class SessionStore(DatabaseSessionStore):
    def _validate_session_key(self, key: str | None) -> bool:
        """A key that Django could have made; anything else is simply no session."""
        return bool(key and key.isascii() and key.isalnum() and super()._validate_session_key(key))

    def _get_session_from_db(self) -> Any:
        """Django's read, compiled once: every page and every WebSocket handshake reads its
        session (stellarchat/prepared.py: why)."""
        found = _unexpired(key=self.session_key, now=timezone.now())
        if not found:
            self._session_key = None
            return None
        return found[0]


def _build_unexpired(key: str, now: Any) -> Any:
    return Session.objects.filter(session_key=key, expire_date__gt=now)[:1]


_unexpired = Prepared(
    Session,
    _build_unexpired,
    key=Session._meta.get_field("session_key"),
    now=Session._meta.get_field("expire_date"),
)
