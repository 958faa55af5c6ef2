"""``{% load sharing_tags %}{% sharing_on as on %}``: whether to offer Share at all."""

from __future__ import annotations

from django import template
from django.conf import settings

register = template.Library()


@register.simple_tag
def sharing_on() -> bool:
    """False when the server's STELLARCHAT_SHARING is "off": no Share entry anywhere."""
    return settings.STELLARCHAT_SHARING != "off"
