"""Imports: one ``ImportJob`` per uploaded file, and its conversations waiting to be written.

The upload is checked whole and turned into ``ImportItem`` rows (one normalized conversation
each) before anything is written to the person's conversations; the task queue then writes
them one transaction at a time, deleting each item as its conversation lands. What is left
of a job's items is exactly what is left to do, whatever stopped the worker.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class ImportJob(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", _("waiting")
        RUNNING = "running", _("importing")
        DONE = "done", _("done")
        FAILED = "failed", _("failed")

    class Format(models.TextChoices):
        CHATGPT = "chatgpt", "ChatGPT"
        OPENWEBUI = "openwebui", "Open WebUI"
        STELLARCHAT = "stellarchat", "StellarChat"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="import_jobs"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    format = models.CharField(_("format"), max_length=16, choices=Format.choices)
    filename = models.CharField(_("file"), max_length=255)
    # Conversations in the file; of them, done = imported + skipped so far.
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    imported = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    # Why conversations were skipped: how many for each reason ({"already_imported": 3}), and
    # the first few of them by title ([{"code": ..., "title": ...}], bounded: see
    # portability/import_services.py). Codes, not sentences: shown in the reader's language.
    skip_counts = models.JSONField(default=dict, blank=True)
    reasons = models.JSONField(default=list, blank=True)
    # Why the job failed, when it did (shown as is; the conversations it wrote stay).
    error = models.TextField(blank=True)
    # The queue's task now in charge of the job (django_tasks_db's DBTaskResult id), and how
    # many times the job was handed to a new task after its worker stopped.
    task_id = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(_("uploaded"), auto_now_add=True)
    # Touched with every conversation written: a running job that stays silent has lost its
    # worker (portability/tasks.py: resume_stalled).
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="importjob_owner_idx"),
            models.Index(fields=["status", "updated_at"], name="importjob_status_idx"),
        ]

    def __str__(self) -> str:
        return f"import of {self.filename} ({self.status})"

    @property
    def active(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)

    @property
    def percent(self) -> int:
        return 100 if not self.total else min(100, self.done * 100 // self.total)


class ImportItem(models.Model):
    """One conversation of an uploaded file, normalized (portability/importers/common.py),
    waiting to be written. Deleted in the transaction that writes its conversation."""

    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="items")
    index = models.PositiveIntegerField()  # its order among the conversations to write
    # Compact JSON, zlib-compressed (a fifth of the size to write and keep meanwhile), read
    # back one item at a time, never the whole file at once.
    data = models.BinaryField()

    class Meta:
        ordering = ["job", "index"]
        constraints = [
            models.UniqueConstraint(fields=["job", "index"], name="importitem_job_index_uniq"),
        ]

    def __str__(self) -> str:
        return f"item {self.index} of job {self.job_id}"
