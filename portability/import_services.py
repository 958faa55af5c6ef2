"""Writes of the import: a job and its items from a prepared file, then each conversation in a
transaction of its own, and the job's progress and end.

The conversations are chat's rows, written here directly rather than through chat's
services: those append a turn at a time at the conversation's end, with "now" for every
time, while an import writes a whole history at once with its own positions and times.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    transaction,
)
from django.db.models import F, Model, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext_lazy as _

from chat.models import Conversation, Message, Vote
from portability.importers import Prepared, unpack
from portability.importers.common import SKIP_ALREADY, SKIP_EMPTY, SKIP_TOO_LONG
from portability.models import ImportItem, ImportJob

logger = logging.getLogger(__name__)

BATCH = 200  # items inserted per statement at upload
MAX_REASONS = 50  # skipped conversations named by title on the job (all are counted)
SKIP_ERROR = "error"

# What each skip code says to the person (in their language, when the page is shown).
REASONS = {
    SKIP_ALREADY: _("already imported"),
    SKIP_EMPTY: _("nothing to import in it"),
    SKIP_TOO_LONG: _("more messages than one conversation may hold"),
    SKIP_ERROR: _("could not be written"),
}


def import_job_create(*, owner: Any, prepared: Prepared) -> ImportJob:
    """The job, its items and its task, in one transaction: either the whole file waits in
    the queue or nothing of it was saved. A file with nothing left to write (every
    conversation skipped) ends at once."""
    from portability.tasks import import_conversations

    skips = prepared.skips
    with transaction.atomic():
        job = ImportJob.objects.create(
            owner=owner,
            format=prepared.format,
            filename=prepared.filename[:255],
            total=prepared.total,
        )
        for code, title in skips:
            _note_skip(job, code, title)
        batch: list[ImportItem] = []
        for index, data in prepared.items():
            batch.append(ImportItem(job=job, index=index, data=data))
            if len(batch) >= BATCH:
                ImportItem.objects.bulk_create(batch)
                batch.clear()
        ImportItem.objects.bulk_create(batch)
        if prepared.count:
            job.task_id = str(import_conversations.enqueue(job.pk).id)
        else:
            job.status = ImportJob.Status.DONE
            job.finished_at = timezone.now()
        job.save()
    return job


def _note_skip(job: ImportJob, code: str, title: str) -> None:
    job.skipped += 1
    job.done += 1
    job.skip_counts[code] = job.skip_counts.get(code, 0) + 1
    if len(job.reasons) < MAX_REASONS:
        job.reasons.append({"code": code, "title": title})


def import_job_start(*, job_id: int) -> bool:
    """The job is being worked on (again); False if there is nothing left to do for it."""
    updated = ImportJob.objects.filter(
        pk=job_id, status__in=[ImportJob.Status.QUEUED, ImportJob.Status.RUNNING]
    ).update(status=ImportJob.Status.RUNNING, updated_at=timezone.now())
    return bool(updated)


def import_item_write(*, job_id: int, item_id: int) -> str | None:
    """Write one waiting conversation, all or nothing, and count it on the job in the same
    transaction. Returns "imported", a skip code, or None when the item was already taken
    (another worker running the same job after a restart)."""
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(pk=job_id)
        item = ImportItem.objects.filter(pk=item_id, job_id=job_id).first()
        if item is None:
            return None
        data = unpack(bytes(item.data))
        outcome = "imported"
        if _already_there(job.owner_id, data):
            outcome = SKIP_ALREADY
        else:
            try:
                with transaction.atomic():  # a savepoint: the item and the count still go
                    _write(job.owner_id, data)
            except IntegrityError:  # the same conversation imported at this very moment
                outcome = SKIP_ALREADY
            except (OperationalError, InterfaceError):
                raise  # the database itself: the job waits to be resumed
            except (DatabaseError, ValueError, KeyError, TypeError):
                logger.exception("import job %s: item %s could not be written", job_id, item_id)
                outcome = SKIP_ERROR
        item.delete()
        if outcome == "imported":
            job.imported += 1
            job.done += 1
        else:
            _note_skip(job, outcome, data.get("title", ""))
        job.save(
            update_fields=[
                "imported",
                "done",
                "skipped",
                "skip_counts",
                "reasons",
                "updated_at",
            ]
        )
    return outcome


def _already_there(owner_id: int, data: dict[str, Any]) -> bool:
    """Imported before (its source id), or ours and this person's already (its id)."""
    seen = Q(import_source=data["source_id"])
    if data.get("original_id"):
        seen |= Q(pk=data["original_id"])
    return Conversation.objects.filter(seen, owner_id=owner_id).exists()


