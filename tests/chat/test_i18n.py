"""Simplified Chinese (zh-hans): the pages follow the browser or the language cookie, and the
committed catalog (locale/zh_Hans/LC_MESSAGES/django.po and its compiled django.mo) is complete
and compiled from the current .po."""

from __future__ import annotations

import ast
import gettext
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.utils import translation

from tests import factories

CATALOG_DIR = Path(settings.BASE_DIR) / "locale" / "zh_Hans" / "LC_MESSAGES"
PO_PATH = CATALOG_DIR / "django.po"
MO_PATH = CATALOG_DIR / "django.mo"

LOGIN_URL = "/accounts/login/"


@pytest.fixture(autouse=True)
def _reset_language() -> Iterator[None]:
    """The locale middleware activates a language on this thread; don't let it leak."""
    yield
    translation.deactivate()


def _zh_client_by_header() -> Client:
    return Client(HTTP_ACCEPT_LANGUAGE="zh-Hans")


def _zh_client_by_cookie() -> Client:
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "zh-hans"
    return client


ZH_CLIENTS = pytest.mark.parametrize(
    "make_client", [_zh_client_by_header, _zh_client_by_cookie], ids=["header", "cookie"]
)


# --- the pages ----------------------------------------------------------------------------


@pytest.mark.django_db
@ZH_CLIENTS
def test_login_page_in_chinese(make_client) -> None:
    html = make_client().get(LOGIN_URL).content.decode()
    assert '<html lang="zh-hans"' in html
    assert "<title>登录 · StellarChat</title>" in html
    assert "跳到主要内容" in html  # the skip link
    assert "用户名" in html  # Django's own catalog, for the form's labels
    assert "Log in" not in html


@pytest.mark.django_db
@ZH_CLIENTS
def test_chat_home_in_chinese(make_client) -> None:
    client = make_client()
    client.force_login(factories.make_user("u"))
    html = client.get("/").content.decode()
    assert '<html lang="zh-hans"' in html
    for text in ("新对话", "发送", "停止", "设置", "归档", "退出登录", "你好，u。"):
        assert text in html, text
    assert "给 StellarChat 发消息…（Enter 发送，Shift+Enter 换行）" in html
    for text in ("New chat", ">Send<", ">Settings<", "Log out"):
        assert text not in html, text


@pytest.mark.django_db
def test_conversation_page_in_chinese() -> None:
    user = factories.make_user("u")
    conversation = factories.make_conversation(user, title="Stars", turns=1)
    client = _zh_client_by_header()
    client.force_login(user)
    html = client.get(f"/c/{conversation.pk}/").content.decode()
    assert "重新生成此回复" in html
    assert "今天" in html  # the sidebar's group label, from Python
    assert "“Stars”的操作" in html  # a blocktranslate variable


@pytest.mark.django_db
def test_login_page_in_english() -> None:
    html = Client(HTTP_ACCEPT_LANGUAGE="en").get(LOGIN_URL).content.decode()
    assert '<html lang="en"' in html
    assert "<title>Log in · StellarChat</title>" in html
    assert "登录" not in html


@pytest.mark.django_db
def test_chat_home_in_english() -> None:
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "en"
    client.force_login(factories.make_user("u"))
    html = client.get("/").content.decode()
    assert '<html lang="en"' in html
    for text in ("New chat", ">Send<", ">Settings<", "Log out", "Hello, u."):
        assert text in html, text
    for text in ("新对话", "发送", "设置"):
        assert text not in html, text


# --- the catalog ---------------------------------------------------------------------------


@dataclass
class Entry:
    msgid: str = ""
    msgid_plural: str | None = None
    msgctxt: str | None = None
    msgstr: dict[int, str] = field(default_factory=dict)  # 0 for a plain msgstr
    flags: set[str] = field(default_factory=set)
    obsolete: bool = False


