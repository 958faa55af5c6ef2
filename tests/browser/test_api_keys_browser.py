"""The API keys page as a person uses it, in real headless Chromium against a live server:
settings → API keys, create (the key shown once, copied), it authenticates, revoke; with and
without JavaScript, in every theme and at phone width."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.conftest import manage_shell, shot, sign_up

pytestmark = pytest.mark.slow

KEY_RE = re.compile(r"sc_[a-z0-9]{8}_[A-Za-z0-9]{40}")


def watch(page: Any) -> None:
    """Collect script errors, CSP reports (console errors) and unexpected dialogs."""
    page.problems = []
    page.on("pageerror", lambda e: page.problems.append(f"pageerror: {e}"))
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.accept_dialogs = False
    page.dialogs = []

    def on_dialog(dialog: Any) -> None:
        page.dialogs.append(dialog.message)
        if page.accept_dialogs:
            dialog.accept()
        else:
            page.problems.append(f"dialog: {dialog.message}")
            dialog.dismiss()

    page.on("dialog", on_dialog)


@pytest.fixture
def page(browser: Any, live: Any) -> Any:
    """A fresh browser context (clipboard allowed), signed up as a new person."""
    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live.url)
    page = context.new_page()
    watch(page)
    sign_up(page, live.url, "keyholder")
    yield page
    context.close()


def authenticated_name(live: Any, key: str) -> str:
    code = f"from api import keys\nk = keys.authenticate({key!r})\nprint(k.name if k else 'NONE')"
    return manage_shell(live.env, code).strip()


def set_theme(page: Any, live: Any, theme: str) -> None:
    page.goto(live.url + "/settings/")
    page.select_option("#id_theme", theme)
    page.click("button[type=submit]")
    page.wait_for_url(live.url + "/settings/")


def create_key(page: Any, name: str, *, store: bool = True) -> str:
    page.fill("#id_name", name)
    if not store:
        page.uncheck("#id_store_conversations")
    rows = page.locator(".key-row").count()
    page.click(".key-create button[type=submit]")
    page.wait_for_function(f"() => document.querySelectorAll('.key-row').length === {rows + 1}")
    page.wait_for_selector("#new-key")
    key = page.inner_text("#new-key").strip()
    assert KEY_RE.fullmatch(key), key
    return key


def test_create_copy_use_and_revoke_a_key(page: Any, live: Any) -> None:
    set_theme(page, live, "light")
    page.click("a[href='/settings/api-keys/']")
    page.wait_for_url(live.url + "/settings/api-keys/")
    assert page.inner_text("h2") == "API keys"
    assert "No keys yet." in page.inner_text("main")
    assert f"{live.url}/v1" in page.inner_text(".key-howto")

    key = create_key(page, "browser <b>key</b>")
    assert page.url == live.url + "/settings/api-keys/"  # htmx swapped it in; the URL holds no key
    assert "it will not be shown again" in page.inner_text(".key-reveal")
    assert page.locator(".key-row").count() == 1
    assert "browser <b>key</b>" in page.inner_text(".key-row .key-name")  # shown as text
    assert authenticated_name(live, key) == "browser <b>key</b>"

    page.click(".copy-key")
    page.wait_for_function("() => document.querySelector('.copy-key').textContent === 'Copied'")
    assert page.evaluate("() => navigator.clipboard.readText()") == key
    shot(page, "api-keys-light")

    page.reload()
    assert page.locator("#new-key").count() == 0
    assert key not in page.content()
    assert key.rsplit("_", 1)[0] + "…" in page.inner_text(".key-row .key-prefix")

    page.accept_dialogs = True
    page.click(".key-row .key-actions .btn-danger")
    page.wait_for_selector(".key-row.is-revoked")
    assert "Revoke “browser <b>key</b>”?" in page.dialogs[-1]
    assert authenticated_name(live, key) == "NONE"
    assert "Revoked" in page.inner_text(".key-row")
    shot(page, "api-keys-revoked-light")
    assert page.problems == []


@pytest.mark.parametrize("theme", ["dark", "stellar"])
def test_the_page_in_dark_themes(page: Any, live: Any, theme: str) -> None:
    set_theme(page, live, theme)
    page.goto(live.url + "/settings/api-keys/")
    create_key(page, "kept key")
    create_key(page, "private key", store=False)
    assert page.get_attribute("html", "data-theme") == theme
    rows = page.locator(".key-row")
    assert rows.count() == 2
    assert "not stored" in rows.nth(0).inner_text()
    page.click("#key-" + rows.nth(0).get_attribute("id").split("-")[1] + " .key-actions .btn")
    page.wait_for_function(
        "() => document.querySelector('.key-row').innerText.includes('Stop storing')"
    )
    shot(page, f"api-keys-{theme}")
    assert page.problems == []


def test_it_works_without_javascript(browser: Any, live: Any) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, java_script_enabled=False)
    page = context.new_page()
    watch(page)
    sign_up(page, live.url, "keyholder")
    page.goto(live.url + "/settings/api-keys/")
    key = create_key(page, "no script")
    assert not page.is_visible(".copy-key")  # a button that could do nothing is hidden
    assert authenticated_name(live, key) == "no script"
    shot(page, "api-keys-phone-no-js")
    page.click(".key-row .key-actions .btn-danger")
    page.wait_for_selector(".key-confirm")
    assert authenticated_name(live, key) == "no script"  # asked first
    page.click(".key-confirm .btn-danger")
    page.wait_for_url(live.url + "/settings/api-keys/")
    page.wait_for_selector(".key-row.is-revoked")
    assert authenticated_name(live, key) == "NONE"
    assert page.problems == []
    context.close()


def test_no_sideways_scroll_at_phone_width(browser: Any, live: Any, page: Any) -> None:
    phone = browser.new_context(
        viewport={"width": 390, "height": 844}, storage_state=page.context.storage_state()
    )
    tab = phone.new_page()
    watch(tab)
    tab.goto(live.url + "/settings/api-keys/")
    create_key(tab, "a-name-without-any-spaces-" + "x" * 70)
    assert tab.evaluate("() => document.documentElement.scrollWidth") <= 390
    shot(tab, "api-keys-phone")
    assert tab.problems == []
    phone.close()
