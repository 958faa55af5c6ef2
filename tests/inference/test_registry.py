"""The registry: without a models file a deployment serves its one model under the name it
always had; with one, every model of the file, each with its own backend instance, and
``manage.py models`` lists them and checks them for real (a local model, the test backend and
an unreachable OpenAI-compatible server)."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from inference import heartbeat, models_file, registry

ROOT = Path(__file__).resolve().parents[2]
FILE = """
default = "echo"
[models.mini]
label = "StellarByte mini"
backend = "transformers"
path = "inference/bundled/stellarbyte-mini"
max_batch = 4
[models.echo]
backend = "test"
groups = ["research"]
[models.far]
backend = "openai"
url = "http://127.0.0.1:9/v1"
remote_model = "nobody"
api_key_env = "FAR_KEY"
"""


@pytest.fixture
def with_file(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("FAR_KEY", "sk-far")
    import tomllib

    settings.STELLARCHAT_MODELS = models_file.parse(
        tomllib.loads(FILE),
        where="models.toml",
        env={"FAR_KEY": "sk-far"},
        folders=(ROOT,),
        max_new_tokens_limit=1024,
    )
    monkeypatch.setattr(registry, "_instances", {})
    return settings.STELLARCHAT_MODELS


def test_without_a_file_the_one_model_keeps_its_name(settings: Any) -> None:
    settings.STELLARCHAT_MODELS = None
    settings.STELLARCHAT_BACKEND = "test"
    assert registry.model_name() == registry.default_name() == "stellarchat-test"
    assert list(registry.models()) == ["stellarchat-test"]
    assert registry.backend().name == "test"


def test_with_a_file_each_model_has_its_own_backend(with_file: Any) -> None:
    assert list(registry.models()) == ["mini", "echo", "far"]
    assert registry.model_name() == "echo"
    mini, far, echo = registry.backend("mini"), registry.backend("far"), registry.backend()
    assert registry.backend("mini") is mini and mini is not far
    assert mini.config["model"] == str(ROOT / "inference/bundled/stellarbyte-mini")
    assert mini.config["max_batch"] == 4 and not mini.ready  # made, not loaded
    assert far.url == "http://127.0.0.1:9/v1" and far.model == "nobody"
    assert far.api_key == "sk-far"  # read from the variable the file names
    assert echo.name == "test"
    with pytest.raises(registry.BackendError, match="no model named 'gone'"):
        registry.backend("gone")


@pytest.mark.django_db
def test_manage_models_lists_and_checks_each_for_real(with_file: Any) -> None:
    from django.core.cache import cache

    cache.set(heartbeat.model_key("echo"), time.time(), 30)  # a worker has it loaded
    out = io.StringIO()
    call_command("models", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["name", "label", "backend", "where", "groups", "loaded"]
    echo = next(line for line in lines if line.startswith("echo"))
    assert "(default)" in echo and "research" in echo and echo.endswith("worker")
    mini = next(line for line in lines if line.startswith("mini"))
    assert "StellarByte mini" in mini and "stellarbyte-mini" in mini and mini.endswith("no")

    out = io.StringIO()
    with pytest.raises(CommandError, match="1 of 3 failed: far"):
        call_command("models", "--check", stdout=out)
    text = out.getvalue()
    assert "mini: ok" in text and "echo: ok" in text
    assert "far: FAILED cannot reach the model server" in text
    registry.backend("mini").close()


PROVIDED = """
[models.mini]
backend = "test"
[providers.up]
url = "{url}"
api_key_env = "UP_KEY"
prefix = "up/"
groups = ["research"]
"""


def test_a_provider_s_listed_models_are_served_under_its_prefix(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every model an OpenAI-compatible server lists at GET /models, named ``prefix`` + its
    id (lower case), replies through it with the key from the variable the file names; a
    listing that fails keeps the last one; a model of the file keeps its name."""
    import tomllib

    from tests.inference.test_remote_backend import DONE, Reply, Upstream, delta

    server = Upstream()
    try:
        server.models = [{"id": "Qwen/Qwen2.5-7B-Instruct"}, {"id": "m"}, {"id": "bad name!" * 20}]
        server.reply = Reply(steps=[delta("from "), delta("upstream", "stop"), DONE])
        monkeypatch.setenv("UP_KEY", "sk-up")
        settings.STELLARCHAT_MODELS = models_file.parse(
            tomllib.loads(PROVIDED.format(url=server.url)),
            where="models.toml",
            env={"UP_KEY": "sk-up"},
            max_new_tokens_limit=64,
        )
        monkeypatch.setattr(registry, "_instances", {})
        monkeypatch.setattr(registry, "_provided", {})
        monkeypatch.setattr(registry, "_refresher", object())  # no background thread here
        assert list(registry.models()) == ["mini"]  # not listed yet: nothing waits
        listed = registry.refresh_providers()
        assert list(listed) == ["up/qwen/qwen2.5-7b-instruct", "up/m"]
        assert registry.default_name() == "mini"  # the file's first model
        spec = registry.get("up/qwen/qwen2.5-7b-instruct")
        assert spec is not None and spec.remote_model == "Qwen/Qwen2.5-7B-Instruct"
        assert spec.groups == ("research",) and spec.label == "Qwen/Qwen2.5-7B-Instruct"
        assert registry.channel("up/m") == registry.channel("up/anything")  # the provider's
        assert registry.channel("up/m") != registry.channel("mini")
        assert registry.channel("up/m") in registry.worker_channels()

        from inference.options import GenerationOptions

        items = list(
            registry.backend("up/m").stream(
                [{"role": "user", "content": "hi"}], GenerationOptions()
            )
        )
        assert "".join(i for i in items if isinstance(i, str)) == "from upstream"
        asked = [r for r in server.requests if r.path == "/v1/chat/completions"][-1]
        assert asked.body["model"] == "m" and asked.headers["authorization"] == "Bearer sk-up"
        listing = [r for r in server.requests if r.path == "/v1/models"][0]
        assert listing.headers["authorization"] == "Bearer sk-up"

        server.models_status = 500  # the provider fails: its last list stays
        assert list(registry.refresh_providers()) == ["up/qwen/qwen2.5-7b-instruct", "up/m"]
    finally:
        server.close()


def test_without_a_file_a_job_naming_another_model_gets_the_one_model(settings: Any) -> None:
    """A web process of another release (or started with another STELLARCHAT_MODEL) may name
    the one model otherwise: the worker answers with the model it has, not an error."""
    settings.STELLARCHAT_MODELS = None
    settings.STELLARCHAT_BACKEND = "test"
    assert registry.get("qwen") is None
    spec = registry.serving("qwen")
    assert spec is not None and spec.name == "stellarchat-test"


def test_a_file_of_providers_only_defaults_to_the_first_model_they_list(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tomllib

    settings.STELLARCHAT_MODELS = models_file.parse(
        tomllib.loads('[providers.up]\nurl = "http://127.0.0.1:9/v1"\nprefix = "up/"\n'),
        where="models.toml",
        env={},
        max_new_tokens_limit=64,
    )
    monkeypatch.setattr(registry, "_refresher", object())  # no background thread here
    spec = models_file.ModelSpec(name="up/m", backend="openai", provider="up")
    monkeypatch.setattr(registry, "_provided", {"up/m": spec})
    assert registry.default_name() == "up/m"
    monkeypatch.setattr(registry, "_provided", {})
    assert registry.default_name() == ""  # nothing listed yet: nothing to default to
