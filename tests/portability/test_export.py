"""Settings → Your data: the ZIP of everything a person owns (docs/export-format.md), read
back with zipfile and json and checked field by field against the database; streamed (an
asynchronous iterator whose first bytes come before the database is read through, memory
well under the file's size); nobody else's data in it; the ``export_user`` command."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import threading
import tracemalloc
import uuid
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from django.db import connections
from django.test import AsyncClient, Client

from chat import services
from chat.models import Conversation, Message, Vote
from portability import export, export_views
from tests import factories

pytestmark = pytest.mark.django_db

DATA = "/settings/data/"
DOWNLOAD = "/settings/data/export.zip"
OTHER_SECRET = "other person's secret 7Qx"
BLIND_MODELS = ("hidden-model-k2", "hidden-model-v9")


def finish(reply: Message, content: str, status: str = "complete", **counts: Any) -> None:
    services.reply_finish(message_id=reply.pk, content=content, status=status, **counts)


def build_history(owner: Any) -> dict[str, Any]:
    """A person's data with every kind of thing the format carries."""
    made: dict[str, Any] = {}
    # Versions: a reply regenerated, then the question edited; feedback; non-ASCII; a title
    # that tries to be a path.
    c = factories.make_conversation(
        owner,
        title="Plans / ../../etc/passwd ✓",
        system_prompt="Be brief.\nAlways.",
        options={"temperature": 0.3, "top_p": 0.9},
        model_name="mini",
    )
    question, first = services.reply_request(
        conversation=c, content='Héllo 世界 🚀 "quoted" \\ back\nslash', model_name="mini"
    )
    finish(
        first,
        "first answer",
        prompt_tokens=5,
        completion_tokens=3,
        ttft_ms=12.5,
        tokens_per_second=40.25,
    )
    services.message_set_feedback(message=first, feedback=-1)
    _, second = services.reply_regenerate(conversation=c, model_name="mini")
    finish(second, "second answer")
    services.message_set_feedback(message=second, feedback=1)
    _, third = services.reply_edit(
        conversation=c, message_id=question.pk, content="edited question", model_name="mini"
    )
    finish(third, "partial", status="cancelled")
    made["versions"] = c

    # Compare, voted on.
    c = factories.make_conversation(owner, title="Compare a and b")
    _, replies = services.reply_compare(
        conversation=c, content="which is better?", model_names=["model-a", "model-b"]
    )
    finish(replies[0], "answer of a")
    finish(replies[1], "answer of b")
    services.vote_record(
        conversation=c, group=replies[0].group, winner=str(replies[1].pk), voter=owner
    )
    made["compare"] = c

    # An arena not voted on yet: its models are still hidden.
    c = factories.make_conversation(owner, title="Arena")
    _, replies = services.reply_compare(
        conversation=c, content="blind?", model_names=list(BLIND_MODELS), blind=True
    )
    finish(replies[0], "one view")
    finish(replies[1], "another view")
    made["arena"] = c

    c = factories.make_conversation(owner, title="Old and pinned", turns=1)
    services.conversation_set_flags(conversation=c, pinned=True, archived=True)
    made["archived"] = c

    key, _ = factories.make_api_key(owner, store_conversations=False)
    c = services.conversation_create(owner=owner, api_key=key, retain_text=False)
    services.message_append(conversation=c, role="user", content="")
    made["api"] = c

    c = factories.make_conversation(owner, title="Still going")
    services.reply_request(conversation=c, content="tell me more", model_name="mini")
    made["streaming"] = c

    c = factories.make_conversation(owner, title="Broken")
    _, reply = services.reply_request(conversation=c, content="hm?")
    finish(reply, "", status="failed")
    made["failed"] = c

    other = factories.make_user("someone-else")
    factories.make_conversation(other, title=OTHER_SECRET, turns=1)
    services.message_append(
        conversation=Conversation.objects.get(owner=other), role="user", content=OTHER_SECRET
    )
    return made


def read_zip(data: bytes) -> tuple[zipfile.ZipFile, dict[str, Any]]:
    zf = zipfile.ZipFile(io.BytesIO(data))
    assert zf.testzip() is None
    return zf, json.loads(zf.read("conversations.json"))


def download(client: Client) -> bytes:
    response = client.get(DOWNLOAD)
    assert response.status_code == 200
    return b"".join(response.streaming_content)


