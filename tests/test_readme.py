"""The README is part of the product: its commands and tables must match the code."""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def load_cli(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"cli_{Path(path).stem}", ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Run as a module without a package, the entry point rewrites sys.path[0]
    # as it does for a script; the tests after this one need theirs back.
    saved_path = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved_path
    return module


def test_opens_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()[1:]]
    assert commands == ["python3 dev.py demo", "python3 dev.py test"]


def test_ci_runs_the_readme_test_command() -> None:
    assert "python3 dev.py test" in (ROOT / ".ci" / "run").read_text()


CLIS = ["server/server.py", "client/client.py"]


@dataclass(frozen=True)
class FlagRow:
    """One flag of a row in a README flag table (a row may document two)."""

    flag: str
    variable: str
    default: str
    choices: Optional[str]  # what follows the flag in its cell, e.g. "vp8\\|h264"


def flag_rows(path: str) -> list[FlagRow]:
    """The rows of the README's flag table for ``path``, one per long flag.

    A row such as ``| `--width`, `--height` | `WIDTH`, `HEIGHT` | 640, 480 |``
    documents two flags: the n-th flag goes with the n-th variable and the
    n-th default.
    """
    section = README.split(f"`python {path}`")[1].split("Exit status")[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    assert lines[0].replace(" ", "").startswith("|flag|environment|default|"), lines[0]
    rows = []
    for line in lines[2:]:  # after the header and its |---| line
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        flag_cell, variable_cell, default_cell = cells[:3]
        flags = re.findall(r"`(--[a-z0-9-]+)`", flag_cell)
        variables = re.findall(r"`([A-Z][A-Z0-9_]*)`", variable_cell)
        defaults = (
            [d.strip() for d in default_cell.split(",")] if len(flags) > 1 else [default_cell]
        )
        assert flags and len(flags) == len(variables) == len(defaults), line
        choices = re.sub(r"`[^`]*`,?", "", flag_cell).strip() or None if len(flags) == 1 else None
        rows += [
            FlagRow(flag, variable, default, choices)
            for flag, variable, default in zip(flags, variables, defaults, strict=True)
        ]
    return rows


def long_flag(action: argparse.Action) -> str:
    return [o for o in action.option_strings if o.startswith("--")][0]


def documented_default(action: argparse.Action) -> str:
    """How the README's tables write ``action``'s default."""
    default = action.default
    if default is None:
        return "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def parser_actions(path: str) -> dict[str, argparse.Action]:
    parser = load_cli(path).build_parser()
    return {long_flag(a): a for a in parser._actions if a.dest != "help"}


@pytest.mark.parametrize("path", CLIS)
def test_every_flag_is_in_the_table_once_and_only_flags_the_parser_has(path: str) -> None:
    documented = [row.flag for row in flag_rows(path)]
    assert len(documented) == len(set(documented)), f"a flag documented twice: {documented}"
    assert set(documented) == set(parser_actions(path)), (
        f"README only: {set(documented) - set(parser_actions(path))}; "
        f"parser only: {set(parser_actions(path)) - set(documented)}"
    )


@pytest.mark.parametrize("path", CLIS)
def test_each_rows_variable_default_and_choices_are_the_parsers(path: str) -> None:
    actions = parser_actions(path)
    for row in flag_rows(path):
        action = actions[row.flag]
        variable = action.environment_variable  # type: ignore[attr-defined]
        assert row.variable == variable, (
            f"{row.flag}: README says {row.variable}, parser {variable}"
        )
        expected = documented_default(action)
        assert row.default.strip("`") == expected, (
            f"{row.flag}: README default {row.default!r}, parser {action.default!r}"
        )
        if action.choices is not None:
            assert row.choices is not None, f"{row.flag}: choices not in the README"
            assert row.choices.replace("\\|", "|").split("|") == list(action.choices), row


def test_every_runtime_dependency_is_explained() -> None:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            assert f"| {name} {version} |" in README, f"{name} not explained in README"


def test_no_placeholders_left() -> None:
    assert not re.search(r"\b[A-Z]+_SECTION\b|\bLAT_P\d+\b|MEAN_ERROR|MAX_ERROR", README)
