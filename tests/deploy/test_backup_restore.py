"""Backups that restore: the backup and restore commands of docs/deployment.md, run against a
real StellarChat, bring back every account, conversation and message, served as before.

The commands are read from the fenced block of the doc's "## Backups" section, so a change
there that breaks them fails here. They run natively (no Docker engine on these machines): the
``docker compose exec -T postgres`` prefix is dropped, the local server's user and a throwaway
database stand in for the Compose service's ``stellarchat`` role and database, and
PGHOST/PGPORT point the clients at the local server as the container's socket would.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests import services
from tests.e2e import livedaphne
from tests.e2e.wsclient import LiveSocket, get, login, signup

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DOC = livedaphne.BASE / "docs" / "deployment.md"
IN_CONTAINER = "docker compose exec -T postgres "
SECRET = "backup-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
# Two conversations of two turns each; non-ASCII on purpose (a dump's encoding must hold it).
CONVERSATIONS = [
    ["你好，世界 🌍", "再来一次：备份与恢复 ✨"],
    ["Café au lait ☕ — naïve façade", "数据库 🐘 restore 🎉"],
]

Row = tuple[str, str, str]  # a message as a page shows it: role, status, text
Served = dict[str, tuple[str, list[Row]]]  # conversation id -> (title, messages), in page order


@dataclass(frozen=True)
class Procedure:
    """The doc's two PostgreSQL commands, as written for Compose."""

    backup: str
    restore: str


