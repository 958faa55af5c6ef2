"""Template helpers for chat pages: ``{% load chat_extras %}{{ message.content|markdown }}``."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from chat.rendering import render_markdown

register = template.Library()


@register.filter
def markdown(value: object) -> SafeString:
    """Message text as sanitized HTML; ``None`` (a reply with no text yet) renders as nothing."""
    if value is None:
        return SafeString("")
    return render_markdown(str(value))


@register.filter
def model_label(name: str) -> str:
    """A model's label for people (its name when the registry no longer has it)."""
    from inference import registry

    spec = registry.get(name) if name else None
    return (spec.label or spec.name) if spec is not None else name


@register.filter
def slot_letter(slot: int | None) -> str:
    """A compare reply's letter (A, B, C): how a blind reply is named before the vote."""
    return "ABC"[slot] if isinstance(slot, int) and 0 <= slot < 3 else "?"
