"""Real headless Chromium (Debian's, driven by Playwright) against a live daphne."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import services
from tests.e2e import livedaphne

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = livedaphne.BASE / "test-artifacts"
PASSWORD = "a-long-and-fine-passphrase"
_people = itertools.count()


def _require_chromium() -> None:
    if Path(CHROMIUM).exists() and shutil.which("chromium"):
        return
    message = "Debian's chromium is not installed (apt-get install -y chromium)"
    if services.in_ci():
        pytest.fail(message + " and CI is set")
    pytest.skip("!!! " + message + " !!!")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module-scoped: Playwright's sync API keeps an event loop running in this thread while
    it is started, which would break every asyncio test that runs after it."""
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The embedded topology `make run` starts, with the test backend streaming slowly enough
    to watch (each word 40 ms)."""
    env = {
        "DJANGO_DEBUG": "1",
        "STELLARCHAT_DATA_DIR": str(tmp_path_factory.mktemp("browser")),
        "STELLARCHAT_BACKEND": "test",
        "STELLARCHAT_TEST_BACKEND_DELAY_MS": "40",
    }
    with livedaphne.daphne(env) as server:
        server.env = env  # type: ignore[attr-defined]
        yield server


def serving_models(tmp_path_factory: pytest.TempPathFactory, models_toml: str) -> Iterator[Any]:
    """A live daphne (embedded, as `make run`) serving the models of ``models_toml``; the
    test backend's words 20 ms apart. For a module-scoped fixture to yield from."""
    folder = Path(tmp_path_factory.mktemp("models"))
    (folder / "models.toml").write_text(models_toml)
    env = {
        "DJANGO_DEBUG": "1",
        "STELLARCHAT_DATA_DIR": str(folder),
        "STELLARCHAT_MODELS_FILE": str(folder / "models.toml"),
        "STELLARCHAT_TEST_BACKEND_DELAY_MS": "20",
    }
    with livedaphne.daphne(env) as server:
        yield server


def manage_shell(env: dict[str, str], code: str) -> str:
    """Run Python inside the live server's Django (same database), e.g. to seed data."""
    proc = subprocess.run(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c", code],
        cwd=livedaphne.BASE,
        env=livedaphne.clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def watch(page: Any) -> Any:
    """Collect script errors, CSP reports (console errors) and unexpected dialogs in
    ``page.problems``: a test asserts it is empty at the end (an injected script would alert)."""
    page.problems = []
    page.on("pageerror", lambda e: page.problems.append(f"pageerror: {e}"))
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("dialog", lambda d: (page.problems.append(f"dialog: {d.message}"), d.dismiss()))
    return page


def sign_up(page: Any, base: str, prefix: str = "person", *, online: bool = False) -> str:
    """Make a new account through the real sign-up form (a unique name from ``prefix``) and
    land on the chat, its socket up when ``online``; the name."""
    name = f"{prefix}{next(_people)}"
    page.goto(base + "/accounts/signup/")
    page.fill("#id_username", name)
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")
    if online:
        page.wait_for_selector("#connection[data-state=online]")
    page.username = name
    return name
