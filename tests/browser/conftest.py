"""Real headless Chromium (Debian's, driven by Playwright) against a live daphne."""

from __future__ import annotations

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
