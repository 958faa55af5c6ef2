"""Presets and the arena pool, set by staff (inference/models.py; docs/models.md). A model's
name is picked from a list of the models this deployment serves; the checks themselves live
on the models, so a form and ``full_clean`` give the same messages."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from inference.models import ArenaEntry, Preset


def _model_choices(current: str) -> list[tuple[str, str]]:
    """The models of the file (and its providers) as select options, labelled; ``current``
    kept when it is no longer served, so the form shows it (and refuses it on save)."""
    from inference import registry

    models = registry.base_models()
    choices = [("", "---------")]
    choices += [
        (name, f"{spec.label} ({name})" if spec.label != name else name)
        for name, spec in models.items()
    ]
    if current and current not in models:
        choices.append((current, _("%(name)s (not served)") % {"name": current}))
    return choices


class PresetForm(forms.ModelForm):
    class Meta:
        model = Preset
        fields = (
            "name",
            "label",
            "base",
            "description",
            "system_prompt",
            "options",
            "groups",
            "active",
            "in_arena",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A select, not a ChoiceField: a name posted by hand still gets the model's message.
        current = self.initial.get("base") or ""
        self.fields["base"].widget = forms.Select(choices=_model_choices(current))


@admin.register(Preset)
class PresetAdmin(admin.ModelAdmin):
    form = PresetForm
    list_display = ("name", "label", "base", "active", "in_arena", "updated")
    list_filter = ("active", "in_arena", "base")
    search_fields = ("name", "label", "description")
    filter_horizontal = ("groups",)
    readonly_fields = ("created", "updated")
    fieldsets = (
        (None, {"fields": ("name", "label", "base", "description", "active", "in_arena")}),
        (_("Replies"), {"fields": ("system_prompt", "options")}),
        (_("Who may use it"), {"fields": ("groups",)}),
        (_("History"), {"fields": ("created", "updated")}),
    )


class ArenaEntryForm(forms.ModelForm):
    class Meta:
        model = ArenaEntry
        fields = ("name",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        current = self.initial.get("name") or ""
        self.fields["name"].widget = forms.Select(choices=_model_choices(current))


@admin.register(ArenaEntry)
class ArenaEntryAdmin(admin.ModelAdmin):
    """The arena pool's models of the file; presets join by their own box. Once the pool
    holds any model it replaces the file's ``arena`` list."""

    form = ArenaEntryForm
    list_display = ("name", "label", "created")

    @admin.display(description=_("label"))
    def label(self, entry: ArenaEntry) -> str:
        from inference import registry

        spec = registry.base_models().get(entry.name)
        return spec.label if spec is not None else _("(not served)")
