"""Staff see imports (who, which file, how far, why skipped or failed), read-only: a job is
the queue's business, and deleting one here would orphan its worker's progress."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from portability.import_selectors import import_job_summary
from portability.models import ImportJob


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = ("filename", "owner", "format", "status", "total", "done", "created_at")
    list_filter = ("status", "format")
    search_fields = ("filename", "owner__username")
    list_select_related = ("owner",)
    ordering = ("-created_at",)
    list_per_page = 50
    readonly_fields = ("summary",)
    exclude = ("reasons",)

    @admin.display(description="summary")
    def summary(self, job: ImportJob) -> str:
        return import_job_summary(job)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
