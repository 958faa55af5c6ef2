"""The import through the real task queue (django-tasks' database backend) and its worker:
queued by the upload, run by the worker loop, progress on the page; a worker stopped in the
middle (SIGTERM) or killed (SIGKILL) and started again: the import finishes, with no
duplicate and no half conversation; one that keeps dying fails clearly; the embedded worker
thread; isolation of jobs between people."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Count
from django.test import Client
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from chat.models import Conversation, Message
from portability import import_services, tasks
from portability.models import ImportItem, ImportJob
from tests import services
from tests.e2e import livedaphne
from tests.portability import support

QUEUED = pytest.mark.django_db(transaction=True)


@QUEUED
def test_an_upload_goes_through_the_database_queue(owner: Any, owner_client: Client) -> None:
    response = support.upload(owner_client, "c.json", support.fixture("openwebui_chats.json"))
    job = support.latest_job(owner)
    assert response.status_code == 302 and job.status == "queued"
    task = DBTaskResult.objects.get(pk=job.task_id)
    assert (task.status, task.task_path) == ("READY", "portability.tasks.import_conversations")
    assert task.args_kwargs == {"args": [job.pk], "kwargs": {}}

    waiting = owner_client.get(f"{support.PAGE}{job.pk}/", headers={"HX-Request": "true"})
    body = waiting.content.decode()
    assert 'hx-trigger="every 1s"' in body and "2 conversations checked and waiting" in body
    assert "<html" not in body  # just the fragment

    support.drain_queue()

    job.refresh_from_db()
    assert (job.status, job.imported, job.done, job.total) == ("done", 2, 2, 2)
    assert DBTaskResult.objects.get(pk=job.task_id).status == "SUCCESSFUL"
    done = owner_client.get(f"{support.PAGE}{job.pk}/", headers={"HX-Request": "true"})
    body = done.content.decode()
    assert "hx-trigger" not in body  # polling stops with the job
    assert "Finished:</strong> imported 2 conversations." in body
    assert "HX-Request" in done["Vary"]


@QUEUED
def test_progress_shows_while_the_task_runs(owner: Any, owner_client: Client) -> None:
    support.upload(owner_client, "c.json", big_export(owner, conversations=6, messages=4))
    job = support.latest_job(owner)
    seen: list[str] = []
    write = import_services.import_item_write

    def watched(**kwargs: Any) -> Any:
        outcome = write(**kwargs)
        page = owner_client.get(f"{support.PAGE}{job.pk}/", headers={"HX-Request": "true"})
        seen.append(" ".join(page.content.decode().split()))
        return outcome

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(import_services, "import_item_write", watched)
        support.drain_queue()
    assert [s.count('hx-trigger="every 1s"') for s in seen] == [1] * 6
    assert [f"{n} of 6 conversations…" in s for n, s in enumerate(seen, 1)] == [True] * 6
    assert '<progress class="import-progress" max="6" value="3"' in seen[2]


@pytest.mark.django_db
def test_someone_elses_import_is_not_found(
    owner: Any, owner_client: Client, other_client: Client
) -> None:
    job = support.import_file(
        owner_client, owner, "secret-chats.json", support.fixture("openwebui_chats.json")
    )
    for headers in ({}, {"HX-Request": "true"}):
        assert other_client.get(f"{support.PAGE}{job.pk}/", headers=headers).status_code == 404
    assert "secret-chats.json" not in other_client.get(support.PAGE).content.decode()
    assert "secret-chats.json" in owner_client.get(support.PAGE).content.decode()
    assert Client().get(f"{support.PAGE}{job.pk}/").status_code == 302  # to the login


@QUEUED
def test_a_worker_told_to_stop_hands_the_job_to_the_next(owner: Any, owner_client: Client) -> None:
    support.upload(owner_client, "c.json", big_export(owner, conversations=8, messages=3))
    job = support.latest_job(owner)
    first_task = job.task_id
    write = import_services.import_item_write
    stop = threading.Event()
    written: list[Any] = []

    def then_stop(**kwargs: Any) -> Any:
        written.append(write(**kwargs))
        if len(written) == 3:
            tasks.request_stop(stop)  # what SIGTERM (or the web process ending) does
        return written[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(import_services, "import_item_write", then_stop)
        tasks.work(stop=stop, name="stopping-worker")
    job.refresh_from_db()
    assert (job.status, job.done, job.attempts) == ("queued", 3, 0)
    assert job.task_id != first_task
    assert DBTaskResult.objects.get(pk=job.task_id).status == "READY"
    assert ImportItem.objects.filter(job=job).count() == 5
    assert_whole(owner, messages=3)

    support.drain_queue()  # the next start
    job.refresh_from_db()
    assert (job.status, job.imported, job.skipped) == ("done", 8, 0)
    assert_whole(owner, messages=3, count=8)


def assert_whole(owner: Any, *, messages: int, count: int | None = None) -> None:
    """Every imported conversation complete, none twice."""
    mine = Conversation.objects.filter(owner=owner)
    sizes = set(mine.annotate(n=Count("messages")).values_list("n", flat=True))
    assert sizes <= {messages}, sizes
    assert mine.values("import_source").distinct().count() == mine.count()
    if count is not None:
        assert mine.count() == count


def big_export(owner: Any, *, conversations: int, messages: int) -> bytes:
    """Our export format with ``conversations`` of ``messages`` each (made up, not read)."""
    base = timezone.now() - timedelta(days=30)

    def message(position: int, at: Any) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "position": position,
            "role": "user" if position % 2 == 0 else "assistant",
            "content": f"message {position}: " + "lorem ipsum dolor sit amet " * 3,
            "status": "complete",
            "created_at": at.isoformat(),
            "model": "" if position % 2 == 0 else "stellarbyte-mini",
            "feedback": 0,
            "superseded": False,
            "replaces": None,
            "group": None,
            "slot": None,
            "prompt_tokens": None,
            "completion_tokens": None,
            "ttft_ms": None,
            "tokens_per_second": None,
        }

    items = []
    for c in range(conversations):
        start = base + timedelta(minutes=c)
        items.append(
            {
                "id": str(uuid.uuid4()),
                "title": f"Conversation {c}",
                "created_at": start.isoformat(),
                "updated_at": start.isoformat(),
                "model": "stellarbyte-mini",
                "system_prompt": "",
                "options": {},
                "pinned": False,
                "archived": False,
                "source": "chat",
                "messages": [message(i, start + timedelta(seconds=i)) for i in range(messages)],
                "votes": [],
            }
        )
    document = {
        "format": "stellarchat-export",
        "version": 1,
        "exported_at": timezone.now().isoformat(),
        "user": {"username": "someone"},
        "conversations": items,
    }
    return json.dumps(document).encode()


@pytest.mark.django_db
def test_a_job_whose_task_waits_in_the_queue_is_not_stalled(
    owner: Any, owner_client: Client
) -> None:
    support.upload(owner_client, "c.json", support.fixture("openwebui_chats.json"))
    job = support.latest_job(owner)
    ImportJob.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    assert tasks.resume_stalled() == 0
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("queued", 0)


@pytest.mark.django_db
def test_a_job_that_keeps_losing_its_worker_ends_failed_and_says_so(
    owner: Any, owner_client: Client
) -> None:
    support.upload(owner_client, "c.json", support.fixture("openwebui_chats.json"))
    job = support.latest_job(owner)
    item = ImportItem.objects.filter(job=job).order_by("index").first()
    import_services.import_item_write(job_id=job.pk, item_id=item.pk)  # one written, then...
    DBTaskResult.objects.filter(pk=job.task_id).update(status="RUNNING")  # ...its worker died
    old = timezone.now() - timedelta(seconds=tasks.STALL_SECONDS + 1)

    for attempt in range(1, tasks.MAX_ATTEMPTS + 1):
        ImportJob.objects.filter(pk=job.pk).update(status="running", updated_at=old)
        assert tasks.resume_stalled() == 1
        job.refresh_from_db()
        assert (job.status, job.attempts) == ("queued", attempt)
        DBTaskResult.objects.filter(pk=job.task_id).update(status="RUNNING")
    ImportJob.objects.filter(pk=job.pk).update(status="running", updated_at=old)
    assert tasks.resume_stalled() == 0

    job.refresh_from_db()
    assert job.status == "failed" and job.finished_at is not None
    assert job.error == "The import stopped 4 times without finishing."
    assert not ImportItem.objects.filter(job=job).exists()
    assert Conversation.objects.filter(owner=owner).count() == 1  # what it wrote stays, whole
    lost = DBTaskResult.objects.filter(exception_class_path="portability.tasks.WorkerLost")
    assert lost.count() == tasks.MAX_ATTEMPTS + 1
    page = " ".join(owner_client.get(f"{support.PAGE}{job.pk}/").content.decode().split())
    assert "The import stopped:</strong> The import stopped 4 times without finishing." in page
    assert "Before that: imported 1 conversation. Import the same file again" in page


@pytest.mark.django_db
def test_a_conversation_that_cannot_be_written_is_skipped_not_fatal(
    owner: Any, owner_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    support.upload(owner_client, "c.json", support.fixture("openwebui_chats.json"))
    job = support.latest_job(owner)
    real = import_services._write

    def broken(owner_id: int, data: dict[str, Any]) -> Any:
        if data["title"] == "Haiku":
            raise ValueError("a bug")
        return real(owner_id, data)

    monkeypatch.setattr(import_services, "_write", broken)
    job = support.run_job(job)
    assert (job.status, job.imported, job.skip_counts) == ("done", 1, {"error": 1})
    assert not Conversation.objects.filter(title="Haiku").exists()


@QUEUED
def test_the_embedded_worker_thread_runs_imports_and_stops_cleanly(
    owner: Any, owner_client: Client, settings: Any
) -> None:
    settings.STELLARCHAT_EMBEDDED_TASKS = True
    assert tasks.start_embedded()
    try:
        assert not tasks.start_embedded()  # once per process
        thread = next(t for t in threading.enumerate() if t.name == "stellarchat-tasks")
        support.upload(owner_client, "c.json", support.fixture("openwebui_chats.json"))
        job = support.latest_job(owner)
        deadline = time.monotonic() + 30
        while job.status != "done" and time.monotonic() < deadline:
            time.sleep(0.1)
            job.refresh_from_db()
        assert job.status == "done" and job.imported == 2
    finally:
        tasks.stop_embedded()
    assert not thread.is_alive()


@QUEUED
def test_the_task_worker_command_runs_the_queue(owner: Any, owner_client: Client) -> None:
    support.upload(owner_client, "c.json", support.fixture("chatgpt_conversations.json"))
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        call_command("task_worker", "--until-idle", "--interval", "0")
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    job = support.latest_job(owner)
    assert (job.status, job.imported, job.skipped) == ("done", 2, 1)


# --- a real worker process, stopped and killed in the middle -------------------------------


@contextmanager
def worker_process(*extra: str) -> Iterator[livedaphne.Service]:
    """``manage.py task_worker`` as production runs it, on this test's database."""
    db = connection.settings_dict
    url = services.POSTGRES_URL.rsplit("/", 1)[0] + f"/{db['NAME']}"
    env = {"DATABASE_URL": url, "DJANGO_SECRET_KEY": "w" * 50, "DJANGO_SECURE_SSL_REDIRECT": "0"}
    args = [sys.executable, "manage.py", "task_worker", "--interval", "0.2", *extra]
    with livedaphne.service("task_worker", args, env) as svc:
        livedaphne.wait_log(svc, "running the queue's tasks")
        yield svc


