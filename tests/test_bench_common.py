"""bench/common.py: the benchmarks run as scripts, share one number format, import no tests."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import MISSING, number

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_numbers_and_what_was_not_measured() -> None:
    assert number(3.14159, 2) == "3.14"
    assert number(2.5, 0) == "2"  # round half to even, as format() does
    assert number(None, 1) == MISSING == "—"


@pytest.mark.parametrize("path", sorted(BENCH.glob("*.py")), ids=lambda path: path.name)
def test_no_benchmark_imports_from_tests(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        assert not [n for n in names if n.split(".")[0] == "tests"], f"{path.name} imports {names}"


@pytest.mark.parametrize("script", ["stage_budget.py", "latency.py"])
def test_a_benchmark_runs_as_a_script_from_anywhere(script: str, tmp_path: Path) -> None:
    """``python bench/latency.py`` imports bench.* and lab.* without PYTHONPATH."""
    result = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {script}")
