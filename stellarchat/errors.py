"""Error pages: themed HTML for people, one JSON shape for programs.

JSON endpoints (the API under /v1/, /readyz, /metrics) and clients that ask for JSON get
OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}``, with the matching
status.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

JSON_PREFIXES = ("/v1/", "/readyz", "/metrics")


def wants_json(request: HttpRequest) -> bool:
    accept = request.headers.get("Accept", "")
    return request.path.startswith(JSON_PREFIXES) or (
        "application/json" in accept and "text/html" not in accept
    )


def json_error(code: str, message: str, status: int) -> JsonResponse:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return JsonResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
        status=status,
    )


def bad_request(request: HttpRequest, exception: Any = None) -> HttpResponse:
    if wants_json(request):
        return json_error("bad_request", "the request is malformed", 400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Any = None) -> HttpResponse:
    if wants_json(request):
        return json_error("forbidden", "you may not do this", 403)
    return defaults.permission_denied(request, exception)


def not_found(request: HttpRequest, exception: Any = None) -> HttpResponse:
    if wants_json(request):
        return json_error("not_found", "no such resource", 404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if wants_json(request):
        return json_error("internal", "something went wrong on the server", 500)
    return defaults.server_error(request)
