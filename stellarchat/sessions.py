"""Database sessions whose keys are checked before they reach a query.

Django's own check accepts any cookie value of 8+ characters, so a session cookie holding a NUL
went on to PostgreSQL, which refuses NUL in text with an error: a 500 for any request (page or
WebSocket handshake) anyone sends with such a cookie. Keys Django makes are letters and digits.
"""

from __future__ import annotations

from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore


class SessionStore(DatabaseSessionStore):
    def _validate_session_key(self, key: str | None) -> bool:
        """A key that Django could have made; anything else is simply no session."""
        return bool(key and key.isascii() and key.isalnum() and super()._validate_session_key(key))
