"""The web side reaches models only through ``inference.registry``: no module of ``chat/`` or
``api/`` imports ``inference.backends`` (or torch), at the top or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WEB_SIDE = sorted(path for app in ("chat", "api") for path in (ROOT / app).rglob("*.py"))
FORBIDDEN = ("inference.backends", "torch", "transformers")


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, with ``from x import y`` also read as ``x.y``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def reaches(name: str, forbidden: str) -> bool:
    return name == forbidden or name.startswith(forbidden + ".")


@pytest.mark.parametrize("path", WEB_SIDE, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_web_side_does_not_import_backends(path: Path) -> None:
    bad = sorted(name for name in imported(path) for ban in FORBIDDEN if reaches(name, ban))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: go through inference.registry"


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from inference import backends\n    import torch.nn\n")
    names = imported(sample)
    assert any(reaches(n, "inference.backends") for n in names)
    assert any(reaches(n, "torch") for n in names)
    assert len(WEB_SIDE) > 20  # the glob found the apps
