from django.apps import AppConfig


class SharingConfig(AppConfig):
    """Share links: read-only snapshots of a conversation at /s/<token>/ (docs/sharing.md)."""

    name = "sharing"
    default_auto_field = "django.db.models.BigAutoField"
