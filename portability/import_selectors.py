"""Reads of the import pages: a person's jobs (never anyone else's) and what a job says."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils.translation import gettext, ngettext

from portability.import_services import REASONS
from portability.models import ImportJob

RECENT = 20


def import_job_get(*, user: Any, job_id: int) -> ImportJob | None:
    return ImportJob.objects.filter(owner=user, pk=job_id).first()


def import_job_list(*, user: Any) -> QuerySet[ImportJob]:
    return ImportJob.objects.filter(owner=user).order_by("-created_at")[:RECENT]


def reason_text(code: str) -> str:
    return str(REASONS.get(code, code))


def import_job_summary(job: ImportJob) -> str:
    """ "imported 120 conversations; 3 skipped: already imported (2), …", in the reader's
    language (the job keeps counts and reason codes, not sentences)."""
    text = ngettext(
        "imported %(count)d conversation", "imported %(count)d conversations", job.imported
    ) % {"count": job.imported}
    if job.skipped:
        why = ", ".join(
            f"{reason_text(code)} ({count})" if len(job.skip_counts) > 1 else reason_text(code)
            for code, count in sorted(job.skip_counts.items(), key=lambda kv: -kv[1])
        )
        text += "; " + ngettext(
            "%(count)d skipped: %(why)s", "%(count)d skipped: %(why)s", job.skipped
        ) % {"count": job.skipped, "why": why}
    return text


def import_job_view(job: ImportJob) -> dict[str, Any]:
    """What the page shows of a job."""
    return {
        "job": job,
        "summary": import_job_summary(job),
        "skipped_titles": [
            {
                "title": r.get("title") or gettext("Untitled conversation"),
                "why": reason_text(r["code"]),
            }
            for r in job.reasons
        ],
        "more_skipped": max(0, job.skipped - len(job.reasons)),
    }
