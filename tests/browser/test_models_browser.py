"""Picking a model in real Chromium against a live daphne serving two models from a models
file: the bundled model (the default) and the test backend's echo. The picker says what each
is, a reply says which model wrote it, a conversation keeps its model and switches on
request, and Settings hold a person's default model for new chats."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import serving_models, shot, sign_up, watch
from tests.browser.test_chat_ui import send, wait_done

pytestmark = pytest.mark.slow

MODELS = """
default = "mini"
[models.mini]
label = "StellarByte mini"
backend = "transformers"
path = "inference/bundled/stellarbyte-mini"
description = "The small model that ships with StellarChat."
[models.echo]
label = "Echo"
backend = "test"
description = "Repeats what you say."
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from serving_models(tmp_path_factory, MODELS)


@pytest.fixture
def page(browser: Any, live: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = watch(context.new_page())
    sign_up(page, live.url, "picker", online=True)
    yield page
    assert not page.problems, page.problems
    context.close()


def replies(page: Any) -> list[tuple[str, str]]:
    """(who wrote it, its text) of every reply on the page."""
    found = page.eval_on_selector_all(
        ".message-assistant",
        "els => els.map(e => [e.querySelector('.message-role').textContent.trim(),"
        " e.querySelector('.message-body').textContent.trim()])",
    )
    return [(who, text) for who, text in found]


def test_pick_a_model_switch_mid_conversation_and_see_who_wrote_each_reply(
    page: Any, live: Any
) -> None:
    picker = page.locator("#model-picker")
    assert picker.input_value() == "mini"  # the server's default
    labels = page.eval_on_selector_all("#model-picker option", "os => os.map(o => o.textContent)")
    assert labels == ["StellarByte mini", "Echo"]
    assert "ships with StellarChat" in page.text_content("#model-description")

    picker.select_option("echo")
    assert page.text_content("#model-description") == "Repeats what you say."
    send(page, "hello there")
    wait_done(page)
    assert replies(page) == [("Echo", "You said: hello there (turn 1)")]
    shot(page, "models-echo-reply")

    picker.select_option("mini")  # the same conversation, the next turn by the bundled model
    send(page, "And what do you say?")
    page.wait_for_function("() => document.querySelectorAll('.message-assistant').length === 2")
    wait_done(page, timeout=60_000)
    (first, second) = replies(page)
    assert first[0] == "Echo" and second[0] == "StellarByte mini"
    assert second[1] and not second[1].startswith("You said")
    shot(page, "models-switched")

    page.reload()  # the page as the server renders it: the conversation's model, each label
    page.wait_for_selector("#connection[data-state=online]")
    assert page.locator("#model-picker").input_value() == "mini"
    assert [who for who, _ in replies(page)] == ["Echo", "StellarByte mini"]


def test_settings_hold_a_default_model_for_new_chats(page: Any, live: Any) -> None:
    page.goto(live.url + "/settings/")
    options = page.eval_on_selector_all(
        "#id_default_model option", "os => os.map(o => o.textContent)"
    )
    assert options == ["The server's default", "StellarByte mini", "Echo"]
    page.select_option("#id_default_model", "echo")
    page.click("button[type=submit]")
    page.wait_for_selector(".messages, [role=status]", timeout=10_000)
    shot(page, "models-settings")
    page.goto(live.url + "/")
    page.wait_for_selector("#connection[data-state=online]")
    assert page.locator("#model-picker").input_value() == "echo"
    send(page, "hi")
    wait_done(page)
    assert replies(page) == [("Echo", "You said: hi (turn 1)")]


def test_the_picker_at_phone_width(browser: Any, live: Any, page: Any) -> None:
    page.set_viewport_size({"width": 390, "height": 800})
    page.reload()
    page.wait_for_selector("#connection[data-state=online]")
    box = page.locator("#model-picker").bounding_box()
    assert box is not None and box["x"] + box["width"] <= 390
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # no sideways scroll
    shot(page, "models-phone")


def test_a_switch_made_in_one_tab_shows_in_the_other(page: Any, live: Any) -> None:
    send(page, "first")
    wait_done(page, timeout=60_000)
    other = page.context.new_page()  # the same person, the same conversation, a second tab
    other.goto(page.url)
    other.wait_for_selector("#connection[data-state=online]")
    assert other.locator("#model-picker").input_value() == "mini"
    page.locator("#model-picker").select_option("echo")
    send(page, "second")
    other.wait_for_function(
        "() => document.querySelector('#model-picker').value === 'echo'", timeout=20_000
    )
    assert other.text_content("#model-description") == "Repeats what you say."
    wait_done(other)
    assert [who for who, _ in replies(other)] == ["StellarByte mini", "Echo"]