def parse_po(path: Path) -> list[Entry]:
    """A small .po reader: enough for what makemessages writes (no polib needed)."""
    entries: list[Entry] = []
    entry, key = Entry(), None

    def finish() -> None:
        nonlocal entry, key
        if key is not None:
            entries.append(entry)
        entry, key = Entry(), None

    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line:
            finish()
            continue
        if line.startswith("#~"):
            entry.obsolete = True
            continue
        if line.startswith("#,"):
            if key is not None:
                finish()
            entry.flags.update(flag.strip() for flag in line[2:].split(","))
            continue
        if line.startswith("#"):
            if key is not None:
                finish()
            continue
        match = re.match(r'^(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?)\s+(".*")$', line)
        if match:
            keyword, index, text = match.groups()
            if keyword == "msgid" and key is not None and key != "msgctxt":
                finish()
            key = keyword if index is None else f"msgstr[{index}]"
            value = ast.literal_eval(text)
        else:
            assert line.startswith('"') and key is not None, f"unexpected line: {raw!r}"
            value = ast.literal_eval(line)
        if key == "msgid":
            entry.msgid += value
        elif key == "msgid_plural":
            entry.msgid_plural = (entry.msgid_plural or "") + value
        elif key == "msgctxt":
            entry.msgctxt = (entry.msgctxt or "") + value
        else:
            index = 0 if key == "msgstr" else int(key[7:-1])
            entry.msgstr[index] = entry.msgstr.get(index, "") + value
    finish()
    return entries


def _messages() -> list[Entry]:
    return [e for e in parse_po(PO_PATH) if e.msgid and not e.obsolete]


def test_po_header_is_chinese_with_one_plural_form() -> None:
    header = next(e for e in parse_po(PO_PATH) if e.msgid == "")
    assert "fuzzy" not in header.flags
    assert "Plural-Forms: nplurals=1; plural=0;\n" in header.msgstr[0]
    assert "Content-Type: text/plain; charset=UTF-8\n" in header.msgstr[0]


def test_po_has_no_untranslated_or_fuzzy_entries() -> None:
    messages = _messages()
    assert len(messages) > 50  # the parser really read the catalog
    fuzzy = [e.msgid for e in messages if "fuzzy" in e.flags]
    assert not fuzzy, f"fuzzy entries: {fuzzy}"
    untranslated = [e.msgid for e in messages if not e.msgstr or not all(e.msgstr.values())]
    assert not untranslated, f"untranslated entries: {untranslated}"
    plural_shape = [e.msgid for e in messages if e.msgid_plural and sorted(e.msgstr) != [0]]
    assert not plural_shape, f"Chinese has one plural form, msgstr[0] only: {plural_shape}"
    obsolete = [e.msgid for e in parse_po(PO_PATH) if e.obsolete]
    assert not obsolete, f"obsolete (#~) entries left: {obsolete}"


def test_po_keeps_placeholders_and_the_product_name() -> None:
    placeholder = re.compile(r"%\(\w+\)[sd]|%[sd]|\{\{.*?\}\}")
    for e in _messages():
        for msgstr in e.msgstr.values():
            assert sorted(placeholder.findall(e.msgid)) == sorted(placeholder.findall(msgstr)), (
                e.msgid
            )
            if "StellarChat" in e.msgid:
                assert "StellarChat" in msgstr, e.msgid


def test_mo_is_compiled_from_the_current_po() -> None:
    """What gettext reads from the committed .mo is what the .po says (compilemessages was run)."""
    assert MO_PATH.exists(), "run compilemessages -l zh_Hans"
    with MO_PATH.open("rb") as fp:
        catalog = gettext.GNUTranslations(fp)
    stale = []
    for e in _messages():
        if e.msgid_plural:
            got = [
                catalog.npgettext(e.msgctxt, e.msgid, e.msgid_plural, n)
                if e.msgctxt
                else catalog.ngettext(e.msgid, e.msgid_plural, n)
                for n in (1, 2, 5)
            ]
            if got != [e.msgstr[0]] * 3:
                stale.append(e.msgid)
        else:
            got_one = (
                catalog.pgettext(e.msgctxt, e.msgid) if e.msgctxt else catalog.gettext(e.msgid)
            )
            if got_one != e.msgstr[0]:
                stale.append(e.msgid)
    assert not stale, f"django.mo is older than django.po; run compilemessages. Differs: {stale}"


def test_django_uses_the_project_catalog() -> None:
    # msgids in variables: literal gettext() calls here would be picked up by makemessages.
    new_chat, token, tokens = "New chat", "%(n)s token", "%(n)s tokens"
    with translation.override("zh-hans"):
        assert translation.gettext(new_chat) == "新对话"
        assert translation.ngettext(token, tokens, 3) % {"n": 3} == "3 个 token"
    with translation.override("en"):
        assert translation.gettext(new_chat) == "New chat"
