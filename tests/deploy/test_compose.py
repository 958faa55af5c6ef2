"""The production topology as files: docker-compose.yml validates with Compose v1.29 (the
oldest version it targets), wires the processes docs/deployment.md describes, and .env.example
covers every variable a deployment sets.

Compose reads the file here, not a YAML library (PyYAML is not a dependency of ours):
``docker-compose config`` prints the file normalized, with ``.env`` inlined, and the checks
below read that output line by line. Compose v1.29 has no JSON output (``--format`` is v2).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.services import in_ci

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

# README table variables a Compose deployment does not set in .env, and why.
NOT_IN_ENV_EXAMPLE = {
    "DATABASE_URL": "docker-compose.yml sets it to its postgres service",
    "REDIS_URL": "docker-compose.yml sets it to its redis service",
    "STELLARCHAT_DATA_DIR": "the Dockerfile sets it; with PostgreSQL and a set key it stays empty",
    "STELLARCHAT_TEST_BACKEND_DELAY_MS": "only for tests of the test backend",
    "PROMETHEUS_MULTIPROC_DIR": "one process per container, no shared PID namespace",
}


def docker_compose() -> str:
    """The Compose v1 binary; its absence skips loudly, and fails under CI."""
    path = shutil.which("docker-compose")
    if path:
        return path
    message = (
        "docker-compose is not installed (apt-get install --no-install-recommends docker-compose)"
    )
    if in_ci():
        pytest.fail(f"{message}, and CI is set: docker-compose.yml must be validated")
    pytest.skip(f"!!! {message}: docker-compose.yml is NOT validated !!!")


def compose(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``docker-compose -f docker-compose.yml ARGS`` as if the repository had ``.env``.

    The project directory is a scratch folder holding ``.env`` (a copy of ``.env.example``
    unless the test wrote its own), so a developer's real ``.env`` plays no part; relative paths
    in the file (the build context) resolve there. The environment is minimal, so shell
    variables cannot fill in ``${...}`` that ``.env.example`` forgot.
    """
    return subprocess.run(
        [docker_compose(), "-f", str(COMPOSE_FILE), "--project-directory", str(project), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(project)},
        check=False,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("compose")
    shutil.copy(ENV_EXAMPLE, folder / ".env")
    return folder


@pytest.fixture(scope="module")
def services(project: Path) -> dict[str, str]:
    """Each service's block of ``docker-compose config`` output, by service name."""
    result = compose(project, "config")
    assert result.returncode == 0, result.stderr
    return split_services(result.stdout)


def split_services(normalized: str) -> dict[str, str]:
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    in_services = False
    for line in normalized.splitlines():
        if not line.startswith(" "):
            in_services = line == "services:"
            current = None
            continue
        header = re.fullmatch(r"  ([\w.-]+):", line)
        if in_services and header:
            current = blocks.setdefault(header.group(1), [])
        elif in_services and current is not None:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in blocks.items()}


def list_under(block: str, key: str) -> list[str]:
    """The items of a list-valued top-level key of a service (``command``, ``profiles``...)."""
    items: list[str] = []
    inside = False
    for line in block.splitlines():
        if re.fullmatch(rf"    {key}:", line):
            inside = True
        elif inside and line.startswith("    - "):
            items.append(line[len("    - ") :].strip().strip("'\""))
        elif inside and not line.startswith("      "):
            break
    return items


def section(block: str, key: str) -> str:
    """The lines under a map-valued top-level key of a service (``depends_on``...)."""
    lines = block.splitlines()
    for index, line in enumerate(lines):
        if line == f"    {key}:":
            rest = []
            for inner in lines[index + 1 :]:
                if not inner.startswith("      ") and not inner.startswith("    - "):
                    break
                rest.append(inner)
            return "\n".join(rest)
    return ""


def env_example_names(*, commented: bool) -> set[str]:
    pattern = r"(?:# )?([A-Z][A-Z0-9_]*)=" if commented else r"([A-Z][A-Z0-9_]*)="
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    return {m.group(1) for m in re.finditer(rf"^{pattern}", text, flags=re.MULTILINE)}


