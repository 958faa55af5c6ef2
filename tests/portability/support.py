"""Helpers of the import tests: the fixture files, an upload through the real form, and the
queue run in-process."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from pathlib import Path
from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from chat.models import Conversation
from portability import tasks
from portability.models import ImportJob

FILES = Path(__file__).resolve().parent / "files"
PAGE = "/settings/import/"


def fixture(name: str) -> bytes:
    return (FILES / name).read_bytes()


def fixture_json(name: str) -> Any:
    return json.loads(fixture(name))


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def chatgpt_zip() -> bytes:
    """The ZIP ChatGPT's data export sends: conversations.json beside everything else."""
    return zipped(
        {
            "chat.html": b"<html><body>the same conversations, for reading</body></html>",
            "user.json": b'{"id": "user-abc", "email": "ana@example.com"}',
            "message_feedback.json": b"[]",
            "file-7Hc2kQ9xLm-square.png": b"\x89PNG\r\n\x1a\n" + bytes(2000),
            "dalle-generations/file-0001.webp": bytes(3000),
            "conversations.json": fixture("chatgpt_conversations.json"),
        }
    )


def upload(client: Client, name: str, data: bytes, **extra: Any) -> Any:
    """POST the file through the import page's real form."""
    return client.post(PAGE, {"file": SimpleUploadedFile(name, data)}, **extra)


def latest_job(owner: Any) -> ImportJob:
    return ImportJob.objects.filter(owner=owner).latest("created_at")


def run_job(job: ImportJob) -> ImportJob:
    """The job's task, run here and now (what a worker does with it)."""
    tasks.import_conversations.call(job.pk)
    job.refresh_from_db()
    return job


def import_file(client: Client, owner: Any, name: str, data: bytes) -> ImportJob:
    """Upload, check it was accepted, run its task: the finished job."""
    response = upload(client, name, data)
    assert response.status_code == 302, response.content.decode()[-2000:]
    job = latest_job(owner)
    assert response["Location"] == f"{PAGE}{job.pk}/"
    return run_job(job) if job.active else job


def drain_queue(**options: Any) -> None:
    """The real worker loop over the database queue until it is empty (tests that use it
    need ``transaction=True``: the worker commits, as it does in production)."""
    tasks.work(stop=threading.Event(), name="test-worker", until_idle=True, **options)


def thread_of(conversation: Conversation) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in conversation.messages.order_by("position")]


class RouteUpload:
    """A file for the route table's POST (tests/security/routes.py): read as often as the
    table's clients post it."""

    name = "conversations.json"

    def read(self) -> bytes:
        return fixture("openwebui_chats.json")


def owner_import_job(owner: Any) -> ImportJob:
    """An import job of ``owner``, for the route table's ``<int:job_id>``."""
    return ImportJob.objects.create(
        owner=owner, format="chatgpt", filename="conversations.json", status="done"
    )
