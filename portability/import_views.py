"""Settings → Import (/settings/import/): upload a file, watch its job, see past ones.

The upload is the one heavy request of the app: checking and normalizing a large export
takes seconds of CPU. It runs on a thread of its own (``thread_sensitive=False``), never on
the thread every other synchronous view and database call of the process shares; only the
short database writes go back there. The size limit is set before the form is read: CSRF is
checked by hand after it (Django's pattern for per-view upload handlers).
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from portability import import_selectors, import_services, importers
from portability.import_forms import ImportForm, SizeLimit
from portability.models import ImportJob

PAGE = "portability/import.html"
_csrf = CsrfViewMiddleware(lambda request: HttpResponse())


def _get_job_for_user(request: HttpRequest, job_id: int) -> ImportJob:
    """404 for anything not the caller's: never confirm that someone else's job exists."""
    job = import_selectors.import_job_get(user=request.user, job_id=job_id)
    if job is None:
        raise Http404("No such import")
    return job


def _render(
    request: HttpRequest,
    *,
    form: ImportForm | None = None,
    job: ImportJob | None = None,
    status: int = 200,
) -> HttpResponse:
    jobs = import_selectors.import_job_list(user=request.user)
    context: dict[str, Any] = {
        "form": form or ImportForm(),
        "limit_mb": importers.upload_limit() // 1_000_000,
        "jobs": [import_selectors.import_job_view(j) for j in jobs],
        "current": import_selectors.import_job_view(job) if job else None,
    }
    return render(request, PAGE, context, status=status)


@never_cache
@csrf_exempt  # checked in _receive, once the upload's size limit is in place
@login_required
@require_http_methods(["GET", "POST"])
async def import_page(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return await sync_to_async(_render)(request)
    received = await sync_to_async(_receive)(request)
    if isinstance(received, HttpResponse):
        return received
    form = received
    upload = form.cleaned_data["file"]
    try:
        prepared = await sync_to_async(importers.prepare, thread_sensitive=False)(
            upload, filename=upload.name or "upload"
        )
    except importers.ImportRefused as refused:
        form.add_error("file", refused.message)
        return await sync_to_async(_render)(request, form=form, status=400)
    try:
        job = await sync_to_async(import_services.import_job_create)(
            owner=request.user, prepared=prepared
        )
    finally:
        prepared.close()
    return redirect("import_job", job.pk)


def _receive(request: HttpRequest) -> HttpResponse | ImportForm:
    """The upload read under its size limit and the CSRF check; the valid form, or the
    answer to send instead."""
    limit = SizeLimit(request, limit=importers.upload_limit())
    request.upload_handlers.insert(0, limit)
    refused = _csrf.process_view(request, None, (), {})
    if refused is not None:
        return refused
    form = ImportForm(request.POST, request.FILES, too_big=limit.too_big)
    if not form.is_valid():
        return _render(request, form=form, status=400)
    return form


@never_cache
@login_required
@require_GET
def import_job(request: HttpRequest, job_id: int) -> HttpResponse:
    """A job's page; for htmx (polling while it runs) just its progress."""
    job = _get_job_for_user(request, job_id)
    if request.htmx:
        context = {"current": import_selectors.import_job_view(job)}
        response = render(request, f"{PAGE}#job", context)
    else:
        response = _render(request, job=job)
    response["Vary"] = "HX-Request"
    return response