def readme_variables() -> set[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", readme, flags=re.MULTILINE))


# --- Compose accepts the file -------------------------------------------------------------


def test_compose_v1_accepts_the_file(project: Path) -> None:
    result = compose(project, "config", "-q")
    assert result.returncode == 0, result.stderr
    # Compose warns, and goes on with a blank, for a ${VAR} that nothing sets.
    assert "is not set" not in result.stderr, result.stderr


def test_it_refuses_to_run_without_a_postgres_password(tmp_path: Path) -> None:
    env = ENV_EXAMPLE.read_text(encoding="utf-8")
    (tmp_path / ".env").write_text(
        re.sub(r"^POSTGRES_PASSWORD=.*$", "", env, flags=re.MULTILINE), encoding="utf-8"
    )
    result = compose(tmp_path, "config", "-q")
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


# --- The topology -------------------------------------------------------------------------


def test_it_has_the_services_of_the_topology(services: dict[str, str]) -> None:
    assert set(services) == {
        "redis",
        "postgres",
        "migrate",
        "web",
        "worker",
        "worker-gpu",
        "tasks",
    }


def test_tasks_runs_the_task_queue_after_migrate(services: dict[str, str]) -> None:
    """Imports' background worker (portability/tasks.py), its queue in PostgreSQL."""
    block = services["tasks"]
    assert list_under(block, "command") == ["python", "manage.py", "task_worker"]
    assert re.search(
        r"migrate:\n\s+condition: service_completed_successfully", section(block, "depends_on")
    )
    assert "    ports:" not in block and "    container_name:" not in block


def test_web_runs_daphne_on_all_interfaces(services: dict[str, str]) -> None:
    command = list_under(services["web"], "command")
    assert command[0] == "daphne"
    assert "stellarchat.asgi:application" in command
    assert "0.0.0.0" in command


@pytest.mark.parametrize("name", ["worker", "worker-gpu"])
def test_workers_run_the_inference_worker(services: dict[str, str], name: str) -> None:
    assert list_under(services[name], "command") == [
        "python",
        "manage.py",
        "runworker",
        "inference",
    ]


@pytest.mark.parametrize("name", ["worker", "worker-gpu"])
def test_workers_scale_without_clashes(services: dict[str, str], name: str) -> None:
    block = services[name]
    assert "    ports:" not in block
    assert "    container_name:" not in block


def test_app_services_are_wired_to_postgres_and_redis(services: dict[str, str]) -> None:
    for name in ("migrate", "web", "worker", "worker-gpu", "tasks"):
        environment = section(services[name], "environment")
        assert re.search(r"DATABASE_URL: postgres://\S+@postgres:5432/", environment), name
        assert "REDIS_URL: redis://redis:6379/" in environment, name


@pytest.mark.parametrize(
    ("name", "probe"),
    [("redis", "redis-cli"), ("postgres", "pg_isready"), ("web", "/readyz")],
)
def test_it_has_healthchecks(services: dict[str, str], name: str, probe: str) -> None:
    assert probe in section(services[name], "healthcheck")


def test_migrate_runs_before_web_and_workers(services: dict[str, str]) -> None:
    assert list_under(services["migrate"], "command") == [
        "python",
        "manage.py",
        "migrate",
        "--noinput",
    ]
    assert re.search(
        r"postgres:\n\s+condition: service_healthy", section(services["migrate"], "depends_on")
    )
    for name in ("web", "worker", "worker-gpu"):
        depends = section(services[name], "depends_on")
        assert re.search(r"migrate:\n\s+condition: service_completed_successfully", depends), name
        assert re.search(r"redis:\n\s+condition: service_healthy", depends), name


def test_the_gpu_worker_only_runs_under_its_profile(
    project: Path, services: dict[str, str]
) -> None:
    gpu_services = [name for name, block in services.items() if "driver: nvidia" in block]
    assert gpu_services == ["worker-gpu"]
    assert list_under(services["worker-gpu"], "profiles") == ["gpu"]
    assert "STELLARCHAT_DEVICE: cuda" in section(services["worker-gpu"], "environment")
    assert "TORCH_VARIANT: cuda" in section(services["worker-gpu"], "build")
    for name, block in services.items():
        if name != "worker-gpu":
            assert "    profiles:" not in block, f"{name} would not start by default"
    assert compose(project, "config", "--profiles").stdout.split() == ["gpu"]


def test_the_model_cache_is_a_volume(services: dict[str, str]) -> None:
    for name in ("worker", "worker-gpu"):
        assert any(
            item.startswith("hf-cache:/home/stellarchat/.cache/huggingface")
            for item in list_under(services[name], "volumes")
        ), name
    env = " ".join(args for word, args in instructions() if word == "ENV")
    assert "HF_HOME=/home/stellarchat/.cache/huggingface" in env


# --- The image ----------------------------------------------------------------------------


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text(encoding="utf-8")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def test_the_image_does_not_run_as_root(services: dict[str, str]) -> None:
    users = [args for word, args in instructions() if word == "USER"]
    assert users, "the Dockerfile has no USER directive"
    assert users[-1].split(":")[0] not in ("root", "0")
    for name, block in services.items():
        assert "    user:" not in block, f"{name} overrides the image's user"


def test_the_image_is_the_slim_python_base_serving_daphne() -> None:
    steps = instructions()
    assert ("FROM", "python:3.11-slim") in steps
    assert ("EXPOSE", "8000") in steps
    cmd = [args for word, args in steps if word == "CMD"][-1]
    assert cmd.startswith('["daphne"') and "0.0.0.0" in cmd and '"8000"' in cmd
    assert any("collectstatic --noinput" in args for word, args in steps if word == "RUN")
    assert any(word == "ARG" and args.startswith("TORCH_VARIANT=cpu") for word, args in steps)


def test_the_build_context_leaves_out_local_state() -> None:
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    for path in (".git", ".venv", ".env", "data", "train-scratch", "test-artifacts"):
        assert path in ignored, path
    # Stray weights are left out, the bundled model (part of the source) is not.
    assert "**/*.safetensors" in ignored
    assert ignored.index("!inference/bundled/stellarbyte-mini/**") > ignored.index(
        "**/*.safetensors"
    )


# --- .env.example -------------------------------------------------------------------------


def test_env_example_sets_every_variable_the_compose_file_reads() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    referenced = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    assert referenced, "no ${...} found: has the file changed shape?"
    assert referenced <= env_example_names(commented=False)


def test_env_example_covers_the_readme_configuration_table() -> None:
    documented = readme_variables()
    assert "DJANGO_SECRET_KEY" in documented, "README's table was not found"
    missing = documented - env_example_names(commented=True) - set(NOT_IN_ENV_EXAMPLE)
    assert not missing, f"add to .env.example (or to NOT_IN_ENV_EXAMPLE, with why): {missing}"


def test_the_allow_list_names_only_documented_variables() -> None:
    assert set(NOT_IN_ENV_EXAMPLE) <= readme_variables()


def test_env_example_holds_no_real_secrets() -> None:
    values = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    )
    assert "change-me" in values["DJANGO_SECRET_KEY"]
    # Too short for stellarchat.config: a copied .env.example cannot start with it.
    assert len(values["DJANGO_SECRET_KEY"]) < 32
    assert "change-me" in values["POSTGRES_PASSWORD"]
    assert values["DJANGO_DEBUG"] in ("0", "false", "no", "off")
