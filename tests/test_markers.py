"""Slow tests carry their marker, so the fast loop really is fast.

Two checks: statically, every test module that imports the part of ``lab``
that starts a program, a network namespace, Chromium or Xvfb declares the
marker; at run time, tests/conftest.py fails a test that starts one of them
unmarked (shown here on a test suite made for it).
"""

from __future__ import annotations

import ast
import configparser
import subprocess
import sys
from pathlib import Path

import pytest

import dev
from lab.markers import FAST_EXPRESSION, SLOW_MARKERS, required_markers

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"

#: The lab names whose use needs a marker, by module.
MARKED_BY_IMPORT = {
    "lab.programs": ({"start_server", "start_client", "Program", "PYTHON"}, "e2e"),
    "lab.network_lab": (None, "netns"),
    "lab.browser": (None, "browser"),
    "lab.virtual_display": (None, "display"),
}


def _marker_names(node: ast.expr) -> set[str]:
    """The X of every ``pytest.mark.X`` or ``pytest.mark.X(...)`` in ``node``."""
    names = set()
    for sub in ast.walk(node):
        if (
            isinstance(sub, ast.Attribute)
            and isinstance(sub.value, ast.Attribute)
            and sub.value.attr == "mark"
        ):
            names.add(sub.attr)
    return names


def declared_markers(tree: ast.Module) -> tuple[set[str], set[str]]:
    """Markers of the whole module, and markers on at least one of its tests."""
    module: set[str] = set()
    some_test: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "pytestmark" for target in node.targets
        ):
            module |= _marker_names(node.value)
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            for decorator in node.decorator_list:
                some_test |= _marker_names(decorator)
    return module, some_test


def needed_markers(tree: ast.Module) -> set[str]:
    needed = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in MARKED_BY_IMPORT:
            names, marker = MARKED_BY_IMPORT[node.module]
            if names is None or names & {alias.name for alias in node.names}:
                needed.add(marker)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MARKED_BY_IMPORT:
                    needed.add(MARKED_BY_IMPORT[alias.name][1])
    return needed


@pytest.mark.parametrize("path", sorted(TESTS.glob("test_*.py")), ids=lambda path: path.name)
def test_modules_that_start_slow_things_are_marked(path: Path) -> None:
    tree = ast.parse(path.read_text())
    module, some_test = declared_markers(tree)
    missing = needed_markers(tree) - module - some_test
    assert not missing, f"{path.name} needs pytestmark = pytest.mark.{sorted(missing)[0]}"


def test_the_fast_loop_leaves_out_every_registered_slow_marker() -> None:
    ini = configparser.ConfigParser()
    ini.read(ROOT / "pytest.ini")
    registered = [line.split(":")[0] for line in ini["pytest"]["markers"].split("\n") if line]
    assert tuple(registered) == SLOW_MARKERS
    assert "--strict-markers" in ini["pytest"]["addopts"].split()
    assert dev.FAST_MARKERS == FAST_EXPRESSION


@pytest.mark.parametrize(
    "argv, markers",
    [
        ([sys.executable, "/repo/server/server.py", "--signaling-port", "1"], {"e2e"}),
        (["python", "client/client.py", "--help"], {"e2e"}),
        ([sys.executable, "lab/load_client.py", "--sessions", "2"], {"e2e"}),
        (["ip", "netns", "add", "x"], {"netns"}),
        (["ip", "netns", "exec", "ns", "python", "server/server.py"], {"netns", "e2e"}),
        (["/usr/sbin/nft", "-f", "-"], {"netns"}),
        (["tc", "qdisc"], {"netns"}),
        (["Xvfb", ":99"], {"display"}),
        (["/venv/lib/python3.11/site-packages/playwright/driver/node", "cli.js"], {"browser"}),
        ([sys.executable, "-c", "import netfilterqueue"], set()),
        (["/usr/bin/docker", "compose", "up"], {"docker"}),
        (["podman", "run", "image"], {"docker"}),
        (["/venv/lib/python3.11/site-packages/compose/docker-compose", "config", "-q"], set()),
        (["kubectl", "kustomize", "k8s"], set()),
        ([sys.executable, "bench/server.py"], set()),
        ("ls", set()),
        ([], set()),
    ],
)
def test_which_process_needs_which_markers(argv: list[str], markers: set[str]) -> None:
    assert required_markers(argv) == markers


SUITE = """
import subprocess
import sys

import pytest

# Never started: the check refuses it, or it runs `python -c pass`.
PROGRAM = [sys.executable, "-c", "pass", "server/server.py"]


@pytest.mark.e2e
def test_marked():
    assert subprocess.run(PROGRAM).returncode == 0


def test_unmarked():
    subprocess.run(PROGRAM)


def test_unmarked_through_asyncio():
    import asyncio

    async def start():
        await asyncio.create_subprocess_exec(*PROGRAM)

    asyncio.run(start())
"""


def test_an_unmarked_test_that_starts_the_server_fails_naming_the_marker(tmp_path: Path) -> None:
    for name in ("pytest.ini", "tests/conftest.py"):
        (tmp_path / Path(name).name).write_text((ROOT / name).read_text())
    (tmp_path / "test_suite.py").write_text(SUITE)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_suite.py"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.splitlines()[-1].startswith("2 failed, 1 passed in"), result.stdout
    for test in ("test_unmarked", "test_unmarked_through_asyncio"):
        assert (
            f"test_suite.py::{test} starts {sys.executable} -c pass but is not marked e2e: "
            "add pytestmark = pytest.mark.e2e (docs/testing.md)" in result.stdout
        ), result.stdout
