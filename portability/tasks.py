"""Background work: the task that writes an import's conversations, and the worker that runs
the queue's tasks (django-tasks with its database backend: a task is a row, so a restart
loses none).

Where the worker runs: production starts ``manage.py task_worker`` (Compose's ``tasks``
service); the embedded default (`make run`, no REDIS_URL) runs the same loop on a thread of
the web process, started once with it (stellarchat/asgi.py) and stopped when it exits.

What a restart does to an import (docs/import.md):

- Every conversation is written in one transaction with the deletion of its item and the
  job's count, so none is ever half there, and what is left of the job is exactly its items.
- A worker asked to stop (SIGTERM, the web process ending) finishes the conversation in hand,
  hands the job to a new task and exits: the next worker finishes it.
- A worker killed outright leaves its job "running" and silent. Every worker looks, every
  SWEEP_SECONDS, for jobs silent for STALL_SECONDS whose task is not waiting in the queue,
  and hands each to a new task; after MAX_ATTEMPTS such restarts the job ends "failed",
  saying so, with the conversations it wrote kept (importing the file again adds the rest).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, OperationalError, close_old_connections, connections
from django.utils import timezone
from django_tasks import task

from portability import import_services
from portability.models import ImportItem, ImportJob

logger = logging.getLogger(__name__)

STALL_SECONDS = 120.0  # a running import silent this long has lost its worker
SWEEP_SECONDS = 30.0  # how often a worker looks for such imports
MAX_ATTEMPTS = 3  # restarts of one import before it is given up
CHUNK = 50  # items fetched at a time (ids only: each item is read in its own transaction)

# Set when this process is stopping: an import task stops between two conversations and
# hands its job to a new task.
stopping = threading.Event()


class WorkerLost(Exception):
    """Recorded on a task whose worker vanished in the middle of it."""


@task()
def import_conversations(job_id: int) -> str:
    """Write the job's waiting conversations, one transaction each, in file order."""
    if not import_services.import_job_start(job_id=job_id):
        return "nothing to do"
    try:
        while True:
            ids = list(
                ImportItem.objects.filter(job_id=job_id)
                .order_by("index")
                .values_list("pk", flat=True)[:CHUNK]
            )
            if not ids:
                break
            for item_id in ids:
                if stopping.is_set():
                    import_services.import_job_requeue(job_id=job_id)
                    return "stopping: handed to the next worker"
                import_services.import_item_write(job_id=job_id, item_id=item_id)
    except DatabaseError:
        raise  # the database is away: the job stays running, to be resumed (see above)
    except Exception as exc:
        logger.exception("import job %s failed", job_id)
        import_services.import_job_fail(job_id=job_id, error=f"{type(exc).__name__}: {exc}")
        return "failed"
    import_services.import_job_finish(job_id=job_id)
    return "done"


def resume_stalled(*, stall_seconds: float = STALL_SECONDS) -> int:
    """Hand every import whose worker vanished to a new task (or give it up); how many."""
    from django_tasks.base import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    cutoff = timezone.now() - timedelta(seconds=stall_seconds)
    resumed = 0
    stalled = ImportJob.objects.filter(
        status__in=[ImportJob.Status.QUEUED, ImportJob.Status.RUNNING], updated_at__lt=cutoff
    )
    for job in stalled.only("pk", "task_id", "attempts"):
        task_row = DBTaskResult.objects.filter(pk=job.task_id).first() if job.task_id else None
        if task_row is not None and task_row.status == TaskResultStatus.READY:
            continue  # waiting its turn in the queue: not stalled
        if task_row is not None and task_row.status == TaskResultStatus.RUNNING:
            task_row.set_failed(WorkerLost("its worker stopped in the middle of it"))
        if job.attempts >= MAX_ATTEMPTS:
            import_services.import_job_fail(
                job_id=job.pk,
                error=f"The import stopped {job.attempts + 1} times without finishing.",
            )
            continue
        if import_services.import_job_requeue(job_id=job.pk, attempt=True, stale_before=cutoff):
            logger.warning("import job %s had lost its worker: queued again", job.pk)
            resumed += 1
    return resumed


