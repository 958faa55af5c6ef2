"""Hostile and broken files through the real upload form: too big, not JSON, nested 10^5
deep, of the wrong shape, a ZIP bomb (honest and lying headers), a ZIP with paths outside
it, not UTF-8, empty. Each gets a message naming the problem, and nothing of it is saved:
no job, no waiting item, no queued task, no conversation — not even the good conversations
before the bad one."""

from __future__ import annotations

import html
import io
import json
import struct
import zipfile
from typing import Any

import pytest
from django.test import Client
from django_tasks_db.models import DBTaskResult

from chat.models import Conversation, Message
from portability.importers import common, reading
from portability.models import ImportItem, ImportJob
from tests.portability import support

pytestmark = pytest.mark.django_db

GOOD = support.fixture("chatgpt_conversations.json")


def refused(client: Client, name: str, data: bytes) -> str:
    """Upload ``data``; it must be refused with nothing saved. The page's error text."""
    response = support.upload(client, name, data)
    assert response.status_code == 400, response.status_code
    assert not ImportJob.objects.exists()
    assert not ImportItem.objects.exists()
    assert not DBTaskResult.objects.exists()
    assert not Conversation.objects.exists() and not Message.objects.exists()
    page = html.unescape(response.content.decode())
    start = page.index('class="field-errors"')
    return " ".join(page[start : page.index("</div>", start)].split())


def test_a_file_over_the_limit_is_refused_as_it_arrives(
    owner_client: Client, settings: Any
) -> None:
    settings.STELLARCHAT_IMPORT_MAX_MB = 1
    data = b"[" + b" " * 1_100_000 + b"]"
    assert "The file is larger than 1 MB, the most this server takes." in refused(
        owner_client, "conversations.json", data
    )


def test_the_limit_holds_for_a_file_handed_over_directly(settings: Any) -> None:
    """The importer checks the size itself too (the command line, a future caller)."""
    from portability import importers

    settings.STELLARCHAT_IMPORT_MAX_MB = 1

    class Big(io.BytesIO):
        size = 2_500_000

    with pytest.raises(importers.ImportRefused, match="The file is 2.5 MB; the most"):
        importers.prepare(Big(b"[]"), filename="x.json")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is empty."),
        (b"   \n", "is not valid JSON (it ends too early, as if cut off)"),
        (b"hello, this is not JSON", "conversations.json is not valid JSON"),
        (b'[{"mapping": {}}', "is not valid JSON (it ends too early, as if cut off)"),
        (b"[] []", "is not valid JSON (something follows the end of the JSON)"),
        (b"[NaN]", "conversations.json is not valid JSON"),
        (b"[1e999]", "is not valid JSON (a number in it is too large)"),
    ],
)
def test_what_is_not_json_is_named(owner_client: Client, data: bytes, message: str) -> None:
    assert message in refused(owner_client, "conversations.json", data)


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'[{"title": "deep", "mapping": {"n": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}]",
        b'{"a": ' * 100_000 + b"1" + b"}" * 100_000,
    ],
    ids=["lists", "inside-a-conversation", "objects"],
)
def test_a_file_nested_100000_deep_is_refused(owner_client: Client, data: bytes) -> None:
    assert "conversations.json is nested more than 64 levels deep" in refused(
        owner_client, "conversations.json", data
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"42", "conversations.json holds a number, not conversations."),
        (b'"hello"', "conversations.json holds a string, not conversations."),
        (b"null", "conversations.json holds null, not conversations."),
        (b"[]", "conversations.json holds no conversations."),
        (b'["a", "b"]', "a list of which the first item is a string, not a conversation"),
        (b"[[1]]", "a list of which the first item is a list, not a conversation"),
        (b'[{"title": "x"}]', "is not an export this server reads"),
        (b"{}", "is not an export this server reads"),
        (b'{"format": "gpt-dump", "conversations": []}', "is not an export this server reads"),
        (
            b'[{"title": "fine", "mapping": {}}, {"title": "Broken", "id": "x"}]',
            "Conversation 2 (“Broken”) has no “mapping” of messages",
        ),
        (b'[{"mapping": {}}, 7]', "Conversation 2 is not a conversation"),
        (
            b'[{"chat": {"history": {"messages": {}}}}, {"chat": "nope"}]',
            "Conversation 2 has no “chat”",
        ),
        (b'[{"chat": {"title": "t"}}]', "Conversation 1 has no messages"),
        (
            b'{"format": "stellarchat-export", "version": 2, "conversations": []}',
            "is a StellarChat export of version 2; this server reads version 1.",
        ),
        (
            b'{"format": "stellarchat-export", "version": 1, "conversations": {}}',
            "has no list of “conversations”",
        ),
        (
            b'{"format": "stellarchat-export", "version": 1, "conversations": []}',
            "holds no conversations",
        ),
        (
            b'{"format": "stellarchat-export", "version": 1, "conversations": [{"id": "no"}]}',
            "Conversation 1 has no valid “id”",
        ),
    ],
)
def test_a_file_of_the_wrong_shape_is_named(
    owner_client: Client, data: bytes, message: str
) -> None:
    assert message in refused(owner_client, "conversations.json", data)


def test_a_bad_message_in_our_export_refuses_the_whole_file(owner_client: Client) -> None:
    document = support.fixture_json("stellarchat_export.json")
    document["conversations"][1]["messages"][1]["role"] = "wizard"
    message = refused(owner_client, "export.json", json.dumps(document).encode())
    assert "Conversation 2 has a message without a valid id, position or role." in message


