"""Deleting an account: everything the person owns goes in one transaction, then their open
sockets are told to close and their replies still being generated are asked to stop.

Everything hangs off the user or their conversations with ``on_delete=CASCADE`` (messages,
votes, API keys, preferences, share links, imports, admin log entries), so deleting those rows
deletes the rest. Sessions are the exception: they are signed blobs, not rows with a user
column, so each is decoded to find the person's.
"""

from __future__ import annotations

import logging
from importlib import import_module
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model
from django.db import transaction

from chat import streams
from chat.models import Conversation, Message

logger = logging.getLogger(__name__)

EVENT = "account.deleted"  # the group event chat.consumers closes a socket on (code 4403)
BATCH = 200  # conversations deleted per statement: the cascade's collector holds one batch


def account_delete(*, user: Any) -> None:
    """Delete ``user`` and all their data, log out every session of theirs and close their
    sockets (browser tabs and API-key programs alike)."""
    user_id = user.pk
    with transaction.atomic():
        streaming = list(
            Message.objects.filter(
                conversation__owner_id=user_id, status=Message.Status.STREAMING
            ).values_list("pk", flat=True)
        )
        sessions_delete(user_id=user_id)
        conversations = Conversation.objects.filter(owner_id=user_id).values_list("pk", flat=True)
        while batch := list(conversations[:BATCH]):
            Conversation.objects.filter(pk__in=batch).delete()
        get_user_model()._default_manager.filter(pk=user_id).delete()
    _stop_replies(streaming)
    _close_sockets(user_id)


def sessions_delete(*, user_id: Any) -> int:
    """Delete every stored session logged in as ``user_id``; how many went. Only database
    sessions are stored (this project's engine is one); with signed-cookie or cache sessions a
    deleted user's session simply finds no user."""
    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    get_model = getattr(store_class, "get_model_class", None)
    if get_model is None:
        return 0
    model = get_model()
    store = store_class()
    theirs = [
        key
        for key, data in model.objects.values_list("session_key", "session_data").iterator(
            chunk_size=1000
        )
        if str(store.decode(data).get(SESSION_KEY)) == str(user_id)
    ]
    for start in range(0, len(theirs), 500):
        model.objects.filter(session_key__in=theirs[start : start + 500]).delete()
    return len(theirs)


def _stop_replies(message_ids: list[Any]) -> None:
    """Ask the workers to stop generating for an account that is gone (their saves would
    find no row anyway). Best effort, like a stop frame."""
    try:
        for pk in message_ids:
            async_to_sync(streams.request_cancel)(pk)
    except Exception as exc:  # the cache (Redis) away: the replies end by themselves
        logger.warning("could not ask %d replies to stop: %s", len(message_ids), exc)


def _close_sockets(user_id: Any) -> None:
    """Every socket of the person is in their user group (chat.consumers.join_groups), the
    ones opened with an API key too."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(streams.user_group(user_id), {"type": EVENT})
    except Exception as exc:  # Redis down: the sockets stay open, but their data is gone
        logger.warning("could not close the sockets of deleted user %s: %s", user_id, exc)
