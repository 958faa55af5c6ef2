"""The models file: the issue's own example reads as written; every broken, foreign or hostile
file stops with one line that names the file, the model and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inference import models_file
from inference.models_file import ModelsFileError

ROOT = Path(__file__).resolve().parents[2]
ENV = {"QWEN_API_KEY": "sk-q", "VLLM_API_KEY": "sk-v"}
EXAMPLE = """
default = "mini"                      # optional; else the first model

[models.mini]
label = "StellarByte mini"
backend = "transformers"              # transformers | openai | test
path = "inference/bundled/stellarbyte-mini"   # folder or hub id
description = "The small model that ships with StellarChat."
options = {temperature = 0.7, max_new_tokens = 200}
groups = ["research"]
keep_alive = 300

[models.qwen]
backend = "openai"
url = "http://gpu-box:8000/v1/"
remote_model = "Qwen/Qwen2.5-7B-Instruct"
api_key_env = "QWEN_API_KEY"          # the key is read from this variable, never from the file

[providers.vllm]                      # every model that server lists at GET {url}/models
url = "http://gpu-box:8000/v1"
api_key_env = "VLLM_API_KEY"
prefix = "vllm/"                      # names become vllm/<its id>
"""


def read(tmp_path: Path, text: str | bytes, env: dict[str, str] | None = None) -> Any:
    path = tmp_path / "models.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return models_file.read(
        path, env=ENV if env is None else env, base_dir=ROOT, max_new_tokens_limit=1024
    )


def test_the_issue_s_example_reads_as_written(tmp_path: Path) -> None:
    parsed = read(tmp_path, EXAMPLE)
    assert parsed.default == "mini" and list(parsed.models) == ["mini", "qwen"]
    mini, qwen = parsed.models["mini"], parsed.models["qwen"]
    assert mini.backend == "transformers" and mini.label == "StellarByte mini"
    assert Path(mini.path) == ROOT / "inference" / "bundled" / "stellarbyte-mini"
    assert mini.options == {"temperature": 0.7, "max_new_tokens": 200}
    assert mini.groups == ("research",) and mini.keep_alive == 300
    assert qwen.url == "http://gpu-box:8000/v1" and qwen.api_key_env == "QWEN_API_KEY"
    assert qwen.label == "qwen" and qwen.keep_alive == 0
    vllm = parsed.providers["vllm"]
    assert vllm.prefix == "vllm/" and vllm.api_key_env == "VLLM_API_KEY"


def test_the_default_is_the_first_model_and_a_hub_id_stays_as_written(tmp_path: Path) -> None:
    parsed = read(
        tmp_path,
        '[models.b]\nbackend = "test"\n[models.a]\nbackend = "transformers"\n'
        'path = "Qwen/Qwen2.5-0.5B-Instruct"\n',
    )
    assert parsed.default == "b"
    assert parsed.models["a"].path == "Qwen/Qwen2.5-0.5B-Instruct"


def test_a_folder_next_to_the_file_is_found(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    parsed = read(tmp_path, '[models.x]\nbackend = "transformers"\npath = "weights"\n')
    assert parsed.models["x"].path == str(tmp_path / "weights")


MINI = '[models.mini]\nbackend = "test"\n'
BROKEN = [
    # (file text, what the one line must name)
    ("", ["no [models.NAME] section"]),
    ("default = 'mini'\n[models]\n", ["no [models.NAME] section"]),
    ('colour = "blue"\n' + MINI, ["unknown key 'colour' at the top"]),
    ('[models.mini]\nbackend = "test"\nlabell = "x"\n', ["model 'mini'", "labell", "known:"]),
    ('[models.mini]\nlabel = "x"\n', ["model 'mini'", "backend: missing"]),
    ('[models.mini]\nbackend = "llamacpp"\n', ["model 'mini'", "'llamacpp' is not a backend"]),
    ('[models.mini]\nbackend = "transformers"\n', ["model 'mini'", "path: missing"]),
    ('[models.mini]\nbackend = "transformers"\npath = " "\n', ["path: is empty"]),
    ('[models.q]\nbackend = "openai"\nurl = "http://h/v1"\n', ["model 'q'", "remote_model"]),
    (
        '[models.q]\nbackend = "openai"\nurl = "ftp://h"\nremote_model = "m"\n',
        ["model 'q'", "url", "not a server URL"],
    ),
    (
        '[models.q]\nbackend = "openai"\nurl = "http://h/v1"\nremote_model = "m"\n'
        'api_key_env = "NOT_SET_ANYWHERE"\n',
        ["model 'q'", "api_key_env", "NOT_SET_ANYWHERE is not set"],
    ),
    (
        '[models.q]\nbackend = "openai"\nurl = "http://h/v1"\nremote_model = "m"\n'
        'api_key_env = "sk-abc def"\n',
        ["api_key_env", "not a variable name"],
    ),
    ('[models.Mini]\nbackend = "test"\n', ["model name 'Mini'"]),
    ('[models."../etc"]\nbackend = "test"\n', ["model name '../etc'"]),
    ('[models."' + "a" * 65 + '"]\nbackend = "test"\n', ["model name"]),
    ('[models.""]\nbackend = "test"\n', ["model name ''"]),
    ('default = "big"\n' + MINI, ["default: 'big' is not a model"]),
    ("default = 3\n" + MINI, ["default: must be a model's name"]),
    ('arena = ["mini"]\n' + MINI, ["arena: needs at least two"]),
    ('arena = ["mini", "gpt"]\n' + MINI, ["arena: 'gpt' is not a model"]),
    ('arena = "mini"\n' + MINI, ["arena: must be a list"]),
    ('[models.mini]\nbackend = "test"\noptions = {temperature = 9}\n', ["options.temperature"]),
    ('[models.mini]\nbackend = "test"\noptions = {beam = 2}\n', ["options.beam", "not an option"]),
    ('[models.mini]\nbackend = "test"\noptions = 5\n', ["options: must be a table"]),
    ('[models.mini]\nbackend = "test"\ngroups = "research"\n', ["groups: must be a list"]),
    ('[models.mini]\nbackend = "test"\nlabel = 7\n', ["label: must be text"]),
    ('[models.mini]\nbackend = "test"\nlabel = "' + "x" * 201 + '"\n', ["label: over 200"]),
    ('[models.mini]\nbackend = "test"\ndescription = "a\\u0000b"\n', ["NUL"]),
    ('[models.mini]\nbackend = "test"\npath = "x"\n', ["path: not a key of a test model"]),
    (
        '[models.m]\nbackend = "transformers"\npath = "p"\nmax_batch = 0\n',
        ["model 'm'", "max_batch: must be between 1"],
    ),
    ('[models.m]\nbackend = "transformers"\npath = "p"\nmax_batch = true\n', ["whole number"]),
    ('[models.m]\nbackend = "transformers"\npath = "p"\nkeep_alive = -1\n', ["keep_alive"]),
    ('[models.m]\nbackend = "transformers"\npath = "p"\ndevice = "tpu"\n', ["device: one of"]),
    ('[models.m]\nbackend = "transformers"\npath = "p"\ndtype = "int4"\n', ["dtype: one of"]),
    (
        '[models.m]\nbackend = "transformers"\npath = "p"\ntrust_remote_code = "yes"\n',
        ["trust_remote_code: must be true or false"],
    ),
    ("models = 3\n", ["models: must be a table"]),
    ("[models]\nmini = 3\n", ["model 'mini': must be a [models.mini] section"]),
    ('[providers.v]\nurl = "http://h/v1"\nprefix = "V/"\n' + MINI, ["provider 'v'", "prefix"]),
    ('[providers.v]\nprefix = "v/"\n' + MINI, ["provider 'v'", "url: missing"]),
    ('[providers.v]\nurl = "http://h/v1"\nmodel = "x"\n' + MINI, ["provider 'v'", "model"]),
    ("[models.mini\nbackend = 1\n", ["not valid TOML"]),
    ('{"models": {}}', ["not valid TOML"]),  # a JSON file by mistake
]


@pytest.mark.parametrize(("text", "names"), BROKEN)
def test_a_broken_file_stops_with_one_line_naming_what_is_wrong(
    tmp_path: Path, text: str, names: list[str]
) -> None:
    with pytest.raises(ModelsFileError) as caught:
        read(tmp_path, text)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "models.toml") + ": ")
    for name in names:
        assert name in message, message


def test_a_key_in_the_file_instead_of_a_variable_is_not_echoed(tmp_path: Path) -> None:
    """A key pasted where its variable's name belongs is refused without being printed."""
    with pytest.raises(ModelsFileError) as caught:
        read(
            tmp_path,
            '[models.q]\nbackend = "openai"\nurl = "http://h/v1"\nremote_model = "m"\n'
            'api_key_env = "SKSECRETVALUE12345"\n',
            env={},
        )
    assert "is not set" in str(caught.value)


