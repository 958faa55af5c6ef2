"""Every variable the code reads is in README's one table (and nothing stale is documented)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Read by libraries or the test harness, not by StellarChat's own configuration.
NOT_OURS = {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "CI", "DJANGO_SETTINGS_MODULE"}


def readme_variables() -> set[str]:
    table = (ROOT / "README.md").read_text().split("## Configuration", 1)[1]
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", table, flags=re.M))


def code_variables() -> set[str]:
    found: set[str] = set()
    for path in [*(ROOT / "stellarchat").glob("*.py"), *(ROOT / "inference").glob("*.py")]:
        text = path.read_text()
        found |= set(re.findall(r'env_\w+\(\s*env,\s*"([A-Z][A-Z0-9_]+)"', text))
        found |= set(re.findall(r'(?:environ|getenv)\(?\.?get\(\s*"([A-Z][A-Z0-9_]+)"', text))
        found |= set(re.findall(r'environ\["([A-Z][A-Z0-9_]+)"\]', text))
        found |= set(re.findall(r'\benv\.get\(\s*"([A-Z][A-Z0-9_]+)"', text))
    return found - NOT_OURS


def test_every_variable_the_code_reads_is_documented() -> None:
    missing = code_variables() - readme_variables()
    assert missing == set()


def test_the_table_documents_only_real_variables() -> None:
    # *_FILE variants are read by env_secret() for every secret.
    stale = {v for v in readme_variables() - code_variables() if not v.endswith("_FILE")}
    assert stale == set()


def test_the_readme_starts_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text().split("```sh\n", 1)[1].split("```", 1)[0]
    assert head.strip().splitlines() == ["make run", "make test"]
