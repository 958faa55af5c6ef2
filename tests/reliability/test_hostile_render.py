"""Script payloads stored as user messages, model output and titles are shown as inert text:
the rendered pages parsed (in-process), and one real browser (headless Chromium against a live
daphne) that must see no dialog, no console error and no injected element."""

from __future__ import annotations

import html
from typing import Any

import pytest
from django.test import Client

from chat import services
from chat.models import Conversation
from tests import factories
from tests.browser.conftest import browser, live, shot  # noqa: F401 (fixtures)
from tests.browser.test_chat_ui import page, send, wait_done  # noqa: F401 (fixture)
from tests.reliability import hostile
from tests.reliability.hostile import page_problems

PAYLOADS = [h.value for h in hostile.entries("text", tags={"script"})]
ALL_IN_ONE = "\n\n".join(PAYLOADS)


@pytest.mark.django_db
def test_payloads_stored_as_messages_and_titles_render_inert(
    owner_client: Client, owner: Any
) -> None:
    conversation = factories.make_conversation(owner)
    for payload in PAYLOADS:
        factories.make_message(conversation, role="user", content=payload)
        factories.make_message(conversation, role="assistant", content=f"You said: {payload}")
    factories.make_message(conversation, role="assistant", content=ALL_IN_ONE)
    pages = {}
    for payload in PAYLOADS:
        services.conversation_rename(conversation=conversation, title=payload[:200])
        pages[f"title {payload[:30]}"] = owner_client.get(f"/c/{conversation.pk}/")
        pages[f"sidebar {payload[:30]}"] = owner_client.get("/conversations/", {"q": payload})
    last = conversation.messages.order_by("position").last()
    pages["fragment"] = owner_client.get(f"/c/{conversation.pk}/m/{last.pk}/")
    pages["older"] = owner_client.get(f"/c/{conversation.pk}/older/", {"before": 10**6})
    for name, response in pages.items():
        assert response.status_code == 200, name
        assert page_problems(response.content.decode()) == [], name
    shown = html.unescape(pages["fragment"].content.decode())
    assert "<script>alert('xss-script')</script>" in shown  # there to read, as text
    assert Conversation.objects.get(pk=conversation.pk).messages.count() == 2 * len(PAYLOADS) + 1


INJECTED = """() => [
  ...document.querySelectorAll(
    'script:not([src]), iframe, frame, object, embed, img, style, meta[http-equiv],'
    + ' a[href^="javascript:" i], a[href^="data:" i], [srcdoc]'
  ),
  ...[...document.querySelectorAll('*')].filter(
    (el) => [...el.attributes].some((a) => a.name.startsWith('on'))
  ),
].map((el) => el.outerHTML.slice(0, 120))"""


@pytest.mark.slow
def test_a_browser_shows_the_payloads_as_text_and_runs_none(page: Any, live: Any) -> None:  # noqa: F811
    send(page, ALL_IN_ONE)
    wait_done(page)
    for _ in range(2):  # as streamed, then as the server renders the saved conversation
        assert page.evaluate(INJECTED) == []
        text = page.locator(".message-assistant").last.inner_text()
        assert "<script>alert('xss-script')</script>" in text
        assert "onerror=alert('xss-img')" in text
        page.reload()
        page.wait_for_selector(".message-assistant")
    shot(page, "hostile-payloads")
    assert page.problems == []  # no dialog from alert(), no CSP violation, no script error
