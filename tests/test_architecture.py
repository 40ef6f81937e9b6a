"""STYLE.md: pure modules import no infrastructure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE = [
    "dispatch/domain.py",
    "dispatch/engine.py",
    "dispatch/access.py",
    "dispatch/ledger.py",
    "dispatch/views.py",
    "dispatch/clock.py",
    "grids/index.py",
    "grids/coords.py",
    "grids/directory.py",
    "workflows/definition.py",
    "workflows/machine.py",
    "fixtures/subdivide.py",
    "fixtures/province.py",
    "grids/lattice.py",
    "grids/validate.py",
    "grids/importer.py",
]
FORBIDDEN = (
    "fastapi",
    "starlette",
    "sqlmodel",
    "sqlalchemy",
    "apscheduler",
    "websockets",
    "uvicorn",
    "httpx",
)


@pytest.mark.parametrize("path", PURE)
def test_pure_module_imports_no_infrastructure(path: str) -> None:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & set(FORBIDDEN), f"{path} imports {sorted(imported & set(FORBIDDEN))}"


def test_ruff_finds_nothing() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--quiet", str(ROOT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
