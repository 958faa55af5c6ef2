"""Share-link fixtures: a models file of two models (one for a group only), so snapshots and
copies have model names and labels to get right."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from inference import models_file

MODELS = """
default = "alpha"
[models.alpha]
label = "Alpha Label"
backend = "test"
[models.beta]
label = "Beta Label"
backend = "test"
groups = ["research"]
"""


@pytest.fixture(autouse=True)
def models(settings: Any) -> None:
    settings.STELLARCHAT_MODELS = models_file.parse(
        tomllib.loads(MODELS), where="models.toml", env={}, max_new_tokens_limit=64
    )
    settings.STELLARCHAT_SHARING = "users"
