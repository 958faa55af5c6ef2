"""``manage.py create_api_key USERNAME --name NAME [--no-store]``: the key alone on the last line;
mistakes are one-line errors with exit status 1."""

from __future__ import annotations

import hashlib
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command, execute_from_command_line
from django.db import connections

from api import keys, services
from api.models import ApiKey
from tests import factories

pytestmark = pytest.mark.django_db


def run(*args: str) -> list[str]:
    out = StringIO()
    call_command("create_api_key", *args, stdout=out)
    return out.getvalue().splitlines()


def test_it_prints_the_key_alone_on_the_last_line(owner: Any) -> None:
    lines = run("owner", "--name", "  backup   script ")
    assert len(lines) == 2
    plain = lines[-1]
    key = ApiKey.objects.get(user=owner)
    assert keys.authenticate(plain) == key
    assert plain == plain.strip() and keys.prefix_of(plain) == key.prefix
    assert key.hashed == hashlib.sha256(plain.encode()).hexdigest()
    assert (key.name, key.store_conversations) == ("backup script", True)
    assert "backup script" in lines[0] and key.prefix in lines[0] and "owner" in lines[0]
    assert plain not in lines[0]


def test_no_store(owner: Any) -> None:
    plain = run("owner", "--name", "private", "--no-store")[-1]
    assert keys.authenticate(plain).store_conversations is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nobody", "--name", "x"), "no user named 'nobody'"),
        (("owner", "--name", "   "), "invalid --name"),
        (("owner", "--name", "x" * 101), "invalid --name: At most 100 characters."),
        (("owner", "--name", "bell\x07"), "invalid --name"),
    ],
    ids=["unknown-user", "blank-name", "long-name", "control-char"],
)
def test_mistakes_are_command_errors(owner: Any, args: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError, match=message.replace(".", r"\.")):
        run(*args)
    assert ApiKey.objects.count() == 0


def test_inactive_users_get_no_key(db: None) -> None:
    factories.make_user("gone", is_active=False)
    with pytest.raises(CommandError, match="inactive"):
        run("gone", "--name", "x")
    assert ApiKey.objects.count() == 0


def test_the_key_limit(owner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "MAX_ACTIVE_KEYS", 1)
    run("owner", "--name", "first")
    with pytest.raises(CommandError, match="already has 1 active keys"):
        run("owner", "--name", "second")
    assert ApiKey.objects.filter(user=owner).count() == 1


@pytest.fixture
def keep_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_from_argv closes every connection when done; the test's transaction needs its own."""
    monkeypatch.setattr(connections, "close_all", lambda: None)


def test_from_the_command_line_an_error_is_one_line_and_exit_1(
    db: None, keep_connection: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        execute_from_command_line(["manage.py", "create_api_key", "nobody", "--name", "x"])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == ["CommandError: no user named 'nobody'"]
    assert "Traceback" not in captured.err


def test_from_the_command_line_the_last_line_is_the_key(
    owner: Any, keep_connection: None, capsys: pytest.CaptureFixture[str]
) -> None:
    execute_from_command_line(["manage.py", "create_api_key", "owner", "--name", "shell"])
    last = capsys.readouterr().out.rstrip("\n").splitlines()[-1]
    assert keys.authenticate(last) == ApiKey.objects.get(user=owner)