def wait_for(check: Any, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def progress(job: ImportJob) -> ImportJob:
    job.refresh_from_db()
    return job


MESSAGES = 150


def start_big_import(owner_client: Client, owner: Any) -> ImportJob:
    data = big_export(owner, conversations=80, messages=MESSAGES)
    assert support.upload(owner_client, "big.json", data).status_code == 302
    return support.latest_job(owner)


@pytest.mark.slow
@QUEUED
def test_a_killed_worker_s_import_is_resumed_and_finishes(owner: Any, owner_client: Client) -> None:
    services.require("PostgreSQL", connection.vendor == "postgresql")
    job = start_big_import(owner_client, owner)
    stall = ("--stall-seconds", "1", "--sweep-seconds", "0.5")
    with worker_process(*stall) as first:
        wait_for(lambda: progress(job).done >= 10)
        first.stop(signal.SIGKILL)  # no goodbye: mid-conversation, most likely
    job = progress(job)
    assert job.status == "running" and 10 <= job.done < job.total
    assert ImportItem.objects.filter(job=job).count() == job.total - job.done
    assert Conversation.objects.filter(owner=owner).count() == job.imported
    assert_whole(owner, messages=MESSAGES)  # no half conversation
    killed_task = job.task_id

    with worker_process(*stall) as second:
        wait_for(lambda: progress(job).status == "done")
        second.stop(signal.SIGTERM)
        assert second.proc.returncode == 0
        assert "had lost its worker: queued again" in second.output()
    job = progress(job)
    assert (job.imported, job.skipped, job.attempts) == (80, 0, 1)
    assert_whole(owner, messages=MESSAGES, count=80)
    assert Message.objects.filter(conversation__owner=owner).count() == 80 * MESSAGES
    lost = DBTaskResult.objects.get(pk=killed_task)
    assert (lost.status, lost.exception_class_path) == ("FAILED", "portability.tasks.WorkerLost")


@pytest.mark.slow
@QUEUED
def test_a_worker_stopped_with_sigterm_hands_over_and_the_next_finishes(
    owner: Any, owner_client: Client
) -> None:
    services.require("PostgreSQL", connection.vendor == "postgresql")
    job = start_big_import(owner_client, owner)
    with worker_process() as first:
        wait_for(lambda: progress(job).done >= 10)
        first.stop(signal.SIGTERM)
        assert first.proc.returncode == 0
        assert "stopping after the conversation in hand" in first.output()
    job = progress(job)
    assert job.status == "queued" and job.done < job.total  # handed over, not stalled
    assert_whole(owner, messages=MESSAGES)

    with worker_process():  # default stall time: it needs none
        wait_for(lambda: progress(job).status == "done", timeout=60)
    job = progress(job)
    assert (job.imported, job.attempts) == (80, 0)
    assert_whole(owner, messages=MESSAGES, count=80)
