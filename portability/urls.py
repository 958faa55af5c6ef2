"""Export, import and account deletion URLs (included at the site's root, before chat's)."""

from __future__ import annotations

from django.urls import URLPattern, path

from portability import account_views, export_views, import_views

urlpatterns: list[URLPattern] = []

# --- export and account (export_views, account_views) ---
urlpatterns += [
    path("settings/data/", export_views.data_page, name="my_data"),
    path("settings/data/export.zip", export_views.export_download, name="export_download"),
    path("settings/delete-account/", account_views.delete_account, name="delete_account"),
]

# --- import (import_views) ---
urlpatterns += [
    path("settings/import/", import_views.import_page, name="import_page"),
    path("settings/import/<int:job_id>/", import_views.import_job, name="import_job"),
]