def test_too_many_conversations_is_refused(
    owner_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reading, "MAX_CONVERSATIONS", 2)
    assert "conversations.json holds more than 2 conversations" in refused(
        owner_client, "conversations.json", GOOD
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            '[{"title": "Café", "mapping": {}}]'.encode("latin-1"),
            "conversations.json is not UTF-8 text (byte 0xE9 at position 15)",
        ),
        ("[]".encode("utf-16"), "conversations.json is UTF-16 text, not UTF-8"),
        (GOOD.decode().encode("utf-16-le"), "conversations.json is UTF-16 text, not UTF-8"),
        (GOOD.decode().encode("utf-32"), "conversations.json is UTF-32 text, not UTF-8"),
        (b"[\xff\xfe]", "is not UTF-8 text (byte 0xFF at position 1)"),
    ],
    ids=["latin-1", "utf-16-bom", "utf-16-no-bom", "utf-32", "garbage"],
)
def test_text_that_is_not_utf8_is_named(owner_client: Client, data: bytes, message: str) -> None:
    assert message in refused(owner_client, "conversations.json", data)


def test_a_utf8_byte_order_mark_is_fine(owner: Any, owner_client: Client) -> None:
    job = support.import_file(owner_client, owner, "c.json", b"\xef\xbb\xbf" + GOOD)
    assert job.imported == 2


def bomb(size: int) -> bytes:
    """A ZIP whose conversations.json inflates to ``size`` bytes from a few kilobytes."""
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("conversations.json", "w", force_zip64=True) as member,
    ):
        member.write(b"[")
        chunk = b" " * 1_000_000
        for _ in range(size // len(chunk)):
            member.write(chunk)
        member.write(b"]")
    return buffer.getvalue()


def test_a_zip_bomb_is_refused_by_its_declared_size(owner_client: Client, settings: Any) -> None:
    settings.STELLARCHAT_IMPORT_MAX_MB = 1
    data = bomb(200_000_000)
    assert len(data) < 1_000_000  # 200 MB in a file that passes the upload limit
    assert "conversations.json in the ZIP is larger than 4 MB once unpacked" in refused(
        owner_client, "export.zip", data
    )


def lie_about_size(data: bytes, claimed: int) -> bytes:
    """The ZIP with its member's uncompressed size rewritten to ``claimed`` in both headers
    (the bytes inflate to far more)."""
    out = bytearray(data)
    local = out.find(b"PK\x03\x04")
    central = out.find(b"PK\x01\x02")
    struct.pack_into("<I", out, local + 22, claimed)
    struct.pack_into("<I", out, central + 24, claimed)
    return bytes(out)


def test_a_zip_bomb_with_a_lying_header_is_stopped(owner_client: Client, settings: Any) -> None:
    settings.STELLARCHAT_IMPORT_MAX_MB = 1
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("conversations.json", b"[" + b" " * 50_000_000 + b"]")
    data = lie_about_size(buffer.getvalue(), 1000)
    message = refused(owner_client, "export.zip", data)
    assert "The ZIP file is damaged or incomplete." in message  # never read past its claim


def test_reading_stops_past_the_limit_whatever_the_header_says(settings: Any) -> None:
    """The counting stream itself: a member that yields more than the limit is cut off."""
    source = reading.Source(
        open=lambda: io.BytesIO(b"[" + b" " * 2_000_000 + b"]"),
        name="m",
        limit=1_500_000,
        zipped=True,
    )
    with pytest.raises(common.ImportRefused, match="m is larger than 1.5 MB once unpacked"):
        reading.scan(source)


@pytest.mark.parametrize(
    "member", ["../../etc/cron.d/evil", "/etc/passwd", "chats/../../../x.json", "C:\\Windows\\x"]
)
def test_a_zip_with_a_path_outside_it_is_refused(owner_client: Client, member: str) -> None:
    data = support.zipped({"conversations.json": GOOD, member: b"owned"})
    message = refused(owner_client, "export.zip", data)
    assert "The ZIP holds a file whose path leads outside it" in message
    assert member in message


def test_a_zip_without_conversations_is_named(owner_client: Client) -> None:
    data = support.zipped({"chat.html": b"<html></html>", "a.json": b"[]", "b.json": b"[]"})
    assert "The ZIP holds no conversations.json" in refused(owner_client, "export.zip", data)


def test_a_damaged_zip_is_named(owner_client: Client) -> None:
    data = support.chatgpt_zip()
    assert "The ZIP file is damaged or incomplete." in refused(
        owner_client, "export.zip", data[: len(data) // 2]
    )
    broken = bytearray(support.zipped({"conversations.json": GOOD * 3}))
    middle = broken.find(b"PK\x03\x04") + 30 + len("conversations.json") + 200
    broken[middle : middle + 50] = bytes(50)  # the deflated stream garbled
    assert "The ZIP file is damaged or incomplete." in refused(
        owner_client, "export.zip", bytes(broken)
    )


def test_a_zip_listing_too_many_files_is_refused_before_it_is_read(
    owner_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reading, "MAX_ZIP_MEMBERS", 10)
    members = {f"file-{i}.png": b"x" for i in range(11)}
    data = support.zipped({**members, "conversations.json": GOOD})
    assert "The ZIP holds more than 10 files" in refused(owner_client, "export.zip", data)


def test_no_file_at_all(owner_client: Client) -> None:
    response = owner_client.post(support.PAGE, {})
    assert response.status_code == 400
    assert "This field is required." in response.content.decode()
    assert not ImportJob.objects.exists()


def test_an_upload_without_the_csrf_token_is_refused(owner: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    assert support.upload(client, "c.json", GOOD).status_code == 403
    assert not ImportJob.objects.exists()
