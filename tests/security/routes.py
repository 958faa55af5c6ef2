"""Every URL pattern of the project, with who may use it and how to call it: the one table
the isolation and CSRF tests read. A pattern missing here fails ``test_every_route_is_listed``,
so a new view cannot ship without saying who may see it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver

from tests import factories

SECRET_TITLE = "Secret plans of the owner"
SECRET_KEY_NAME = "owner-script-7f3a"


def walk(patterns: list[Any] | None = None, prefix: str = "") -> Iterator[str]:
    """Every route of the resolver, as the concatenated pattern text."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            yield from walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern)


@dataclass
class World:
    """The owner's things, which everyone else tries to reach."""

    owner: Any
    conversation: Any
    question: Any
    answer: Any
    key: Any
    plain_key: str

    @classmethod
    def build(cls, owner: Any) -> World:
        conversation = factories.make_conversation(owner, title=SECRET_TITLE, turns=1)
        question, answer = list(conversation.messages.order_by("position"))
        answer.group, answer.slot = uuid.uuid4(), 0  # a compare group's reply (its own route)
        answer.save(update_fields=["group", "slot"])
        key, plain = factories.make_api_key(owner, SECRET_KEY_NAME)
        return cls(owner, conversation, question, answer, key, plain)

    def fill(self, route: str) -> str:
        """A concrete path for ``route``, naming the owner's objects."""
        from django.contrib.contenttypes.models import ContentType

        c, m, k = self.conversation, self.answer, self.key
        path = (
            route.replace("<uuid:conversation_id>", str(c.pk))
            .replace("<uuid:message_id>", str(m.pk))
            .replace("<uuid:group_id>", str(m.group))
            .replace("<int:key_id>", str(k.pk))
            .replace("<id>", str(self.owner.pk))
            .replace("<path:content_type_id>", str(ContentType.objects.get_for_model(c).pk))
        )
        if "<path:object_id>" in path:
            obj = {"auth/user": self.owner, "chat/conversation": c, "api/apikey": k, "r": c}
            found = [v for part, v in obj.items() if f"admin/{part}/" in path]
            group = "1"
            if "auth/group" in path:
                from django.contrib.auth.models import Group

                group = str(Group.objects.get_or_create(name="reviewers")[0].pk)
            path = path.replace("<path:object_id>", str(found[0].pk) if found else group)
        if "<int:job_id>" in path:  # an import job of the owner (portability)
            from tests.portability.support import owner_import_job

            path = path.replace("<int:job_id>", str(owner_import_job(self.owner).pk))
        path = re.sub(r"\^\(\?P<app_label>[^)]*\)/\$", "chat/", path)
        path = path.replace("(?P<url>.*)$", "no-such-admin-page/")
        return "/" + path


@dataclass(frozen=True)
class Route:
    """``access``: public, logout, account (any logged-in person, their own data),
    conversation or api_key (the owner's object: everyone else gets 404), v1 (bearer keys
    only; tests/api/test_rest_api.py shows a session cookie is refused), admin."""

    access: str
    methods: tuple[str, ...] = ("GET",)
    data: Callable[[World], dict[str, Any]] = field(default=lambda w: {})


def support_upload() -> Any:
    """An export file to post to Settings → Import (tests/portability/support.py)."""
    from tests.portability.support import RouteUpload

    return RouteUpload()


def flag(w: World) -> dict[str, Any]:
    return {"value": "1"}


def shared(w: World) -> dict[str, Any]:
    """A share link at the path's own placeholder token (tests/sharing/support.py)."""
    from tests.sharing.support import share_at_placeholder

    share_at_placeholder(w.owner)
    return {}


ROUTES: dict[str, Route] = {
    "metrics": Route("public"),
    "healthz": Route("public"),
    "readyz": Route("public"),
    "accounts/signup/": Route(
        "public",
        ("GET", "POST"),
        lambda w: {
            "username": "newbie",
            "password1": "x9-long-pass!",
            "password2": "x9-long-pass!",
        },
    ),
    "accounts/login/": Route(
        "public", ("GET", "POST"), lambda w: {"username": "owner", "password": factories.PASSWORD}
    ),
    "accounts/logout/": Route("logout", ("GET", "POST")),
    "accounts/password/": Route(
        "account",
        ("GET", "POST"),
        lambda w: {
            "old_password": factories.PASSWORD,
            "new_password1": "another-long-passphrase-42",
            "new_password2": "another-long-passphrase-42",
        },
    ),
    "accounts/password/done/": Route("account"),
    "settings/api-keys/": Route("account", ("GET", "POST"), lambda w: {"name": "new key"}),
    "settings/api-keys/<int:key_id>/revoke/": Route(
        "api_key", ("POST",), lambda w: {"confirm": "1"}
    ),
    "settings/api-keys/<int:key_id>/store/": Route("api_key", ("POST",), lambda w: {"value": "0"}),
    "v1/models": Route("v1"),
    "v1/chat/completions": Route("v1", ("POST",)),
    "": Route("account"),
    "archive/": Route("account"),
    "settings/": Route("account", ("GET", "POST"), lambda w: {"theme": "dark"}),
    "settings/language/": Route("account", ("POST",), lambda w: {"language": "zh-hans"}),
    "settings/import/": Route("account", ("GET", "POST"), lambda w: {"file": support_upload()}),
    # The owner's import job (portability): everyone else gets 404, as for a conversation.
    "settings/import/<int:job_id>/": Route("conversation"),
    "settings/data/": Route("account"),
    "settings/data/export.zip": Route("account"),
    # A wrong password: the form is exercised (CSRF, login) and nobody's account goes.
    "settings/delete-account/": Route(
        "account", ("GET", "POST"), lambda w: {"password": "not-the-password", "confirm": "on"}
    ),
    "conversations/": Route("account"),
    "c/<uuid:conversation_id>/": Route("conversation"),
    "c/<uuid:conversation_id>/older/": Route("conversation"),
    "c/<uuid:conversation_id>/rename/": Route(
        "conversation", ("POST",), lambda w: {"title": "renamed by someone"}
    ),
    "c/<uuid:conversation_id>/pin/": Route("conversation", ("POST",), flag),
    "c/<uuid:conversation_id>/archive/": Route("conversation", ("POST",), flag),
    "c/<uuid:conversation_id>/delete/": Route("conversation", ("POST",)),
    "c/<uuid:conversation_id>/m/<uuid:message_id>/": Route("conversation"),
    "c/<uuid:conversation_id>/g/<uuid:group_id>/": Route("conversation"),
    "c/<uuid:conversation_id>/m/<uuid:message_id>/feedback/": Route(
        "conversation", ("POST",), lambda w: {"value": "-1"}
    ),
    "s/<str:token>/": Route("account", data=shared),
    "s/<str:token>/continue/": Route("account", ("POST",), shared),
    "settings/shared-links/": Route("account"),
    "c/<uuid:conversation_id>/share/": Route("conversation", ("GET", "POST")),
    "c/<uuid:conversation_id>/share/update/": Route("conversation", ("POST",)),
    "c/<uuid:conversation_id>/share/revoke/": Route("conversation", ("POST",)),
}


def route_of(route: str) -> Route:
    if route.startswith("admin/"):  # Django's admin: every page is staff-only but its login
        return Route("admin")
    return ROUTES[route]


def state_changing() -> list[tuple[str, str]]:
    """(route, method) for every write outside the admin (Django's admin is tested apart)."""
    return [(r, m) for r, spec in ROUTES.items() for m in spec.methods if m != "GET"]