def test_files_that_are_not_models_files(tmp_path: Path) -> None:
    with pytest.raises(ModelsFileError, match="not UTF-8"):
        read(tmp_path, b"[models.mini]\nlabel = \"\xff\xfe\"\nbackend = 'test'\n")
    with pytest.raises(ModelsFileError, match="over 1024 KB"):
        read(tmp_path, "# " + "x" * (1024 * 1024) + "\n" + MINI)
    with pytest.raises(ModelsFileError, match="not a file"):
        models_file.read(tmp_path, env={}, base_dir=ROOT, max_new_tokens_limit=10)
    with pytest.raises(ModelsFileError, match="not a file"):
        models_file.read(tmp_path / "missing.toml", env={}, base_dir=ROOT, max_new_tokens_limit=10)
    deep = "x = " + "[" * 100_000 + "]" * 100_000 + "\n" + MINI
    with pytest.raises(ModelsFileError, match="nested too deep"):
        read(tmp_path, deep)


def test_the_example_in_docs_models_md_reads(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "models.md").read_text()
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    parsed = read(tmp_path, example, env={"QWEN_API_KEY": "k", "VLLM_API_KEY": "k"})
    assert list(parsed.models) == ["mini", "qwen"] and list(parsed.providers) == ["vllm"]
    assert parsed.models["mini"].keep_alive == 600
