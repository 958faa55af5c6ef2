"""Settings → Your data in real headless Chromium against a live server: download the export
(Playwright's download, opened with zipfile); delete the account through its form, a wrong
password first, and land logged out, while the person's other open chat tab is closed with
4403 and goes to the login page instead of reconnecting."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import PASSWORD, manage_shell, shot, sign_up, watch

pytestmark = pytest.mark.slow


SEED = """
from django.contrib.auth import get_user_model
from chat import services
user = get_user_model().objects.get(username={name!r})
for title, question in [("Trip to 北京 / ../../x", "Where first?"), ("Recipes", "Soup?")]:
    c = services.conversation_create(owner=user, title=title)
    services.message_append(conversation=c, role="user", content=question)
    services.message_append(conversation=c, role="assistant", content="An answer.",
                            model_name="demo")
"""


@pytest.fixture
def page(browser: Any, live: Any) -> Any:
    """A fresh browser context (downloads allowed), signed up as a new person."""
    context = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
    page = watch(context.new_page())
    sign_up(page, live.url, "leaver")
    yield page
    context.close()


def test_download_all_my_data(page: Any, live: Any, tmp_path: Path) -> None:
    manage_shell(live.env, SEED.format(name=page.username))
    page.goto(live.url + "/settings/data/")
    assert "2 conversations" in page.inner_text("main")
    shot(page, "export-data-page")
    with page.expect_download() as info:
        page.click("a[data-export]")
    download = info.value
    assert download.suggested_filename.startswith(f"stellarchat-{page.username}-")
    assert download.suggested_filename.endswith(".zip")
    path = tmp_path / "export.zip"
    download.save_as(path)
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        doc = json.loads(zf.read("conversations.json"))
        names = zf.namelist()
    assert doc["user"] == {"username": page.username}
    assert sorted(c["title"] for c in doc["conversations"]) == ["Recipes", "Trip to 北京 / ../../x"]
    assert [m["content"] for m in doc["conversations"][0]["messages"]] == [
        "Where first?",
        "An answer.",
    ]
    markdown = [n for n in names if n.startswith("conversations/")]
    assert len(markdown) == 2 and all(".." not in n and n.count("/") == 1 for n in markdown)
    assert any("-trip-to-北京-x-" in n for n in markdown), markdown
    assert page.url == live.url + "/settings/data/"  # a download, not a navigation
    assert not page.problems  # type: ignore[attr-defined]


def test_delete_my_account_through_the_form(page: Any, live: Any) -> None:
    manage_shell(live.env, SEED.format(name=page.username))
    chat_tab = page.context.new_page()  # the same person, chatting in another tab
    chat_tab.goto(live.url + "/")
    chat_tab.wait_for_selector("#connection[data-state=online]")

    page.goto(live.url + "/settings/data/")
    page.click("text=Delete my account…")
    page.wait_for_url(live.url + "/settings/delete-account/")
    assert page.username in page.inner_text("main")
    shot(page, "delete-account-form")

    page.fill("#id_password", "not my password")
    page.check("#id_confirm")
    page.click("button[type=submit]")
    page.wait_for_selector(".field-errors")
    assert "That is not your password. Nothing was deleted." in page.inner_text("main")
    shot(page, "delete-account-wrong-password")

    page.fill("#id_password", PASSWORD)
    page.check("#id_confirm")
    page.click("button[type=submit]")
    page.wait_for_url(live.url + "/accounts/login/")
    assert "were deleted" in page.inner_text(".flash")
    shot(page, "delete-account-done")

    # The other tab's socket was closed with 4403: it reloads onto the login page.
    chat_tab.wait_for_url(live.url + "/accounts/login/?next=/", timeout=10_000)
    page.goto(live.url + "/")
    assert page.url.startswith(live.url + "/accounts/login/")  # logged out here too
    code = (
        "from django.contrib.auth import get_user_model\n"
        f"print(get_user_model().objects.filter(username={page.username!r}).exists())"
    )
    assert manage_shell(live.env, code).strip() == "False"
    assert not page.problems  # type: ignore[attr-defined]
