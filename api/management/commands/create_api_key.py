"""``manage.py create_api_key USERNAME --name NAME [--no-store]``: a key for a person.

The last line of the output is the key alone, so scripts can take it with ``tail -n 1``.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from api import services
from api.forms import clean_key_name


class Command(BaseCommand):
    help = "Create an API key for a user and print it (once: only its hash is stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="whose key it is")
        parser.add_argument("--name", required=True, help="what the key is for (1-100 chars)")
        parser.add_argument(
            "--no-store",
            action="store_true",
            help="do not store the conversations made with this key (token counts only)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        username = options["username"]
        try:
            name = clean_key_name(options["name"])
        except ValidationError as exc:
            raise CommandError(f"invalid --name: {' '.join(exc.messages)}") from None
        User = get_user_model()
        user = User._default_manager.filter(**{User.USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        if not user.is_active:
            raise CommandError(f"user {username!r} is inactive: an API key would not work")
        try:
            key, plain = services.api_key_create(
                user=user, name=name, store_conversations=not options["no_store"]
            )
        except services.KeyLimitReached:
            raise CommandError(
                f"{username!r} already has {services.MAX_ACTIVE_KEYS} active keys; revoke one"
            ) from None
        stored = "stored" if key.store_conversations else "not stored"
        self.stdout.write(
            f"Created API key {key.name!r} ({key.prefix}…) for {username}; conversations "
            f"{stored}. Copy it now, it will not be shown again:"
        )
        self.stdout.write(plain)
