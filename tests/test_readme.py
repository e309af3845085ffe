"""The README is part of the product: its commands and tables must match the code."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def load_cli(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"cli_{Path(path).stem}", ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_opens_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()[1:]]
    assert commands == ["python3 dev.py demo", "python3 dev.py test"]


def test_ci_runs_the_readme_test_command() -> None:
    assert "python3 dev.py test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("path", ["server/server.py", "client/client.py"])
def test_every_flag_and_variable_is_documented(path: str) -> None:
    parser = load_cli(path).build_parser()
    section = README.split(f"`python {path}`")[1].split("Exit status")[0]
    for action in parser._actions:
        if action.dest == "help":
            continue
        long_flag = [o for o in action.option_strings if o.startswith("--")][0]
        assert f"`{long_flag}`" in section, f"{long_flag} missing from README"
        variable = action.environment_variable  # type: ignore[attr-defined]
        assert re.search(rf"`{variable}`", section), f"{variable} missing from README"


def test_every_runtime_dependency_is_explained() -> None:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            assert f"| {name} {version} |" in README, f"{name} not explained in README"


def test_no_placeholders_left() -> None:
    assert not re.search(r"\b[A-Z]+_SECTION\b|\bLAT_P\d+\b|MEAN_ERROR|MAX_ERROR", README)
