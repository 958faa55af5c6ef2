"""A real WebSocket client (the `websockets` package) and real HTTP sign-up, for live servers."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import urllib.parse
from typing import Any

import websockets

# A reply that runs long on the bundled model: on this list of numbers it writes 700+ tokens,
# greedy, without an end token (its answers to ordinary prompts end within 30-60 tokens). For
# benchmarks that time a long reply and tests that must stop or kill one mid-way.
LONG_PROMPT = " ".join(str(i) for i in range(1, 200))[:300]


def _cookies(response: http.client.HTTPResponse) -> dict[str, str]:
    jar = {}
    for header in response.headers.get_all("Set-Cookie") or []:
        name, _, rest = header.partition("=")
        jar[name.strip()] = rest.split(";", 1)[0]
    return jar


def post_form(
    base: str, path: str, fields: dict[str, str], *, timeout: float = 30
) -> tuple[int, dict[str, str]]:
    """GET the form at ``path``, POST ``fields`` with its CSRF token: (status, cookies).

    Cookies are handled by hand so this works with DEBUG off too (Secure cookies over the
    loopback's plain HTTP, which a browser-like cookie jar would refuse to send back).
    """
    parts = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", path)
        page = conn.getresponse()
        jar = _cookies(page)
        html = page.read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
        assert token, html[:500]
        body = urllib.parse.urlencode({"csrfmiddlewaretoken": token.group(1), **fields})
        conn.request(
            "POST",
            path,
            body=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": "; ".join(f"{k}={v}" for k, v in jar.items()),
                "Origin": base,
                "Referer": base + path,
            },
        )
        done = conn.getresponse()
        done.read()
    finally:
        conn.close()
    jar.update(_cookies(done))
    return done.status, jar


def signup(base: str, username: str, password: str = "a-long-and-fine-passphrase") -> str:
    """Sign up through the real form; return the Cookie header of the new session."""
    fields = {"username": username, "password1": password, "password2": password}
    status, jar = post_form(base, "/accounts/signup/", fields)
    assert status == 302, status
    assert "sessionid" in jar
    return "; ".join(f"{k}={v}" for k, v in jar.items())


def login(
    base: str, username: str, password: str = "a-long-and-fine-passphrase", *, timeout: float = 30
) -> str | None:
    """Log in through the real form: the session's Cookie header, or None when refused."""
    fields = {"username": username, "password": password}
    status, jar = post_form(base, "/accounts/login/", fields, timeout=timeout)
    return "; ".join(f"{k}={v}" for k, v in jar.items()) if status == 302 else None


def get(base: str, path: str, cookie: str) -> tuple[int, str]:
    parts = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("GET", path, headers={"Cookie": cookie})
    response = conn.getresponse()
    body = response.read().decode()
    conn.close()
    return response.status, body


class LiveSocket:
    def __init__(self, ws: Any) -> None:
        self.ws = ws

    @classmethod
    async def open(
        cls,
        base: str,
        cookie: str | None,
        origin: str | None = "self",
        *,
        api_key: str | None = None,
        **options: Any,
    ) -> LiveSocket:
        """``options`` go to ``websockets.connect`` (``local_addr=("127.0.0.N", 0)``: a client
        from another loopback address, for limits counted per address)."""
        headers = {}
        if cookie:
            headers["Cookie"] = cookie
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        if origin == "self":
            origin = base
        url = base.replace("http", "ws", 1) + "/ws/chat/"
        ws = await websockets.connect(
            url,
            additional_headers=headers,
            origin=origin,
            **{"max_size": 2**24, "open_timeout": 10, **options},
        )
        return cls(ws)

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 15) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def until(self, kind: str, timeout: float = 20) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = max(0.1, deadline - asyncio.get_running_loop().time())
            frame = await self.recv(timeout=left)
            got.append(frame)
            if frame["type"] == kind:
                return got

    async def silent(self, seconds: float) -> bool:
        try:
            frame = await asyncio.wait_for(self.ws.recv(), seconds)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected frame: {frame[:200]}")

    async def close(self) -> None:
        await self.ws.close()

    @property
    def close_code(self) -> int | None:
        """The code the socket was closed with (None while it is open)."""
        return self.ws.close_code  # type: ignore[no-any-return]