def documented_procedure() -> Procedure:
    """The "## Backups" block of docs/deployment.md: one pg_dump, then the app stopped, one
    pg_restore, the app started again (restoring under a running app would race it)."""
    section = DOC.read_text().split("\n## Backups\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "docs/deployment.md: the Backups section has no ```sh block"
    commands = [
        " ".join(line.split())
        for line in block.group(1).replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    dumps = [c for c in commands if " pg_dump " in c]
    restores = [c for c in commands if " pg_restore " in c]
    assert len(dumps) == 1 and len(restores) == 1, commands
    at = commands.index(restores[0])
    assert commands.index(dumps[0]) < at, commands
    assert any(re.match(r"docker compose stop .*\bweb\b", c) for c in commands[:at]), commands
    assert any(re.match(r"docker compose start .*\bweb\b", c) for c in commands[at:]), commands
    compose = (livedaphne.BASE / "docker-compose.yml").read_text()
    role = re.search(r"POSTGRES_USER: (\S+)", compose)
    name = re.search(r"POSTGRES_DB: (\S+)", compose)
    assert role and name
    for command in (dumps[0], restores[0]):  # the Compose service's own role and database
        assert f" -U {role.group(1)} " in command and f" -d {name.group(1)} " in command, command
    return Procedure(dumps[0], restores[0])


def native(command: str, database: str, *, dump: str | None = None) -> str:
    """``command`` for the local server: no container, its admin user, ``database``, and (for
    a restore) the dump file ``dump`` instead of the doc's example name."""
    assert command.startswith(IN_CONTAINER), command
    user = urlsplit(services.POSTGRES_URL).username or "postgres"
    local, users = re.subn(r"(?<= )-U \S+", f"-U {user}", command[len(IN_CONTAINER) :])
    local, names = re.subn(r"(?<= )-d \S+", f"-d {database}", local)
    files = 1
    if dump is not None:
        local, files = re.subn(r"< \S+$", f"< {dump}", local)
    assert (users, names, files) == (1, 1, 1), command
    return local


def shell(command: str, cwd: Path) -> None:
    """Run ``command`` as a shell would (redirections, ``$(date +%F)``) with the local server
    as the default host, the way the container's clients default to its socket."""
    url = urlsplit(services.POSTGRES_URL)
    env = {**os.environ, "PGHOST": url.hostname or "127.0.0.1", "PGPORT": str(url.port or 5432)}
    if url.password:
        env["PGPASSWORD"] = unquote(url.password)
    done = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{command}\n{done.stderr}"


def database(url: str) -> str:
    return url.rsplit("/", 1)[1]


def app_env(data_dir: Path, database_url: str, secret: str = SECRET) -> dict[str, str]:
    """Production settings (debug off) on ``database_url``, with the test backend: no model."""
    return {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secret,
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "STELLARCHAT_BACKEND": "test",
        "STELLARCHAT_DATA_DIR": str(data_dir),
        "DATABASE_URL": database_url,
    }


class Page(HTMLParser):
    """What a chat page shows, read from the markup its templates render: the sidebar's
    conversations (id -> title) and the open conversation's messages."""

    VOID = {"area", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}

    def __init__(self, html: str) -> None:
        super().__init__()
        self.titles: dict[str, str] = {}
        self.messages: list[Row] = []
        self._link: str | None = None  # the sidebar link being read
        self._depth = 0  # inside a message body when > 0
        self._role_status = ("", "")
        self._text: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if self._depth:
            self._depth += tag not in self.VOID
        elif tag == "a" and attr.get("data-conv-title"):
            self._link = attr["data-conv-title"]
            self.titles[self._link] = ""
        elif tag == "li" and "data-message" in attr:
            self._role_status = (attr["data-role"] or "", attr["data-status"] or "")
        elif tag == "div" and attr.get("class") == "message-body":
            self._depth, self._text = 1, []

    def handle_endtag(self, tag: str) -> None:
        if self._depth:
            self._depth -= 1
            if not self._depth:  # Markdown adds line breaks around a reply's paragraphs
                self.messages.append((*self._role_status, "".join(self._text).strip()))
        elif tag == "a":
            self._link = None

    def handle_data(self, data: str) -> None:
        if self._depth:
            self._text.append(data)
        elif self._link is not None:
            self.titles[self._link] += data


def served(base: str, cookie: str) -> Served:
    """Every conversation in the person's sidebar, with the messages its page shows."""
    status, home = get(base, "/", cookie)
    assert status == 200, status
    shown: Served = {}
    for conversation, title in Page(home).titles.items():
        status, html = get(base, f"/c/{conversation}/", cookie)
        assert status == 200, (conversation, status)
        shown[conversation] = (title, Page(html).messages)
    return shown


async def say(ws: LiveSocket, conversation: str | None, text: str) -> tuple[str, list[Row]]:
    """One turn over the socket: the conversation's id and the two messages as the socket
    reported them (saved, then streamed)."""
    await ws.send({"type": "chat.send", "conversation": conversation, "content": text})
    frames = await ws.until("stream.end")
    assert frames[-1]["finish_reason"] == "stop", frames[-1]
    saved = next(f for f in frames if f["type"] == "message.saved")
    reply = "".join(f["delta"] for f in frames if f["type"] == "stream.delta")
    rows = [("user", "complete", saved["message"]["content"]), ("assistant", "complete", reply)]
    return saved["conversation"], rows


async def chat(base: str, cookie: str, conversations: list[list[str]]) -> Served:
    """Start each conversation and take its turns; what the socket said was saved."""
    ws = await LiveSocket.open(base, cookie)
    made: Served = {}
    try:
        for turns in conversations:
            conversation, rows = await say(ws, None, turns[0])
            titled = (await ws.until("conversation.updated"))[-1]  # after the first reply
            assert titled["conversation"] == conversation
            for text in turns[1:]:
                rows += (await say(ws, conversation, text))[1]
            made[conversation] = (titled["title"], rows)
    finally:
        await ws.close()
    return made


async def turn_on(base: str, cookie: str, conversation: str, text: str) -> tuple[str, list[Row]]:
    """One more turn in an existing conversation, on a socket of its own."""
    ws = await LiveSocket.open(base, cookie)
    try:
        return await say(ws, conversation, text)
    finally:
        await ws.close()


def no_migration_pending(env: dict[str, str]) -> None:
    """The restored schema is the code's: `migrate` (which Compose runs on start) has nothing
    left to do."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--check", "--noinput"],
        cwd=livedaphne.BASE,
        env=livedaphne.clean_env(**env),
        check=True,
        capture_output=True,
        timeout=120,
    )


@dataclass(frozen=True)
class Backup:
    """A dump made by the doc's command, and what the app served when it was made."""

    dump: Path
    database_url: str  # the database it was taken from (still there, still in use)
    username: str
    served: Served  # what the app served when the backup was taken


@pytest.fixture(scope="module")
def procedure() -> Procedure:
    """The doc's commands, read in a fixture: a broken doc fails these tests, where an error
    at import would stop the whole run's collection."""
    return documented_procedure()


@pytest.fixture(scope="module")
def backup(procedure: Procedure, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backup]:
    """A person's two conversations chatted over the real socket, then the doc's backup
    command run while the app is up (the doc says it may be)."""
    services.require("PostgreSQL", services.postgres_available())
    services.require(
        "pg_dump and pg_restore", bool(shutil.which("pg_dump") and shutil.which("pg_restore"))
    )
    folder = tmp_path_factory.mktemp("backup")
    with livedaphne.postgres_database() as url:
        with livedaphne.daphne(app_env(folder, url)) as server:
            cookie = signup(server.url, "keeper")
            made = asyncio.run(chat(server.url, cookie, CONVERSATIONS))
            shown = served(server.url, cookie)
            assert shown == made  # the pages show what the socket said, before any backup
            shell(native(procedure.backup, database(url)), folder)
        dumps = list(folder.glob("*.dump"))
        assert len(dumps) == 1, dumps
        yield Backup(dumps[0], url, "keeper", shown)


def test_it_restores_into_a_fresh_database(
    procedure: Procedure, backup: Backup, tmp_path: Path
) -> None:
    """A new server (a fresh volume, another secret key): the restored database needs no
    migration, the app serves every conversation as it was, and chatting carries on from the
    restored history with fresh keys for new rows."""
    with livedaphne.postgres_database() as url:
        shell(native(procedure.restore, database(url), dump=backup.dump.name), backup.dump.parent)
        env = app_env(tmp_path, url, secret=SECRET[::-1])  # a new key "loses no data" (the doc)
        no_migration_pending(env)
        with livedaphne.daphne(env, run_migrations=False) as server:
            cookie = login(server.url, backup.username)
            assert cookie
            assert list(served(server.url, cookie).items()) == list(backup.served.items())

            last = list(backup.served)[-1]
            _, rows = asyncio.run(turn_on(server.url, cookie, last, "还在吗？🙂"))
            assert rows[1][2] == "You said: 还在吗？🙂 (turn 3)"  # two restored turns before it
            signup(server.url, "newcomer")  # the user id sequence came back too


def test_restoring_over_a_live_database_replaces_what_is_there(
    procedure: Procedure, backup: Backup, tmp_path: Path
) -> None:
    """The doc's restore into the service's own database, which has moved on since the
    backup: afterwards it holds the backup and nothing else (no account, conversation or turn
    from after it)."""
    env = app_env(tmp_path, backup.database_url)
    first = next(iter(backup.served))
    with livedaphne.daphne(env, run_migrations=False) as server:
        cookie = login(server.url, backup.username)
        assert cookie
        later = asyncio.run(chat(server.url, cookie, [["written after the backup 🕒"]]))
        asyncio.run(turn_on(server.url, cookie, first, "one more turn 🔁"))
        signup(server.url, "latecomer")
        assert served(server.url, cookie) != backup.served
    # `docker compose stop web worker` above, `docker compose start web worker` below.
    shell(
        native(procedure.restore, database(backup.database_url), dump=backup.dump.name),
        backup.dump.parent,
    )
    with livedaphne.daphne(env, run_migrations=False) as server:
        cookie = login(server.url, backup.username)
        assert cookie
        assert list(served(server.url, cookie).items()) == list(backup.served.items())
        assert get(server.url, f"/c/{next(iter(later))}/", cookie)[0] == 404
        assert login(server.url, "latecomer") is None
