"""ASGI entry point: HTTP through Django, WebSockets through Channels.

Django's ASGI app is created first so that apps are loaded before routing imports models.
"""

from __future__ import annotations

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stellarchat.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from channels.sessions import CookieMiddleware, SessionMiddleware  # noqa: E402
from django.conf import settings  # noqa: E402

from api.auth import BearerKeyOrSession  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from chat.socket_limits import FullPersonGate, HandshakeThrottle  # noqa: E402
from chat.throttle import address_from  # noqa: E402
from inference.worker import InferenceChannels, InferenceConsumer  # noqa: E402
from stellarchat import wsserver  # noqa: E402
from stellarchat.dbreads import ReadingAuthMiddleware  # noqa: E402

# daphne's WebSocket side: frames per socket, a bound on each socket's unsent data, server
# close codes, HTTP 429 for refused handshakes.
wsserver.install(
    frames_per_second=settings.STELLARCHAT_WS_FRAMES_PER_SECOND,
    frame_burst=settings.STELLARCHAT_WS_FRAME_BURST,
    send_buffer_bytes=settings.STELLARCHAT_WS_SEND_BUFFER_KB * 1024,
    address=address_from,
)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Programs: Authorization: Bearer <API key>. Browsers: Origin check, then session.
        # Too many handshakes from one address: refused before anything is looked up.
        "websocket": HandshakeThrottle(
            BearerKeyOrSession(
                keyed=URLRouter(websocket_urlpatterns),
                # Channels' AuthMiddlewareStack, with a person already at their socket limit
                # refused between reading the cookie and looking the session up.
                session=AllowedHostsOriginValidator(
                    CookieMiddleware(
                        FullPersonGate(
                            SessionMiddleware(
                                ReadingAuthMiddleware(URLRouter(websocket_urlpatterns))
                            )
                        )
                    )
                ),
            )
        ),
        # The inference worker (runworker inference, or embedded in the web process).
        # Each model's jobs come on its own channel (inference/registry.py): one consumer.
        "channel": InferenceChannels(InferenceConsumer.as_asgi()),
    }
)

# Background tasks (imports): embedded (no REDIS_URL), this process runs the task queue's
# worker on a thread of its own, from now until it exits; otherwise `manage.py task_worker`
# does (portability/tasks.py).
from portability.tasks import start_embedded  # noqa: E402

start_embedded()

# Everything imported so far lives as long as the process: out of the collector's sight, so a
# full collection (every few seconds under load) no longer walks Django, Channels and every
# app module: 20-60 ms pauses of the whole event loop, measured, most of a time to first
# token's tail.
gc.freeze()
