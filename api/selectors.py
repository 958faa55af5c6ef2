"""Reads for API keys, scoped to their owner."""

from __future__ import annotations

from typing import Any

from django.db.models import F, QuerySet

from api.models import ApiKey


def api_key_list(*, user: Any) -> QuerySet[ApiKey]:
    """The user's keys, active first, newest first."""
    return ApiKey.objects.filter(user=user).order_by(
        F("revoked_at").asc(nulls_first=True), "-created_at"
    )


def api_key_get(*, user: Any, key_id: Any) -> ApiKey | None:
    try:
        pk = int(key_id)
    except (TypeError, ValueError):
        return None
    return ApiKey.objects.filter(user=user, pk=pk).first()