def expected_message(m: Message) -> dict[str, Any]:
    return {
        "id": str(m.pk),
        "position": m.position,
        "role": m.role,
        "content": m.content,
        "status": m.status,
        "model": "" if m.blind else m.model_name,
        "feedback": m.feedback,
        "superseded": m.superseded,
        "replaces": str(m.replaces_id) if m.replaces_id else None,
        "group": str(m.group) if m.group else None,
        "slot": m.slot,
        "prompt_tokens": m.prompt_tokens,
        "completion_tokens": m.completion_tokens,
        "ttft_ms": m.ttft_ms,
        "tokens_per_second": m.tokens_per_second,
    }


def test_it_exports_everything_field_by_field(owner: Any, owner_client: Client) -> None:
    made = build_history(owner)
    response = owner_client.get(DOWNLOAD)
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"].startswith('attachment; filename="stellarchat-owner-')
    assert "no-store" in response["Cache-Control"]
    zf, doc = read_zip(b"".join(response.streaming_content))

    names = zf.namelist()
    assert names[0] == "conversations.json" and names[-1] == "README.txt"
    assert doc["format"] == "stellarchat-export" and doc["version"] == 1
    assert doc["user"] == {"username": "owner"}
    assert datetime.fromisoformat(doc["exported_at"]).utcoffset() is not None

    mine = Conversation.objects.filter(owner=owner).order_by("created_at", "id")
    assert [c["id"] for c in doc["conversations"]] == [str(c.pk) for c in mine]
    for record, c in zip(doc["conversations"], mine, strict=True):
        assert {k: v for k, v in record.items() if k not in ("messages", "votes")} == {
            "id": str(c.pk),
            "title": c.title,
            "created_at": record["created_at"],
            "updated_at": record["updated_at"],
            "model": c.model_name,
            "system_prompt": c.system_prompt,
            "options": c.options,
            "pinned": c.pinned,
            "archived": c.archived,
            "source": c.source,
        }
        assert datetime.fromisoformat(record["created_at"]) == c.created_at
        assert datetime.fromisoformat(record["updated_at"]) == c.updated_at
        messages = list(Message.objects.filter(conversation=c).order_by("position"))
        assert len(record["messages"]) == len(messages)
        for got, m in zip(record["messages"], messages, strict=True):
            assert datetime.fromisoformat(got.pop("created_at")) == m.created_at
            assert got == expected_message(m)
        votes = list(Vote.objects.filter(conversation=c).order_by("created_at"))
        assert record["votes"] == [
            {
                "group": str(v.group),
                "outcome": v.outcome,
                "winner": str(v.winner_id) if v.winner_id else None,
                "arena": v.arena,
                "created_at": v.created_at.isoformat(),
            }
            for v in votes
        ]

    by_id = {c["id"]: c for c in doc["conversations"]}
    versions = by_id[str(made["versions"].pk)]["messages"]
    assert [m["content"] for m in versions if not m["superseded"]] == ["edited question", "partial"]
    assert 'Héllo 世界 🚀 "quoted" \\ back\nslash' in [m["content"] for m in versions]
    assert [v["outcome"] for v in by_id[str(made["compare"].pk)]["votes"]] == ["win"]
    assert by_id[str(made["api"].pk)]["source"] == "api"
    statuses = [m["status"] for m in by_id[str(made["streaming"].pk)]["messages"]]
    assert statuses == ["complete", "streaming"]

    # Blind replies unnamed everywhere; nobody else's data anywhere.
    everything = b"".join(zf.read(n) for n in names).decode()
    for secret in (*BLIND_MODELS, OTHER_SECRET, "someone-else"):
        assert secret not in everything


