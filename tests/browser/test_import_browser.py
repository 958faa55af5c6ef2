"""Settings → Import as a person uses it, in real headless Chromium against a live server in
the embedded shape `make run` starts (the task worker on a thread of the web process): pick
a file, watch the progress bar fill and end with the summary, find the conversations in the
chat; a second import of the same file adds nothing; a broken file is named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import shot, sign_up, watch
from tests.portability import support

pytestmark = pytest.mark.slow

CONVERSATIONS = 400


def new_page(browser: Any, live: Any, *, width: int = 1100, height: int = 900) -> Any:
    context = browser.new_context(viewport={"width": width, "height": height})
    return watch(context.new_page())


def export_file(directory: Path) -> Path:
    """A ChatGPT conversations.json of CONVERSATIONS conversations: the hand-written ones
    and many made from them (new ids), enough for the bar to be seen moving."""
    base = support.fixture_json("chatgpt_conversations.json")
    conversations = list(base)
    for n in range(CONVERSATIONS - len(base)):
        copy = json.loads(json.dumps(base[0]))
        copy["id"] = copy["conversation_id"] = f"copy-{n:04d}"
        copy["title"] = f"Trip to Lisbon, take {n + 2}"
        copy["create_time"] -= 86_400 * (n + 1)
        copy["update_time"] -= 86_400 * (n + 1)
        conversations.append(copy)
    path = directory / "conversations.json"
    path.write_text(json.dumps(conversations), encoding="utf-8")
    return path


def test_import_a_file_and_watch_it_finish(
    browser: Any, live: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    page = new_page(browser, live)
    sign_up(page, live.url, "importer")
    page.goto(live.url + "/settings/import/")
    assert page.locator("h2").inner_text() == "Import conversations"
    assert "No imports yet." in page.inner_text("main")
    shot(page, "import-empty")

    file = export_file(tmp_path_factory.mktemp("import"))
    page.set_input_files("#id_file", str(file))
    page.click("form.import-form button[type=submit]")
    page.wait_for_url(f"{live.url}/settings/import/*/")
    bar = page.locator("#import-job progress")

    # The bar moves while the worker writes (htmx polls the job every second).
    page.wait_for_function(
        "() => { const p = document.querySelector('#import-job.import-running progress');"
        " return p && p.value > 1 && p.value < p.max; }",
        timeout=30_000,
    )
    status = page.locator("#import-job .import-status").inner_text()
    assert f"of {CONVERSATIONS} conversations…" in status, status
    shot(page, "import-progress")

    page.wait_for_selector("#import-job.import-done", timeout=120_000)
    assert bar.get_attribute("value") == str(CONVERSATIONS)
    summary = page.locator("#import-job .import-status").inner_text()
    assert summary == (
        f"Finished: imported {CONVERSATIONS - 1} conversations; 1 skipped: nothing to import in it."
    ), summary
    page.click("#import-job summary")  # the skipped conversations, by title
    assert "“New chat”: nothing to import in it" in page.inner_text("#import-job")
    shot(page, "import-done")

    # The same file again: nothing added, and it says why.
    page.set_input_files("#id_file", str(file))
    page.click("form.import-form button[type=submit]")
    page.wait_for_selector("#import-job.import-done", timeout=120_000)
    assert page.locator("#import-job .import-status").inner_text() == (
        f"Finished: imported 0 conversations; {CONVERSATIONS} skipped: "
        f"already imported ({CONVERSATIONS - 1}), nothing to import in it (1)."
    )
    assert page.locator(".import-row").count() == 2
    shot(page, "import-again")

    # A broken file is named on the form, and nothing starts.
    broken = file.parent / "broken.json"
    broken.write_bytes('[{"title": "Café"}]'.encode("latin-1"))
    page.goto(live.url + "/settings/import/")
    page.set_input_files("#id_file", str(broken))
    page.click("form.import-form button[type=submit]")
    error = page.locator(".field-errors").inner_text()
    assert "broken.json is not UTF-8 text (byte 0xE9 at position 15)" in error, error
    assert page.locator(".import-row").count() == 2
    shot(page, "import-refused")
    # The refusal is a 400 page, which Chromium reports on its console; nothing else may be.
    assert page.problems == [
        "Failed to load resource: the server responded with a status of 400 (Bad Request)"
    ]
    page.problems.clear()

    # The conversations are in the chat, with the branch ChatGPT last showed.
    page.goto(live.url + "/")
    page.click("text=Trip to Lisbon")
    page.wait_for_selector(".message-assistant")
    text = page.inner_text("main")
    assert "Try Ao 26 or Princesa do Castelo" in text  # the regenerated answer, rendered
    assert "Ao 26 Vegan Food Project" not in text  # not the answer it replaced
    assert "[image omitted]" in text
    shot(page, "import-in-chat")
    assert page.problems == []


def test_the_import_page_on_a_phone(
    browser: Any, live: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    page = new_page(browser, live, width=390, height=844)
    sign_up(page, live.url, "importer")
    page.goto(live.url + "/settings/import/")
    path = tmp_path_factory.mktemp("phone") / "chats.json"
    path.write_bytes(support.fixture("openwebui_chats.json"))
    page.set_input_files("#id_file", str(path))
    page.click("form.import-form button[type=submit]")
    page.wait_for_selector("#import-job.import-done", timeout=60_000)
    assert "imported 2 conversations" in page.inner_text("#import-job")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width  # nothing sticks out sideways
    shot(page, "import-phone")
    assert page.problems == []
