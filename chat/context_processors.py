from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest


def stellarchat(request: HttpRequest) -> dict[str, Any]:
    """Values every page needs (the sign-up link is shown only while sign-up is open)."""
    return {"allow_signup": settings.STELLARCHAT_ALLOW_SIGNUP}
