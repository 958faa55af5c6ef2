"""The chat UI as a person uses it, in real headless Chromium against a live server."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.browser.conftest import manage_shell, shot, sign_up

pytestmark = pytest.mark.slow


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


@pytest.fixture
def page(browser: Any, live: Any) -> Any:
    """A fresh browser context, signed up as a new person, on the chat home page."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.problems = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: page.problems.append(f"pageerror: {e}"))
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.accept_dialogs = False  # type: ignore[attr-defined]

    def on_dialog(dialog: Any) -> None:
        if page.accept_dialogs:
            dialog.accept()
        else:  # an unexpected alert() is exactly what an injected script would do
            page.problems.append(f"dialog: {dialog.message}")
            dialog.dismiss()

    page.on("dialog", on_dialog)
    sign_up(page, live.url, online=True)
    yield page
    context.close()


def send(page: Any, text: str) -> None:
    page.fill("#composer-input", text)
    page.press("#composer-input", "Enter")


def last_reply(page: Any) -> Any:
    return page.locator(".message-assistant").last


def wait_done(page: Any, timeout: float = 20_000) -> None:
    page.wait_for_selector(".message-assistant.status-streaming", state="detached", timeout=timeout)
    page.wait_for_function(
        "() => { const m = [...document.querySelectorAll('.message-assistant')].pop();"
        " return m && !m.classList.contains('status-streaming')"
        " && m.querySelector('.message-actions'); }",
        timeout=timeout,
    )


def test_a_new_chat_in_one_tab_does_not_take_over_another_tab(page: Any, live: Any) -> None:
    other = page.context.new_page()  # the same person, a second tab on an empty "new chat"
    other.goto(live.url + "/")
    other.wait_for_selector("#connection[data-state=online]")
    send(page, "First tab's question")
    wait_done(page)
    other.wait_for_selector(".conversation-item:has-text('First tab')")  # its sidebar hears
    assert other.url == live.url + "/" and other.locator(".message").count() == 0
    send(other, "Second tab's question")
    wait_done(other)
    assert "Second tab's question" in other.locator(".message-user").last.inner_text()
    assert other.url != page.url and "/c/" in other.url
    assert other.locator(".message-user").count() == 1 and not page.problems  # type: ignore[attr-defined]


def test_send_watch_it_grow_stop_regenerate_edit(page: Any, live: Any) -> None:
    send(page, "[[long 120]]")
    page.wait_for_selector(".message-assistant.status-streaming")
    lengths = []
    for _ in range(6):
        lengths.append(len(last_reply(page).inner_text()))
        time.sleep(0.25)
    assert len(set(lengths)) >= 3 and lengths == sorted(lengths), lengths  # it grew in steps
    assert page.is_visible("#stop") and not page.is_visible("#send")
    shot(page, "streaming")
    page.click("#stop")
    wait_done(page)
    reply = last_reply(page)
    assert "Stopped." in reply.inner_text()
    assert 0 < len(reply.locator(".message-body").inner_text().split()) < 120
    assert page.is_visible("#send") and not page.is_visible("#stop")
    assert "/c/" in page.url  # the new conversation got its own address

    page.click(".message-list > .message-assistant:last-child [data-regenerate]")
    page.wait_for_selector(".message-assistant.status-streaming")
    wait_done(page, timeout=30_000)
    assert last_reply(page).locator(".message-body").inner_text().strip() == words(120)
    assert page.locator(".message-assistant").count() == 1  # the old version left the thread

    page.click(".message-user [data-edit]")
    page.fill(".edit-form textarea", "edited question")
    page.click(".edit-form button[type=submit]")
    page.wait_for_function(
        "() => document.querySelector('.message-user .message-body').innerText.includes('edited')"
    )
    wait_done(page)
    assert last_reply(page).locator(".message-body").inner_text().strip() == (
        "You said: edited question (turn 1)"
    )
    assert page.locator(".message").count() == 2
    meta = last_reply(page).locator(".meta").inner_text()
    assert "tokens" in meta and "tokens/s" in meta
    assert page.problems == []