def _time(value: str | None, default: datetime) -> datetime:
    return (parse_datetime(value) if value else None) or default


def _insert_as_is(model: type[Model], rows: Sequence[Model]) -> None:
    """INSERT ``rows`` with the values they hold, their times included: ``bulk_create``
    would put "now" into the auto_now(_add) fields. This is what it does underneath, with
    the raw flag loaddata uses to keep saved values (Django's ``_insert``: guarded by the
    round-trip tests, which compare every time), in batches the database takes."""
    fields = list(model._meta.concrete_fields)
    size = min(500, connection.ops.bulk_batch_size(fields, rows) or 500)
    for start in range(0, len(rows), size):
        model._base_manager._insert(rows[start : start + size], fields=fields, raw=True)


def _write(owner_id: int, data: dict[str, Any]) -> Conversation:
    """A whole conversation: its row, its messages (new ids; versions and votes pointing at
    them) and its votes, each with the times of the file (or now, where it has none)."""
    now = timezone.now()
    rows = data["messages"]
    ids = {m["key"]: uuid.uuid4() for m in rows}
    groups = {g: uuid.uuid4() for g in {m["group"] for m in rows} if g}
    created = _time(data["created_at"], now)
    conversation = Conversation(
        owner_id=owner_id,
        title=data["title"],
        system_prompt=data["system_prompt"],
        options=data["options"],
        model_name=data["model"],
        pinned=data["pinned"],
        archived=data["archived"],
        source=data["source"],
        retain_text=data["retain_text"],
        import_source=data["source_id"],
        next_position=max(m["position"] for m in rows) + 1,
        created_at=created,
        updated_at=_time(data["updated_at"], created),
    )
    _insert_as_is(Conversation, [conversation])
    messages = [
        Message(
            id=ids[m["key"]],
            conversation=conversation,
            position=m["position"],
            role=m["role"],
            content=m["content"],
            status=m["status"],
            model_name=m["model"],
            feedback=m["feedback"],
            superseded=m["superseded"],
            replaces_id=ids.get(m["replaces"]) if m["replaces"] else None,
            group=groups.get(m["group"]) if m["group"] else None,
            slot=m["slot"],
            blind=m["blind"],
            prompt_tokens=m["prompt_tokens"],
            completion_tokens=m["completion_tokens"],
            ttft_ms=m["ttft_ms"],
            tokens_per_second=m["tokens_per_second"],
            created_at=_time(m["created_at"], created),
        )
        for m in rows
    ]
    _insert_as_is(Message, messages)
    votes = [
        Vote(
            conversation=conversation,
            group=groups[v["group"]],
            voter_id=owner_id,
            outcome=v["outcome"],
            winner_id=ids[v["winner"]] if v["winner"] else None,
            arena=v["arena"],
            created_at=_time(v["created_at"], now),
        )
        for v in data["votes"]
        if v["group"] in groups
    ]
    _insert_as_is(Vote, votes)
    return conversation


def import_job_finish(*, job_id: int) -> None:
    """Every item written: the job is done."""
    ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.RUNNING).update(
        status=ImportJob.Status.DONE, finished_at=timezone.now(), updated_at=timezone.now()
    )


def import_job_fail(*, job_id: int, error: str) -> None:
    """The job cannot go on: it ends failed, saying why. The conversations it wrote stay (each
    one complete); the ones it did not are dropped with its items (importing the file again
    adds exactly those)."""
    with transaction.atomic():
        ImportItem.objects.filter(job_id=job_id).delete()
        ImportJob.objects.filter(pk=job_id).update(
            status=ImportJob.Status.FAILED,
            error=error[:2000],
            finished_at=timezone.now(),
            updated_at=timezone.now(),
        )


def import_job_requeue(
    *, job_id: int, attempt: bool = False, stale_before: Any = None
) -> ImportJob | None:
    """Hand the job to a new task (its worker stopped or vanished); ``attempt`` counts it as
    one more try. None if the job has ended meanwhile, or (``stale_before``) has shown
    progress since then: another worker got to it first."""
    from portability.tasks import import_conversations

    with transaction.atomic():
        job = ImportJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or not job.active:
            return None
        if stale_before is not None and job.updated_at >= stale_before:
            return None
        job.task_id = str(import_conversations.enqueue(job.pk).id)
        job.status = ImportJob.Status.QUEUED
        if attempt:
            job.attempts = F("attempts") + 1
        job.save(update_fields=["task_id", "status", "attempts", "updated_at"])
    job.refresh_from_db(fields=["attempts"])
    return job