def test_markdown_files_are_named_safely_and_read_in_thread_order(
    owner: Any, owner_client: Client
) -> None:
    made = build_history(owner)
    zf, _ = read_zip(download(owner_client))
    files = [n for n in zf.namelist() if n.startswith("conversations/")]
    assert len(files) == len(set(files)) == Conversation.objects.filter(owner=owner).count()
    for name in files:
        assert name.count("/") == 1 and ".." not in name and name.endswith(".md"), name
        assert zf.getinfo(name).external_attr >> 16 == 0o644

    def markdown(c: Conversation) -> str:
        [name] = [n for n in files if n.endswith(f"-{str(c.pk)[:8]}.md")]
        return zf.read(name).decode()

    text = markdown(made["versions"])
    assert f"-plans-etcpasswd-{str(made['versions'].pk)[:8]}.md" in "".join(files)
    assert text.startswith("# Plans / ../../etc/passwd ✓\n")
    assert "## System prompt\n\nBe brief.\nAlways." in text
    current, earlier = text.split("## Earlier versions")
    assert current.index("## You\n\nedited question") < current.index(
        "## mini (stopped)\n\npartial"
    )
    assert "### mini (👎)\n\nfirst answer" in earlier
    assert "### mini (👍)\n\nsecond answer" in earlier
    assert "Héllo 世界" in earlier

    arena = markdown(made["arena"])
    assert "## Model A\n\none view" in arena and "## Model B\n\nanother view" in arena
    compare = markdown(made["compare"])
    assert "## B · model-b\n\nanswer of b" in compare  # the winner continues
    assert "### A · model-a\n\nanswer of a" in compare.split("## Earlier versions")[1]
    assert "Texts not kept" in markdown(made["api"])
    assert "(still being written at export)" in markdown(made["streaming"])
    assert "(failed)" in markdown(made["failed"])


@pytest.mark.parametrize(
    "title",
    ["../../../etc/passwd", "/abs/path", "a\\b\\c", "\u202egnp.exe", "", "   ", "..", "C:\\x"],
)
def test_no_title_makes_a_path(title: str) -> None:
    when = datetime.fromisoformat("2026-01-02T03:04:05+00:00")
    row = {"id": uuid.uuid4(), "title": title, "created_at": when}
    name = export.markdown_name(row, taken=set())
    folder, file = name.split("/")
    assert folder == "conversations" and file.startswith("2026-01-02-")
    assert ".." not in name and "\\" not in name and ":" not in name and "\u202e" not in name


def test_names_stay_unique_when_date_title_and_id_prefix_agree() -> None:
    when = datetime.fromisoformat("2026-01-02T03:04:05+00:00")
    taken: set[str] = set()
    rows = [
        {
            "id": uuid.UUID(f"12345678-0000-0000-0000-00000000000{i}"),
            "title": "Same",
            "created_at": when,
        }
        for i in range(3)
    ]
    names = [export.markdown_name(r, taken=taken) for r in rows]
    assert len(set(names)) == 3


def test_an_empty_account_exports_a_valid_file(owner: Any, owner_client: Client) -> None:
    zf, doc = read_zip(download(owner_client))
    assert doc["conversations"] == []
    assert zf.namelist() == ["conversations.json", "README.txt"]


def test_someone_elses_export_holds_nothing_of_the_owner(owner: Any, other_client: Client) -> None:
    build_history(owner)
    zf, doc = read_zip(download(other_client))
    assert doc["user"] == {"username": "other"} and doc["conversations"] == []
    assert "Plans" not in b"".join(zf.read(n) for n in zf.namelist()).decode()


@pytest.mark.parametrize("path", [DATA, DOWNLOAD])
def test_logged_out_people_are_sent_to_log_in(anon_client: Client, path: str) -> None:
    response = anon_client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_the_page_offers_the_download(owner: Any, owner_client: Client) -> None:
    factories.make_conversation(owner, title="one", turns=1)
    body = owner_client.get(DATA).content.decode()
    assert 'href="/settings/data/export.zip"' in body
    assert "1 conversation." in body
    assert 'href="/settings/delete-account/"' in body


def test_too_many_downloads_at_once_are_told_to_wait(
    owner_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_views, "_exports", threading.BoundedSemaphore(1))
    first = owner_client.get(DOWNLOAD)
    busy = owner_client.get(DOWNLOAD)
    assert busy.status_code == 429 and busy["Retry-After"] == "60"
    assert "Try again in a minute" in busy.content.decode()
    b"".join(first.streaming_content)  # the first download ends: its slot is free again
    assert owner_client.get(DOWNLOAD).status_code == 200


# --- streaming --------------------------------------------------------------------------------


