"""API keys at rest and in comparison: only a hash is stored, the hash is compared in constant
time, and a malformed key costs no database query."""

from __future__ import annotations

import hmac
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from api import keys
from api.models import ApiKey
from tests import factories

pytestmark = pytest.mark.django_db


def test_only_the_hash_is_stored(owner: Any) -> None:
    key, plain = factories.make_api_key(owner)
    secret = plain.split("_")[2]
    with connection.cursor() as cursor:  # every column of the row, as the database has it
        cursor.execute(f"SELECT * FROM {ApiKey._meta.db_table} WHERE id = %s", [key.pk])
        row = " ".join(str(v) for v in cursor.fetchone())
    assert plain not in row and secret not in row
    assert key.hashed == keys.digest(plain) and key.prefix == plain[:11]


def test_the_hash_is_compared_in_constant_time(owner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, plain = factories.make_api_key(owner)
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys.hmac, "compare_digest", spy)
    assert keys.authenticate(plain) is not None
    wrong = plain[:-1] + ("A" if plain[-1] != "A" else "B")
    assert keys.authenticate(wrong) is None
    assert len(calls) == 2 and calls[0][0] == calls[0][1] and calls[1][0] != calls[1][1]


@pytest.mark.parametrize(
    "token",
    [
        "",
        "sc_",
        "sk-not-ours",
        "sc_abcdefgh_short",
        "sc_ABCDEFGH_" + "a" * 40,  # the id part is lower case
        "sc_abcdefgh_" + "a" * 41,
        "sc_abcdefgh_" + "a" * 39 + "\x00",
        "sc_abcdefgh_" + "a" * 39 + "\u00e9",
        "sc_abcdefgh_" + "a" * 40 + "\n",
        "' OR 1=1 --",
        "x" * 1_000_000,
    ],
)
def test_malformed_keys_never_reach_the_database(token: str) -> None:
    with CaptureQueriesContext(connection) as queries:
        assert keys.authenticate(token) is None
    assert len(queries) == 0
