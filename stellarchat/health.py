"""Liveness (/healthz: the process answers) and readiness (/readyz: it can serve a chat)."""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)
PROBE_TIMEOUT = 2.0


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception as exc:
        logger.warning("readiness: database: %s", exc)
        return False
    finally:
        connection.close()


async def _layer_ok() -> bool:
    try:
        layer = get_channel_layer()
        await asyncio.wait_for(
            layer.group_send("stellarchat.readyz", {"type": "readyz.probe"}), PROBE_TIMEOUT
        )
        return True
    except Exception as exc:
        logger.warning("readiness: channel layer: %s", exc)
        return False


async def _worker_status() -> dict[str, bool]:
    from inference import heartbeat
    from inference.worker import embedded, ensure_local_services

    if embedded():  # the worker lives in this process: make sure it is started (and warming)
        ensure_local_services(get_channel_layer())
    try:
        return await asyncio.wait_for(heartbeat.status(), PROBE_TIMEOUT)
    except Exception as exc:
        logger.warning("readiness: worker heartbeat: %s", exc)
        return {"worker": False, "model": False}


@require_GET
async def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database, the channel layer and a worker with its model loaded are all
    there; 503 naming what is missing."""
    checks = {
        "database": await sync_to_async(_database_ok, thread_sensitive=False)(),
        "channel_layer": await _layer_ok(),
        **(await _worker_status()),
    }
    missing = [name for name, ok in checks.items() if not ok]
    return JsonResponse(
        {"ready": not missing, "checks": checks, "missing": missing},
        status=503 if missing else 200,
    )