def bulk_conversations(owner: Any, count: int, *, messages: int, size: int) -> None:
    """Many conversations quickly (bulk rows; the services would take minutes)."""
    conversations = Conversation.objects.bulk_create(
        [Conversation(owner=owner, title=f"chat {i}", next_position=messages) for i in range(count)]
    )
    rows = [
        Message(
            conversation=c,
            position=p,
            role="user" if p % 2 == 0 else "assistant",
            content=secrets.token_hex(size // 2),  # random: the ZIP cannot squeeze it away
        )
        for c in conversations
        for p in range(messages)
    ]
    Message.objects.bulk_create(rows, batch_size=2000)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many conversation rows the export has read so far (both passes together)."""
    seen = {"rows": 0}
    original = export._conversation_rows

    def counting(user: Any) -> Iterator[dict[str, Any]]:
        for row in original(user):
            seen["rows"] += 1
            yield row

    monkeypatch.setattr(export, "_conversation_rows", counting)
    return seen


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_download_streams_before_the_database_is_read_through(
    counted: dict[str, int],
) -> None:
    from channels.db import database_sync_to_async

    owner = await factories.amake_user("streamer")
    await database_sync_to_async(bulk_conversations)(owner, 300, messages=2, size=512)
    client = AsyncClient()
    await client.aforce_login(owner)
    response = await client.get(DOWNLOAD)
    assert response.status_code == 200
    assert response.is_async  # an ASGI server sends it as it comes, never reading it whole
    chunks = aiter(response.streaming_content)
    first = await anext(chunks)
    assert first.startswith(b"PK\x03\x04")
    assert 0 < counted["rows"] < 300  # bytes went out while most rows were still unread
    rest = [chunk async for chunk in chunks]
    # The page's own connection, on asgiref's thread (a server closes it after each request;
    # the test client does not), so the test database can be dropped at the end.
    await sync_to_async(connections.close_all)()
    zf, doc = read_zip(first + b"".join(rest))
    assert len(doc["conversations"]) == 300
    assert len(zf.namelist()) == 302


@pytest.mark.asyncio
async def test_a_download_cut_short_ends_its_generator_on_its_own_thread() -> None:
    threads: list[str] = []
    released = threading.Event()

    def chunks() -> Iterator[bytes]:
        try:
            threads.append(threading.current_thread().name)
            yield b"one"
            yield b"two"
        finally:
            threads.append(threading.current_thread().name)

    body = export_views._Pulled(chunks(), released.set)
    async for chunk in body:  # the client goes after the first chunk
        assert chunk == b"one"
        break
    body.close()
    assert await asyncio.to_thread(released.wait, 5)
    assert len(threads) == 2 and threads[0] == threads[1] != threading.current_thread().name


def test_memory_stays_well_under_the_files_size(owner: Any, tmp_path: Path) -> None:
    bulk_conversations(owner, 2000, messages=10, size=256)
    out = tmp_path / "export.zip"
    with out.open("wb") as f:
        tracemalloc.start()
        try:
            for chunk in export.export_zip(owner):
                f.write(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    with zipfile.ZipFile(out) as zf:
        held = sum(info.file_size for info in zf.infolist())  # what the file holds, unpacked
        assert len(json.loads(zf.read("conversations.json"))["conversations"]) == 2000
    assert held > 2000 * 10 * 256
    # What stays is the ZIP's directory (a few hundred bytes per file) and one fetch of rows.
    assert peak < held / 4, (peak, held)


# --- the operator's command -------------------------------------------------------------------


def contents(data: bytes) -> dict[str, Any]:
    """A ZIP's files, with the one thing two exports differ in (the time) taken out."""
    zf, doc = read_zip(data)
    doc.pop("exported_at")
    files = {n: zf.read(n) for n in zf.namelist() if n != "conversations.json"}
    return {"names": zf.namelist(), "doc": doc, "files": files}


def test_export_user_writes_what_the_page_gives(
    owner: Any, owner_client: Client, tmp_path: Path
) -> None:
    build_history(owner)
    out = tmp_path / "owner.zip"
    call_command("export_user", "owner", out=str(out))
    assert contents(out.read_bytes()) == contents(download(owner_client))
    assert not list(tmp_path.glob("*.partial"))


def test_export_user_to_standard_output(
    owner: Any, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    factories.make_conversation(owner, title="piped", turns=1)
    call_command("export_user", "owner", out="-")
    _, doc = read_zip(capsysbinary.readouterr().out)
    assert [c["title"] for c in doc["conversations"]] == ["piped"]


def test_export_user_refuses_an_unknown_user(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("export_user", "nobody", out=str(tmp_path / "x.zip"))
    assert not list(tmp_path.iterdir())


def test_export_user_says_when_it_cannot_write(owner: Any, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="cannot write"):
        call_command("export_user", "owner", out=str(tmp_path / "missing" / "x.zip"))
