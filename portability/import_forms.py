"""The import page's form, and the upload handler that keeps an oversized file out."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from django.utils.translation import gettext_lazy as _

from portability.importers import too_big_message


class SizeLimit(FileUploadHandler):
    """Counts a file's bytes as they arrive and drops it past ``limit``, without storing the
    rest (the other form fields, the CSRF token among them, still arrive)."""

    def __init__(self, request: Any, *, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.too_big = False

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        if start + len(raw_data) > self.limit:
            self.too_big = True
            raise SkipFile()
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


class ImportForm(forms.Form):
    file = forms.FileField(
        label=_("Export file"),
        widget=forms.FileInput(attrs={"accept": ".json,.zip,application/json,application/zip"}),
        allow_empty_file=True,  # said more clearly by the importer ("The file is empty.")
    )

    def __init__(self, *args: Any, too_big: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.too_big = too_big

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.too_big:
            self.errors.pop("file", None)  # not "required": it was dropped on the way in
            self.add_error("file", too_big_message())
        return cleaned
