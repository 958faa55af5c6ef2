from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

from chat import selectors


def stellarchat(request: HttpRequest) -> dict[str, Any]:
    """Values every page needs: the sign-up switch, and the theme so the first paint is right."""
    prefs = selectors.preferences_for(user=getattr(request, "user", None))
    return {"allow_signup": settings.STELLARCHAT_ALLOW_SIGNUP, "theme": prefs.theme}
