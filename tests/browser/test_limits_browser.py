"""The socket limits as a person meets them, in real headless Chromium: one tab too many says
so plainly, and a socket the server closes (1008) comes back by itself and catches up with the
reply that went on streaming meanwhile."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import PASSWORD, shot
from tests.browser.test_chat_ui import last_reply, send, wait_done, words
from tests.e2e import livedaphne

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    env = {
        "DJANGO_DEBUG": "1",
        "STELLARCHAT_DATA_DIR": str(tmp_path_factory.mktemp("browser-limits")),
        "STELLARCHAT_BACKEND": "test",
        "STELLARCHAT_TEST_BACKEND_DELAY_MS": "40",
        "STELLARCHAT_MAX_SOCKETS_PER_USER": "2",
    }
    with livedaphne.daphne(env) as server:
        yield server


def signed_up(browser: Any, base: str, name: str) -> Any:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.goto(base + "/accounts/signup/")
    page.fill("#id_username", name)
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")
    page.wait_for_selector("#connection[data-state=online]")
    return page


def test_one_tab_too_many_says_so_and_the_others_go_on(browser: Any, limited: Any) -> None:
    first = signed_up(browser, limited.url, "tabby")
    second = first.context.new_page()
    second.goto(limited.url + "/")
    second.wait_for_selector("#connection[data-state=online]")
    third = first.context.new_page()
    third.goto(limited.url + "/")
    third.wait_for_selector("#connection[data-state=crowded]", timeout=10_000)
    assert third.inner_text("#connection") == "Too many tabs open"
    assert "too many StellarChat tabs" in third.inner_text("#composer-error")
    shot(third, "limits-too-many-tabs")
    send(first, "the first tab still chats")
    wait_done(first)
    assert "the first tab still chats" in last_reply(first).inner_text()
    first.context.close()


def test_a_socket_closed_for_flooding_reconnects_and_catches_up(browser: Any, limited: Any) -> None:
    page = signed_up(browser, limited.url, "flooder")
    send(page, "[[long 400]]")  # 40 ms a word: 16 s of streaming
    page.wait_for_selector(".message-assistant.status-streaming")
    # A runaway script in the page floods its own socket for 12 s: refused, then closed 1008.
    page.evaluate(
        """() => {
          const ws = htmx.find('#app')['htmx-internal-data'].webSocket;
          const codes = [];
          window.closeCodes = codes;
          ws.socket.addEventListener('close', (e) => codes.push(e.code));
          const frame = JSON.stringify({type: 'chat.subscribe',
            conversation: document.getElementById('app').dataset.conversation});
          const started = Date.now();
          const timer = setInterval(() => {
            if (Date.now() - started > 12000 || ws.socket.readyState !== 1) {
              clearInterval(timer);
              return;
            }
            for (let i = 0; i < 40; i++) ws.send(frame);
          }, 20);
        }"""
    )
    page.wait_for_function("() => window.closeCodes.length > 0", timeout=20_000)
    assert page.evaluate("() => window.closeCodes") == [1008]
    page.wait_for_selector("#connection[data-state=online]", timeout=15_000)
    wait_done(page, timeout=40_000)
    shot(page, "limits-flood-reconnected")
    assert "Too many messages at once" in page.inner_text("#composer-error")
    body = last_reply(page).locator(".message-body").inner_text().strip()
    assert body == words(400)
    page.context.close()
