"""The chat WebSocket (/ws/chat/): authenticate, validate, route to ``chat.actions``, relay."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from api.services import key_group
from chat import actions, selectors, socket_limits, streams
from chat.protocol import ProtocolError, error_frame, parse_frame
from stellarchat import logs, metrics
from stellarchat.consumers import DirectDispatch

logger = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS = 50  # conversations one socket follows at once (oldest dropped first)
CLOSE_KEY_REVOKED = 4401  # close code: the API key this socket authenticated with was revoked
CLOSE_ACCOUNT_DELETED = 4403  # close code: the person deleted their account (do not reconnect)


@database_sync_to_async
def key_still_active(key_id: int) -> bool:
    from api.models import ApiKey

    return ApiKey.objects.filter(pk=key_id, revoked_at__isnull=True).exists()


def is_broker_outage(exc: BaseException) -> bool:
    """A connection problem with Redis (the channel layer or the cache), not a bug of ours."""
    return isinstance(exc, ConnectionError | TimeoutError) or type(exc).__module__.startswith(
        "redis"
    )


# Frames this process's sockets are handling right now: a stopping web process waits for
# them to be answered before it closes its sockets (stellarchat.wsserver.stop_gracefully).
_in_hand = 0


def frames_in_hand() -> int:
    return _in_hand


class ChatConsumer(DirectDispatch, AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()  # before accept: the handshake is refused (HTTP 403)
            return
        if not await socket_limits.socket_acquire(user_id=user.pk):
            session = self.scope.get("session")
            socket_limits.remember_full(getattr(session, "session_key", None), user.pk)
            await self.accept()  # then a close code the page can tell apart (docs)
            await self.close(code=socket_limits.CLOSE_TOO_MANY_SOCKETS)
            return
        try:
            await self.join_groups(user)
        except BaseException:  # the socket never opens, so no disconnect() will release it
            await socket_limits.socket_release(user_id=user.pk)
            raise
        self.user = user  # from here on, disconnect() releases the socket's slot
        await self.accept()
        self.counted = True
        metrics.websocket_opened()

    async def join_groups(self, user: Any) -> None:
        from inference.worker import ensure_local_services

        ensure_local_services(self.channel_layer)
        self.api_key = self.scope.get("api_key")  # set when a program connected with a key
        self.groups_joined: OrderedDict[str, None] = OrderedDict()
        self.reconciler = streams.Reconciler()
        await self.channel_layer.group_add(streams.user_group(user.pk), self.channel_name)
        if self.api_key is not None:  # revoking the key closes this socket at once
            await self.channel_layer.group_add(key_group(self.api_key.pk), self.channel_name)

    async def disconnect(self, code: int) -> None:
        if getattr(self, "counted", False):  # only sockets that were accepted
            self.counted = False
            metrics.websocket_closed()
        if not hasattr(self, "user"):
            return
        await socket_limits.socket_release(user_id=self.user.pk)
        await self.channel_layer.group_discard(streams.user_group(self.user.pk), self.channel_name)
        if self.api_key is not None:
            await self.channel_layer.group_discard(key_group(self.api_key.pk), self.channel_name)
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def join(self, conversation: str) -> None:
        group = streams.conversation_group(conversation)
        if group in self.groups_joined:
            self.groups_joined.move_to_end(group)
            return
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined[group] = None
        while len(self.groups_joined) > MAX_SUBSCRIPTIONS:
            oldest, _ = self.groups_joined.popitem(last=False)
            await self.channel_layer.group_discard(oldest, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        global _in_hand
        _in_hand += 1
        try:
            await self._receive(text_data)
        finally:
            _in_hand -= 1

    async def _receive(self, text_data: str | None) -> None:
        logs.request_id.set(logs.new_request_id())  # one id per frame, carried into its job
        client_id = None
        if self.api_key is not None and not await key_still_active(self.api_key.pk):
            await self.close(code=CLOSE_KEY_REVOKED)  # a frame that raced the revocation
            return
        try:
            frame = parse_frame(
                text_data,
                max_chars=settings.STELLARCHAT_MAX_MESSAGE_CHARS,
                max_new_tokens_limit=settings.STELLARCHAT_MAX_NEW_TOKENS,
            )
            client_id = frame.client_id
            if frame.type == "chat.subscribe":
                frames = await actions.subscribe(
                    self.user,
                    frame,
                    layer=self.channel_layer,
                    join=self.join,
                    reconciler=self.reconciler,
                )
            else:
                frames = await actions.HANDLERS[frame.type](
                    self.user, frame, layer=self.channel_layer, join=self.join, api_key=self.api_key
                )
        except ProtocolError as exc:
            frames = [exc.frame()]
        except Exception as exc:
            if is_broker_outage(exc):  # Redis away: say so; the socket recovers with it
                logger.warning("chat frame failed: channel layer unreachable: %s", exc)
                frames = [
                    error_frame(
                        "inference_unavailable",
                        "the server's message broker is unreachable; try again in a moment",
                        client_id=client_id,
                    )
                ]
            else:
                logger.exception("chat frame failed")
                frames = [
                    error_frame("internal", "something went wrong; try again", client_id=client_id)
                ]
        for out in frames:
            await self.send_json(out)

    # --- group events: relayed to the client, deltas reconciled per socket ---------------

    async def stream_start(self, event: dict[str, Any]) -> None:
        if self.reconciler.start(event["message"]):
            await self.send_json(event)

    async def stream_delta(self, event: dict[str, Any]) -> None:
        msg, offset = event["message"], event["offset"]
        if msg not in self.reconciler.sent:
            return  # a reply this socket never started following
        if self.reconciler.has_gap(msg, offset):  # fill from the shared state first
            text = await streams.get_text(msg) or ""
            start = self.reconciler.sent[msg]
            gap = self.reconciler.snapshot(msg, text[:offset])
            if gap:
                await self.send_json(streams.delta_frame(event["conversation"], msg, start, gap))
        part = self.reconciler.delta(msg, offset, event["delta"])
        if part is not None and part[1]:
            await self.send(text_data=streams.delta_json(event["conversation"], msg, *part))

    async def stream_end(self, event: dict[str, Any]) -> None:
        # channels-redis hands one dict to every socket of this process in the group: read it,
        # never change it (popping "length" here left the other sockets without it, so a
        # socket that had missed deltas ended without the saved tail).
        msg, length = event["message"], event.get("length")
        sent = self.reconciler.sent.get(msg)
        if sent is not None and length is not None and sent < length:
            text = await database_sync_to_async(selectors.message_content)(message_id=msg)
            await self.send_json(streams.delta_frame(event["conversation"], msg, sent, text[sent:]))
        self.reconciler.end(msg)
        await self.send_json({k: v for k, v in event.items() if k != "length"})

    async def apikey_revoked(self, event: dict[str, Any]) -> None:
        await self.close(code=CLOSE_KEY_REVOKED)

    async def account_deleted(self, event: dict[str, Any]) -> None:  # portability.account
        await self.close(code=CLOSE_ACCOUNT_DELETED)

    async def relay(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    message_saved = relay
    conversation_created = relay
    conversation_updated = relay
    vote_saved = relay
    error = relay

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return streams.frame_text(content)
