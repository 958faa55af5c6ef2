"""API keys: what programs authenticate with, on the REST API and the WebSocket API.

Only a SHA-256 of each key is stored: keys are 238 bits of randomness, so a fast hash is as
safe as a slow one here (nothing to brute-force), and lookups stay cheap. The visible
``prefix`` finds the row; the hash is then compared in constant time.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class ApiKey(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(_("prefix"), max_length=16, unique=True, editable=False)
    hashed = models.CharField(max_length=64, editable=False)
    store_conversations = models.BooleanField(
        _("store conversations"),
        default=True,
        help_text=_(
            "Off: the text of each REST completion is erased as soon as the reply ends; only "
            "its token counts are kept (for quotas)."
        ),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "-created_at"], name="apikey_user_created_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def active(self) -> bool:
        return self.revoked_at is None