def test_enter_sends_shift_enter_adds_a_line(page: Any) -> None:
    page.fill("#composer-input", "line one")
    page.press("#composer-input", "Shift+Enter")
    page.type("#composer-input", "line two")
    assert page.input_value("#composer-input") == "line one\nline two"
    page.press("#composer-input", "Enter")
    wait_done(page)
    assert page.input_value("#composer-input") == ""
    assert "line one\nline two" in page.locator(".message-user .plain").inner_text()


def test_thumbs_are_saved(page: Any) -> None:
    send(page, "rate me")
    wait_done(page)
    up = last_reply(page).locator("button[aria-label='Good reply']")
    up.click()
    page.wait_for_selector(".message-assistant button[aria-label='Good reply'][aria-pressed=true]")
    page.reload()
    assert (
        last_reply(page).locator("button[aria-label='Good reply']").get_attribute("aria-pressed")
        == "true"
    )
    last_reply(page).locator("button[aria-label='Bad reply']").click()
    page.wait_for_selector(".message-assistant button[aria-label='Bad reply'][aria-pressed=true]")
    assert (
        last_reply(page).locator("button[aria-label='Good reply']").get_attribute("aria-pressed")
        == "false"
    )


def test_sidebar_title_rename_pin_archive_delete_search(page: Any, live: Any) -> None:
    send(page, "Nebulae and star nurseries")
    wait_done(page)
    page.wait_for_selector(
        "#conversation-title:has-text('Nebulae and star nurseries')"
    )  # live title
    first_url = page.url
    page.click(".sidebar .new-chat")
    send(page, "Comets")
    wait_done(page)
    items = page.locator(".conversation-item")
    assert items.count() == 2 and "Comets" in items.first.inner_text()

    nebula = page.locator(".conversation-item", has_text="Nebulae")
    nebula.locator("summary").click()
    nebula.locator("input[name=title]").fill("Star factories")
    nebula.locator("button:has-text('Rename')").click()
    page.wait_for_selector(".conversation-item:has-text('Star factories')")
    page.locator(".conversation-item", has_text="Star factories").locator("summary").click()
    page.locator(".conversation-item", has_text="Star factories").locator(
        "button:has-text('Pin')"
    ).click()
    page.wait_for_selector(".conversation-item.is-pinned:has-text('Star factories')")
    page.reload()
    assert "Star factories" in page.locator(".conversation-item").first.inner_text()  # pinned first
    assert page.locator(".group-label").first.inner_text().lower() == "pinned"

    page.fill("#search", "comets")
    page.wait_for_function("() => document.querySelectorAll('.conversation-item').length === 1")
    assert "Comets" in page.locator(".conversation-item").inner_text()
    page.fill("#search", "star nurseries")  # matches message text, not the title
    page.wait_for_selector(".conversation-item:has-text('Star factories')")
    page.fill("#search", "")
    page.wait_for_function("() => document.querySelectorAll('.conversation-item').length === 2")

    comets = page.locator(".conversation-item", has_text="Comets")
    comets.locator("summary").click()
    comets.locator("button:has-text('Archive')").click()
    page.wait_for_function("() => document.querySelectorAll('.conversation-item').length === 1")
    page.click(".sidebar-foot a:has-text('Archive')")
    page.wait_for_selector(".conversation-item:has-text('Comets')")
    assert page.locator(".conversation-item").count() == 1

    page.goto(first_url)
    starred = page.locator(".conversation-item", has_text="Star factories")
    starred.locator("summary").click()
    page.accept_dialogs = True  # the delete confirmation
    starred.locator("button:has-text('Delete')").click()
    page.wait_for_url(live.url + "/")
    assert page.locator(".conversation-item").count() == 0  # Comets is archived