def worker_name(suffix: str = "") -> str:
    return f"{socket.gethostname()}-{os.getpid()}{suffix}"[:64]


def work(
    *,
    stop: threading.Event,
    name: str,
    interval: float = 1.0,
    until_idle: bool = False,
    stall_seconds: float = STALL_SECONDS,
    sweep_seconds: float = SWEEP_SECONDS,
) -> None:
    """The worker loop: look for stalled imports every ``sweep_seconds``, run the tasks
    that are ready one by one, wait ``interval`` when there is none, until ``stop`` is set
    (``until_idle``: return once the queue is empty, for tests and one-off runs).

    django-tasks-db's own loop (``db_worker``) claims and runs tasks the same way; it is
    not used whole because it has no room for the sweep and logs every pass in batch mode.
    Its ``Worker.run_task`` runs each task (signals, result, failure recorded)."""
    from django_tasks_db.management.commands.db_worker import Worker

    runner = Worker(
        queue_names=["default"],
        interval=interval,
        batch=False,
        backend_name="default",
        startup_delay=False,
        max_tasks=None,
        worker_id=name,
        excluded_queue_names=[],
    )
    last_sweep = -math.inf
    stopping.clear()
    logger.info("task worker %s: started", name)
    try:
        while not stop.is_set():
            close_old_connections()
            if time.monotonic() - last_sweep >= sweep_seconds:
                last_sweep = time.monotonic()
                try:
                    resume_stalled(stall_seconds=stall_seconds)
                except DatabaseError:
                    logger.exception("looking for stalled imports failed; trying again later")
            try:
                ran = _run_next(runner, name)
            except DatabaseError:
                logger.exception("the task worker lost the database; trying again")
                ran = False
            if not ran:
                if until_idle:
                    return
                stop.wait(interval)
    finally:
        connections.close_all()
        logger.info("task worker %s: stopped", name)


def _run_next(runner: Any, name: str) -> bool:
    """Claim the next ready task (no other worker can take it then) and run it; False if
    there was none."""
    from django_tasks_db.models import DBTaskResult
    from django_tasks_db.utils import exclusive_transaction, is_locked_database_exception

    ready = DBTaskResult.objects.ready().filter(backend_name="default", queue_name="default")
    with exclusive_transaction(ready.db):
        try:
            claimed = ready.get_locked()
            if claimed is not None:
                claimed.claim(name)
        except OperationalError as exc:
            if not is_locked_database_exception(exc):
                raise
            claimed = None  # SQLite busy: next time
    if claimed is None:
        return False
    runner.run_task(claimed)
    return True


def request_stop(stop: threading.Event) -> None:
    """Stop the loop after the task in hand, and an import between two conversations."""
    stopping.set()
    stop.set()


# --- embedded: the web process's own worker thread -------------------------------------------

_embedded: dict[str, Any] = {}
_embedded_lock = threading.Lock()


def start_embedded() -> bool:
    """Start the worker thread of a web process that runs everything itself (no REDIS_URL),
    once; False if it runs already or this process should not run one."""
    if not settings.STELLARCHAT_EMBEDDED_TASKS:
        return False
    with _embedded_lock:
        if _embedded:
            return False
        stop = threading.Event()
        thread = threading.Thread(
            target=work,
            kwargs={"stop": stop, "name": worker_name("-embedded")},
            name="stellarchat-tasks",
            daemon=True,  # never keeps the process alive; stop_embedded ends it cleanly
        )
        _embedded.update(stop=stop, thread=thread)
        thread.start()
    import atexit

    atexit.register(stop_embedded)
    return True


def stop_embedded(timeout: float = 10.0) -> None:
    """The web process is ending: let the worker thread finish what it holds (an import
    stops between two conversations and waits in the queue for the next start)."""
    with _embedded_lock:
        stop, thread = _embedded.get("stop"), _embedded.get("thread")
        _embedded.clear()
    if stop is None or thread is None:
        return
    request_stop(stop)
    thread.join(timeout)
