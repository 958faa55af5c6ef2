"""Forms of the portability pages."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _


class DeleteAccountForm(forms.Form):
    """The password again (a session left open on a shared computer must not be enough), and
    a tick saying the person knows it cannot be undone."""

    password = forms.CharField(
        label=_("Your password"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password", "autofocus": True}),
    )
    confirm = forms.BooleanField(
        label=_("I understand that this deletes my account and all its data for good."),
        error_messages={"required": _("Tick the box to confirm.")},
    )

    def __init__(self, user: Any, *args: Any, **kwargs: Any) -> None:
        self.user = user
        super().__init__(*args, **kwargs)

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        if not self.user.check_password(password):
            raise forms.ValidationError(
                _("That is not your password. Nothing was deleted."), code="password_incorrect"
            )
        return password
