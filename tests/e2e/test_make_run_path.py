"""What `make run` gives a new user, tried over real HTTP against a real daphne process:
the login page, sign-up, the chat home page, static files."""

from __future__ import annotations

import http.cookiejar
import re
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.livedaphne import daphne

pytestmark = pytest.mark.slow


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )


def _csrf(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, "no CSRF token in the form"
    return match.group(1)


def test_a_new_user_signs_up_and_reaches_chat(tmp_path: Path) -> None:
    env = {"DJANGO_DEBUG": "1", "STELLARCHAT_DATA_DIR": str(tmp_path), "DATABASE_URL": ""}
    with daphne(env) as server:
        base = server.url
        web = _opener()
        home = web.open(base + "/")
        assert home.url == base + "/accounts/login/?next=/"
        login_html = home.read().decode()
        assert 'name="username"' in login_html and 'name="password"' in login_html

        css = re.search(r'href="(/static/[^"]+\.css)"', login_html)
        assert css, "stylesheet missing"
        assert web.open(base + css.group(1)).status == 200

        signup_html = web.open(base + "/accounts/signup/").read().decode()
        form = urllib.parse.urlencode(
            {
                "csrfmiddlewaretoken": _csrf(signup_html),
                "username": "stella",
                "password1": "a-long-and-fine-passphrase",
                "password2": "a-long-and-fine-passphrase",
            }
        ).encode()
        response = web.open(base + "/accounts/signup/", data=form)
        assert response.url == base + "/"
        page = response.read().decode()
        assert "stella" in page
        assert 'name="content"' in page
        # What the newcomer reads in the terminal: nothing asking for action they cannot
        # take (servestatic's "checks are disabled", daphne's "install the http2 extras").
        log = server.service.output()
        assert "Listening on TCP address" in log
        for line in log.splitlines():
            assert " WARNING " not in line and "Warning" not in line, line
            assert "HTTP/2" not in line and "ServeStatic" not in line, line
    assert (tmp_path / "db.sqlite3").exists()
    assert (tmp_path / "secret_key").exists()
