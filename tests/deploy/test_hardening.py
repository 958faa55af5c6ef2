"""Production hardening: deploy checks, security headers, request ids, logs, error pages."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from typing import Any

import pytest
from django.test import Client, RequestFactory

from stellarchat import errors
from stellarchat.logs import RequestIdFilter
from tests.e2e.livedaphne import BASE, clean_env

SECRET = "hardening-secret-0123456789-abcdefghijklmnopqrstuvwxyz-0123"


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_deploy_checks_are_clean_with_production_variables(tmp_path: Any) -> None:
    proc = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=SECRET,
        DJANGO_ALLOWED_HOSTS="chat.example.com",
        STELLARCHAT_DATA_DIR=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no issues" in proc.stdout


def test_deploy_checks_catch_a_debug_deployment(tmp_path: Any) -> None:
    proc = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_DEBUG="1",
        DJANGO_SECRET_KEY=SECRET,
        STELLARCHAT_DATA_DIR=str(tmp_path),
    )
    assert proc.returncode != 0 and "DEBUG" in proc.stderr


@pytest.mark.django_db
def test_security_headers(owner_client: Client, settings: Any) -> None:
    settings.SECURE_HSTS_SECONDS = 31_536_000
    response = owner_client.get("/", secure=True)
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("abc-123.X_y", True),
        ("a" * 65, False),
        ("bad id", False),
        ("x\r\nSet-Cookie: a=b", False),
        ("", False),
    ],
)
def test_request_ids_are_echoed_only_when_sane(anon_client: Client, sent: str, kept: bool) -> None:
    response = anon_client.get("/healthz", HTTP_X_REQUEST_ID=sent)
    echoed = response["X-Request-ID"]
    assert (echoed == sent) is kept
    assert echoed and "\n" not in echoed and len(echoed) <= 64


def test_json_logs_carry_the_request_id(tmp_path: Any) -> None:
    code = (
        "import logging; from stellarchat import logs; logs.request_id.set('req-42');"
        "logging.getLogger('stellarchat.test').warning('hello %s', 'world')"
    )
    proc = manage(
        "shell",
        "-v",
        "0",
        "-c",
        code,
        DJANGO_DEBUG="1",
        DJANGO_LOG_FORMAT="json",
        STELLARCHAT_DATA_DIR=str(tmp_path),
    )
    line = json.loads(proc.stderr.strip().splitlines()[-1])
    assert line["message"] == "hello world" and line["request_id"] == "req-42"
    assert line["level"] == "WARNING" and line["logger"] == "stellarchat.test"


def test_a_bad_log_format_is_refused(tmp_path: Any) -> None:
    proc = manage(
        "check", DJANGO_DEBUG="1", DJANGO_LOG_FORMAT="xml", STELLARCHAT_DATA_DIR=str(tmp_path)
    )
    assert proc.returncode != 0 and "DJANGO_LOG_FORMAT" in proc.stderr


class Grab(logging.Handler):
    """Collects every record (caplog does not see records emitted by the embedded worker)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.addFilter(RequestIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_message_text_never_reaches_the_logs(settings: Any) -> None:
    from channels.db import database_sync_to_async
    from channels.layers import get_channel_layer

    import stellarchat.asgi  # noqa: F401 - its django.setup() re-applies LOGGING: do it first
    from tests import factories
    from tests.chat.wsclient import connect

    settings.STELLARCHAT_BACKEND = "test"
    await get_channel_layer().flush()
    secret = "my-secret-diary-entry-7f3a"
    grab, root = Grab(), logging.getLogger()
    root.addHandler(grab)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        sock = await connect(await database_sync_to_async(factories.make_user)("diarist"))
        await sock.send({"type": "chat.send", "conversation": None, "content": secret})
        await sock.until("stream.end")
        await sock.send({"type": "chat.send", "conversation": None, "content": secret + "[[fail]]"})
        await sock.until("stream.end")
        await sock.close()
    finally:
        root.removeHandler(grab)
        root.setLevel(old_level)
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in grab.records)
    assert "reply" in logged  # the replies were logged...
    assert secret not in logged  # ...without what anyone wrote
    ids = {r.request_id for r in grab.records if "reply" in r.getMessage()}  # type: ignore[attr-defined]
    assert len(ids) == 2 and "-" not in ids  # each line carries its frame's request id


@pytest.mark.django_db
def test_themed_html_errors_for_people(owner_client: Client) -> None:
    response = owner_client.get("/no/such/page/")
    assert response.status_code == 404
    assert "StellarChat" in response.content.decode() and "<html" in response.content.decode()
    page = errors.server_error(RequestFactory().get("/c/x/"))
    assert page.status_code == 500 and "Something went wrong" in page.content.decode()


@pytest.mark.django_db
def test_one_json_shape_for_programs(anon_client: Client) -> None:
    response = anon_client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json() == {  # OpenAI's error shape, like every /v1 error
        "error": {
            "message": "no such resource",
            "type": "invalid_request_error",
            "param": None,
            "code": "not_found",
        }
    }
    response = anon_client.get("/nope", HTTP_ACCEPT="application/json")
    assert response.json()["error"]["code"] == "not_found"
    failure = errors.server_error(RequestFactory().get("/v1/chat/completions"))
    assert failure.status_code == 500 and json.loads(failure.content)["error"]["code"] == "internal"
