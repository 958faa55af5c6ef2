"""``bench/stream_efficiency.py --stages``: the stamps every server process writes, and how the
bench lines them up. The stamping runs in a real child process started as the bench starts
its servers (PYTHONPATH), against the app's real modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import stream_efficiency as bench

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import asyncio, django
django.setup()
from chat import limits
from inference.backends.hf import TransformersBackend
from inference.options import GenerationOptions

asyncio.run(limits.hit_message_rate(1))
backend = TransformersBackend("inference/bundled/stellarbyte-mini", device="cpu")
turns = [{"role": "user", "content": "Hello"}]
items = list(backend.stream(turns, GenerationOptions(temperature=0, max_new_tokens=4)))
print(type(items[-1]).__name__, sum(isinstance(item, str) for item in items) > 0)
"""


def child(code: str, tmp_path: Path, **env: str) -> str:
    """Run ``code`` as a server process of the bench runs (``bench/stages`` on its
    PYTHONPATH, Django set up by the code itself); its standard output."""
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(ROOT / "bench" / "stages"),
            "DJANGO_SETTINGS_MODULE": "stellarchat.settings",
            "DJANGO_DEBUG": "1",
            "STELLARCHAT_DATA_DIR": str(tmp_path),
            "HF_HUB_OFFLINE": "1",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.mark.slow
def test_a_server_process_stamps_its_stages_without_a_change_to_the_app(tmp_path: Path) -> None:
    stamps = tmp_path / "stages"
    out = child(CHILD, tmp_path, STELLARCHAT_STAGES_FILE=str(stamps))
    assert out.strip().splitlines()[-1] == "Result True"  # the reply passes through
    lines = [line.split(" ", 1) for line in stamps.read_text().splitlines()]
    stages = [stage for _, stage in lines]
    assert stages == ["web: rate checked", "model: request read", "model: first words picked"]
    times = [float(at) for at, _ in lines]
    assert times == sorted(times)


def test_without_the_file_nothing_is_wrapped(tmp_path: Path) -> None:
    out = child(
        "import django; django.setup(); from chat import limits; "
        "print(hasattr(limits.hit_message_rate, '__wrapped__'))",
        tmp_path,
    )
    assert out.strip() == "False"


def test_stamps_line_up_per_run_after_each_send(tmp_path: Path) -> None:
    stamps = tmp_path / "stages"
    stamps.write_text(
        "\n".join(
            [
                "9.000000 worker: model called",  # warm-up, before the first measured send
                "10.000000 client: chat.send sent",
                "10.001000 web: frame received",
                "10.030000 client: first stream.delta received",
                "10.050000 web: delta to socket",  # the second delta, after the first: left out
                "10.002000 web: frame received",  # a later stamp of a stage already seen
                "11.000000 client: chat.send sent",
                "11.002500 web: frame received",
                "11.040000 client: first stream.delta received",
                "12.000000 client: chat.send sent",  # a run that never got its first delta
                "12.001000 web: frame received",
            ]
        )
        + "\n"
    )
    runs = bench.read_stages(str(stamps))
    assert runs == [
        {
            "web: frame received": pytest.approx(1.0),
            bench.FIRST: pytest.approx(30.0),
            "web: delta to socket": pytest.approx(50.0),
        },
        {"web: frame received": pytest.approx(2.5), bench.FIRST: pytest.approx(40.0)},
    ]
    table = bench.stage_table(runs)
    assert [line.split()[-1] for line in table] == ["received", "received"]
    assert "web: frame received" in table[0] and bench.FIRST in table[1]
    assert "delta to socket" not in "".join(table)  # after the first delta: left out
    first, p95, step = table[0].split()[:3]
    assert (float(first), float(p95), float(step)) == (1.75, 2.5, 1.75)
