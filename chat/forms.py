"""Forms for the HTML side (the WebSocket frames are validated in chat.protocol)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from chat.models import Preferences
from inference.options import OptionError, parse_options


class RenameForm(forms.Form):
    title = forms.CharField(label=_("Title"), max_length=200, strip=True)


class FlagForm(forms.Form):
    value = forms.TypedChoiceField(
        choices=[("1", "on"), ("0", "off")], coerce=lambda v: v == "1", empty_value=False
    )


class FeedbackForm(forms.Form):
    value = forms.TypedChoiceField(choices=[("-1", "-1"), ("0", "0"), ("1", "1")], coerce=int)


class PreferencesForm(forms.Form):
    theme = forms.ChoiceField(label=_("Theme"), choices=Preferences.Theme.choices)
    language = forms.ChoiceField(
        label=_("Language"), choices=Preferences.Language.choices, required=False
    )
    default_model = forms.ChoiceField(
        label=_("Default model"),
        required=False,
        help_text=_("For new conversations; each conversation can pick its own."),
    )
    system_prompt = forms.CharField(
        label=_("Default system prompt"),
        required=False,
        max_length=8000,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_("Sent before every new conversation, e.g. “Answer briefly.”"),
    )
    temperature = forms.FloatField(
        label=_("Temperature"),
        required=False,
        help_text=_("0 to 2; 0 always picks the likeliest word."),
    )
    top_p = forms.FloatField(label=_("Top p"), required=False, help_text=_("Above 0, at most 1."))
    top_k = forms.IntegerField(label=_("Top k"), required=False, help_text=_("0 turns it off."))
    max_new_tokens = forms.IntegerField(
        label=_("Longest reply (tokens)"), required=False, help_text=_("1 to the server's limit.")
    )
    training_opt_out = forms.BooleanField(
        label=_("Keep my conversations out of training data"),
        required=False,
        help_text=_("Your chats, votes and 👍/👎 are never exported to train models."),
    )

    OPTION_FIELDS = ("temperature", "top_p", "top_k", "max_new_tokens")

    def __init__(self, *args: Any, user: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from inference import registry

        # Only models this person may use: a restricted name posted by hand is refused.
        usable = registry.usable(user)
        if len(usable) < 2:  # nothing to choose between
            del self.fields["default_model"]
            return
        choices = [("", _("The server's default"))]
        choices += [(s.name, s.label or s.name) for s in usable]
        self.fields["default_model"].choices = choices

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        options = {k: data.get(k) for k in self.OPTION_FIELDS if data.get(k) is not None}
        try:
            parse_options(options, max_new_tokens_limit=settings.STELLARCHAT_MAX_NEW_TOKENS)
        except OptionError as exc:
            self.add_error(exc.field if exc.field in self.fields else None, exc.message)
        data["options"] = options
        return data
