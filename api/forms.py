"""Forms for managing API keys, on the settings page and in the admin."""

from __future__ import annotations

import unicodedata
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from api import services
from api.models import ApiKey

NAME_HELP = _("Say where the key is used, e.g. “laptop script”.")


def clean_key_name(value: str) -> str:
    """Whitespace runs collapse to one space; 1 to NAME_MAX characters; no control characters
    (PostgreSQL refuses NUL outright, the rest only garble lists)."""
    name = " ".join(value.split())
    if not name:
        raise ValidationError(_("Give the key a name."), code="required")
    if len(name) > services.NAME_MAX:
        raise ValidationError(
            _("At most %(limit)d characters."),
            code="max_length",
            params={"limit": services.NAME_MAX},
        )
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise ValidationError(_("The name holds control characters."), code="control")
    return name


class KeyNameField(forms.CharField):
    """A CharField whose length counts after whitespace collapses (its NUL check is Django's)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("label", _("Name"))
        kwargs.setdefault("help_text", NAME_HELP)
        super().__init__(**kwargs)
        self.widget.attrs.update(maxlength=str(services.NAME_MAX), autocomplete="off")

    def clean(self, value: Any) -> str:
        return clean_key_name(super().clean(value))


class KeyCreateForm(forms.Form):
    name = KeyNameField()
    store_conversations = forms.BooleanField(
        label=_("Store conversations"),
        required=False,
        initial=True,
        help_text=_("Off: the text of each completion is erased when its reply ends."),
    )


class ApiKeyAdminForm(forms.ModelForm):
    """The admin's add and change form: a key is created by the service, never from a bare
    model form, so only these three fields are ever taken from staff."""

    name = KeyNameField()

    class Meta:
        model = ApiKey
        fields = ("user", "name", "store_conversations")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        user = data.get("user")
        if self.instance.pk is None and user is not None:
            active = ApiKey.objects.filter(user=user, revoked_at__isnull=True).count()
            if active >= services.MAX_ACTIVE_KEYS:
                self.add_error(
                    "user",
                    _("This person already has %(limit)d active keys; revoke one first.")
                    % {"limit": services.MAX_ACTIVE_KEYS},
                )
        return data
