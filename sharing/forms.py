"""The share forms: one checkbox, and where to go back to afterwards."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _


class ShareForm(forms.Form):
    """Create or update a link. The form always carries the whole choice: an unticked box
    (absent from the POST) means "do not show my name"."""

    show_name = forms.BooleanField(
        label=_("Show my name"),
        required=False,
        help_text=_("Readers see your username on the shared page. Off: they see no name."),
    )
    # Where the answer goes: the link's own page, or Settings → Shared links.
    next = forms.ChoiceField(choices=[("share", "share"), ("list", "list")], required=False)
