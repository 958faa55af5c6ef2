"""Compare and arena in real Chromium against a live daphne serving three models from a
models file (the bundled model and two of the test backend's): replies side by side on a wide
screen and one above the other on a phone, the vote buttons, the reveal, and the winner alone
in the thread after a reload."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import serving_models, shot, sign_up, watch
from tests.browser.test_chat_ui import send

pytestmark = pytest.mark.slow

MODELS = """
default = "mini"
arena = ["mini", "echo"]
[models.mini]
label = "StellarByte mini"
backend = "transformers"
path = "inference/bundled/stellarbyte-mini"
[models.echo]
label = "Echo"
backend = "test"
[models.parrot]
label = "Parrot"
backend = "test"
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from serving_models(tmp_path_factory, MODELS)


@pytest.fixture
def page(browser: Any, live: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = watch(context.new_page())
    sign_up(page, live.url, "judge", online=True)
    yield page
    assert not page.problems, page.problems
    context.close()


def group_replies(page: Any) -> list[dict[str, Any]]:
    """Each reply of the compare group: who the page says wrote it, its text, its box."""
    return page.eval_on_selector_all(
        ".compare-group .compare-replies > .message",
        "els => els.map(e => { const r = e.getBoundingClientRect(); return {"
        " id: e.dataset.message, who: e.querySelector('.message-role').textContent.trim(),"
        " text: e.querySelector('.message-body').textContent.trim(), x: r.x, y: r.y,"
        " classes: e.className}; })",
    )


def wait_vote_bar(page: Any) -> None:
    page.wait_for_selector(".compare-group .vote-bar", timeout=60_000)


def test_compare_two_models_side_by_side_vote_and_the_winner_continues(page: Any) -> None:
    page.check("#compare-toggle")
    page.check('#compare-models input[value="mini"]')
    page.check('#compare-models input[value="echo"]')
    send(page, "Say something kind")
    wait_vote_bar(page)
    first, second = group_replies(page)
    assert first["who"] == "A StellarByte mini" and second["who"] == "B Echo"
    assert second["text"].startswith("You said: Say something kind")
    assert first["y"] == second["y"] and first["x"] < second["x"]  # side by side
    shot(page, "compare-side-by-side")

    page.click(f'.vote-bar [data-vote="{second["id"]}"]')
    page.wait_for_selector(".vote-result")
    assert "preferred reply B" in page.text_content(".vote-result")
    # htmx settles a swapped element's attributes 20 ms after its content: the class comes last.
    page.wait_for_selector(f"#m-{second['id']}.is-winner", timeout=5_000)
    assert "is-winner" in group_replies(page)[1]["classes"]
    shot(page, "compare-voted")

    page.reload()  # the winner alone continues the thread
    page.wait_for_selector("#connection[data-state=online]")
    whos = page.eval_on_selector_all(
        ".message-assistant .message-role", "els => els.map(e => e.textContent.trim())"
    )
    assert whos == ["B Echo"]
    assert not page.query_selector(".vote-bar")


def test_the_arena_hides_the_models_until_the_vote(page: Any) -> None:
    page.check("#arena-toggle")
    send(page, "Who are you?")
    wait_vote_bar(page)
    labels = sorted(r["who"] for r in group_replies(page))
    assert labels == ["Model A", "Model B"]
    # Every attribute and label of the thread, the replies' own texts left out (the bundled
    # model introduces itself by name: that is the model talking, not the page).
    thread = page.evaluate(
        "() => { const c = document.querySelector('#messages').cloneNode(true);"
        " c.querySelectorAll('.message-body').forEach(b => b.remove()); return c.outerHTML; }"
    )
    for name in ("mini", "echo", "StellarByte", "Echo"):
        assert name not in thread, name
    shot(page, "arena-blind")

    page.click('.vote-bar [data-vote="tie"]')
    page.wait_for_selector(".vote-result")
    revealed = sorted(r["who"] for r in group_replies(page))
    assert revealed == sorted(["A StellarByte mini", "B Echo"]) or revealed == sorted(
        ["A Echo", "B StellarByte mini"]
    )
    assert "tie" in page.text_content(".vote-result")
    shot(page, "arena-revealed")


def test_compare_three_models_on_a_phone_stacks_the_replies(page: Any) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    page.wait_for_selector("#connection[data-state=online]")
    page.check("#compare-toggle")
    for name in ("mini", "echo", "parrot"):
        page.check(f'#compare-models input[value="{name}"]')
    send(page, "Three at once")
    wait_vote_bar(page)
    replies = group_replies(page)
    assert len(replies) == 3
    assert replies[0]["y"] < replies[1]["y"] < replies[2]["y"]  # one above the other
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scroll
    page.locator(".vote-bar").scroll_into_view_if_needed()
    shot(page, "compare-phone")


def test_compare_asks_for_two_models(page: Any) -> None:
    page.check("#compare-toggle")
    page.check('#compare-models input[value="echo"]')
    send(page, "only one picked")
    page.wait_for_selector("#composer-error:not([hidden])")
    assert "two or three" in page.text_content("#composer-error")
    assert page.input_value("#composer-input") == "only one picked"  # nothing lost
