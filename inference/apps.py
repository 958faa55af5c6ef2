from __future__ import annotations

from django.apps import AppConfig


class InferenceConfig(AppConfig):
    """Holds no model at start-up: backends load lazily, once per inference process."""

    name = "inference"
    verbose_name = "Inference"