def test_reload_mid_reply_shows_the_text_so_far_and_continues(page: Any) -> None:
    send(page, "[[long 150]]")
    page.wait_for_function(
        "() => { const m = document.querySelector('.message-assistant');"
        " return m && m.innerText.includes('w20'); }"
    )
    page.reload()
    page.wait_for_selector("#connection[data-state=online]")
    page.wait_for_selector(".message-assistant.status-streaming")
    assert "w10" in last_reply(page).inner_text()  # the text so far, at once
    wait_done(page, timeout=30_000)
    assert last_reply(page).locator(".message-body").inner_text().strip() == words(150)


def test_two_tabs_stay_in_step(page: Any, browser: Any) -> None:
    send(page, "first")
    wait_done(page)
    other = page.context.new_page()
    other.goto(page.url)
    other.wait_for_selector("#connection[data-state=online]")
    send(page, "[[long 60]]")
    other.wait_for_selector(".message-assistant.status-streaming")
    other.wait_for_selector(".message-user:has-text('[[long 60]]')")
    wait_done(other)
    assert last_reply(other).locator(".message-body").inner_text().strip() == words(60)
    other.close()


def test_dropped_socket_reconnects_with_a_visible_status(page: Any) -> None:
    page.context.set_offline(True)
    page.evaluate("() => window.dispatchEvent(new Event('offline'))")
    # Kill the socket from the page's side the way a network drop would.
    page.evaluate("() => htmx.find('#app')['htmx-internal-data'].webSocket.socket.close(4000)")
    page.wait_for_selector("#connection[data-state=offline]")
    assert "reconnecting" in page.inner_text("#connection").lower()
    page.context.set_offline(False)
    page.wait_for_selector("#connection[data-state=online]", timeout=15_000)
    send(page, "after the drop")
    wait_done(page)
    assert "after the drop" in last_reply(page).inner_text()


def test_hostile_user_text_and_model_output_stay_inert(page: Any) -> None:
    payloads = [
        "<script>window.__pwned = 1</script>",
        '<img src=x onerror="window.__pwned = 2">',
        "[click me](javascript:window.__pwned=3)",
        '<svg onload="window.__pwned=4"></svg>',
        '<a href="javascript:window.__pwned=5">x</a>',
        '```"><script>window.__pwned=6</script>\ncode\n```',
    ]
    send(page, "\n\n".join(payloads))
    wait_done(page)
    for link in page.locator(".message-list a", has_text="click me").all():
        link.click()  # whatever survived sanitizing, clicking it must not run anything
    assert page.evaluate("() => window.__pwned") is None
    assert (
        page.locator(
            ".message-body script, .message-body img, .message-body svg, .message-body iframe"
        ).count()
        == 0
    )
    hrefs = page.eval_on_selector_all(
        ".message-list a", "els => els.map(e => e.getAttribute('href'))"
    )
    assert all(not (h or "").lower().startswith("javascript") for h in hrefs)
    handlers = page.evaluate(
        "() => [...document.querySelectorAll('.message-list *')]"
        ".flatMap(e => [...e.attributes].map(a => a.name)).filter(n => n.startsWith('on'))"
    )
    assert handlers == []
    assert "window.__pwned = 1" in page.locator(".message-user").inner_text()  # shown as text
    assert page.problems == []


def test_themes_are_saved_and_applied_without_a_flash(page: Any, live: Any) -> None:
    send(
        page,
        "Show me *markdown*:\n\n```python\nprint('hi')\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |",
    )
    wait_done(page)
    conversation = page.url
    assert page.get_attribute("html", "data-theme") is None  # follows prefers-color-scheme
    for theme in ("light", "dark", "stellar"):
        page.goto(live.url + "/settings/")
        page.select_option("#id_theme", theme)
        page.click("button[type=submit]")
        page.wait_for_url(live.url + "/settings/")
        page.goto(conversation)
        # Server-rendered: the attribute is in the HTML before any script runs.
        html = page.context.request.get(conversation).text()
        assert f'data-theme="{theme}"' in html.split(">", 2)[1]
        assert page.get_attribute("html", "data-theme") == theme
        page.wait_for_selector(".code-block")
        shot(page, f"theme-{theme}")
    bg = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    page.reload()
    assert page.evaluate("() => getComputedStyle(document.body).backgroundColor") == bg


