"""Writes for API keys (named <entity>_<action>, keyword-only, like chat.services)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from api import keys
from api.models import ApiKey

logger = logging.getLogger(__name__)

NAME_MAX = 100
MAX_ACTIVE_KEYS = 50
TOUCH_EVERY = timedelta(seconds=60)  # last_used_at is a hint, not a per-request write


class KeyLimitReached(Exception):
    """The user already has MAX_ACTIVE_KEYS active keys."""


def api_key_create(*, user: Any, name: str, store_conversations: bool = True) -> tuple[ApiKey, str]:
    """Create a key; returns it with the plain key, which exists only in this return value."""
    name = " ".join(name.split())[:NAME_MAX]
    if not name:
        raise ValueError("a key needs a name")
    if ApiKey.objects.filter(user=user, revoked_at__isnull=True).count() >= MAX_ACTIVE_KEYS:
        raise KeyLimitReached
    for _ in range(5):  # a prefix collision is a 1-in-2.8e12 event; retry rather than fail
        plain, prefix, hashed = keys.generate()
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    user=user,
                    name=name,
                    prefix=prefix,
                    hashed=hashed,
                    store_conversations=store_conversations,
                )
            return key, plain
        except IntegrityError:
            continue
    raise RuntimeError("could not find a free key prefix")  # pragma: no cover


def key_group(key_id: int) -> str:
    """The channel-layer group of the WebSockets authenticated with one key."""
    return f"apikey.{key_id}"


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    """Revoke at once: every request reads the key's state, and open sockets are closed."""
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    _close_sockets(key.pk)
    return key


def _close_sockets(key_id: int) -> None:
    """Tell sockets using the key to close. Best effort: a socket that misses this (broker
    away) still finds the key revoked on its next frame."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(key_group(key_id), {"type": "apikey.revoked"})
    except Exception as exc:  # Redis down: the per-frame check covers it
        logger.warning("could not notify sockets of revoked key %s: %s", key_id, exc)


def api_key_set_store(*, key: ApiKey, store_conversations: bool) -> ApiKey:
    key.store_conversations = store_conversations
    key.save(update_fields=["store_conversations"])
    return key


def api_key_touch(*, key: ApiKey) -> None:
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= TOUCH_EVERY:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
