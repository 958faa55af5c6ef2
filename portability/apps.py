from django.apps import AppConfig


class PortabilityConfig(AppConfig):
    """A person's data in and out: export, import, and deleting the account."""

    name = "portability"
    default_auto_field = "django.db.models.BigAutoField"