def test_the_system_preference_decides_by_default(browser: Any, live: Any, page: Any) -> None:
    dark = browser.new_context(color_scheme="dark", storage_state=page.context.storage_state())
    tab = dark.new_page()
    tab.goto(live.url + "/")
    assert (
        tab.evaluate("() => getComputedStyle(document.body).backgroundColor") == "rgb(18, 19, 25)"
    )
    dark.close()


def test_language_switch(page: Any) -> None:
    page.select_option("#language", "zh-hans")
    page.wait_for_selector("html[lang=zh-hans]")
    assert "新对话" in page.inner_text(".sidebar")
    assert page.get_attribute("#composer-input", "placeholder").startswith("给 StellarChat 发消息")
    shot(page, "language-zh-hans")
    page.reload()
    assert page.get_attribute("html", "lang") == "zh-hans"  # kept
    page.select_option("#language", "en")
    page.wait_for_selector("html[lang=en]")
    assert "New chat" in page.inner_text(".sidebar")


def test_phone_width_drawer_and_no_sideways_scroll(browser: Any, live: Any, page: Any) -> None:
    send(
        page,
        "a " + "x" * 500 + " long word and a table\n\n| a | b | c |\n|---|---|---|\n| 1 | 2 | 3 |",
    )
    wait_done(page)
    phone = browser.new_context(
        viewport={"width": 390, "height": 844}, storage_state=page.context.storage_state()
    )
    tab = phone.new_page()
    tab.goto(page.url)
    tab.wait_for_selector(".message-assistant")
    assert tab.evaluate("() => document.documentElement.scrollWidth") <= 390
    assert not tab.is_visible("#sidebar .new-chat")
    toggle = tab.locator("[data-toggle-drawer]")
    assert toggle.get_attribute("aria-expanded") == "false"
    toggle.click()
    tab.wait_for_selector("#sidebar .new-chat", state="visible")
    assert toggle.get_attribute("aria-expanded") == "true"
    shot(tab, "phone-drawer")
    tab.keyboard.press("Escape")
    tab.wait_for_selector("#sidebar .new-chat", state="hidden")
    shot(tab, "phone")
    phone.close()


def test_long_conversation_opens_with_the_newest_and_pages_in_older(page: Any, live: Any) -> None:
    code = f"""
from django.contrib.auth import get_user_model
from chat import services
from chat.models import Message, Conversation
owner = get_user_model().objects.get(username="{page.username}")
c = services.conversation_create(owner=owner, title="Two thousand")
Message.objects.bulk_create([
    Message(conversation=c, position=i, role="user" if i % 2 == 0 else "assistant",
            content=f"message number {{i}}") for i in range(2000)])
Conversation.objects.filter(pk=c.pk).update(next_position=2000)
print(c.pk)
"""
    conversation = manage_shell(live.env, code).strip()
    started = time.monotonic()
    response = page.context.request.get(f"{live.url}/c/{conversation}/")
    assert response.status == 200
    assert len(response.body()) < 200_000
    page.goto(f"{live.url}/c/{conversation}/")
    assert time.monotonic() - started < 30  # generous: a sanity bound, not a benchmark
    assert page.locator(".message").count() == 50
    assert "message number 1999" in page.locator(".message").last.inner_text()
    page.locator("[data-older]").scroll_into_view_if_needed()
    page.wait_for_function("() => document.querySelectorAll('.message').length === 100")
    assert "message number 1900" in page.locator(".message").nth(0).inner_text()


def test_every_control_is_labelled(page: Any) -> None:
    send(page, "label check")
    wait_done(page)
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('button, a, input, textarea, select, summary')]
              .filter(e => e.offsetParent !== null || e.closest('details'))
              .filter(e => !(e.getAttribute('aria-label') || e.textContent.trim() ||
                             (e.id && document.querySelector(`label[for="${e.id}"]`))))
              .map(e => e.outerHTML.slice(0, 80))"""
    )
    assert unlabelled == []
    assert page.get_attribute("#messages", "aria-live") == "polite"
    page.reload()
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.className") == "skip-link"
