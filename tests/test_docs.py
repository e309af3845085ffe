"""docs/ is part of the product: its tables must say what the code does.

The flag tables (docs/cli.md) against the parsers, the endpoint table
(docs/http-api.md) against the console's routes, the metric table against
the registry, the report's key table (docs/reports.md) against the schema and
a session's summary, the dependency table against requirements.txt.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lab.programs import load_program
from server.console.metrics import TrackingMetrics
from server.sessions.session import SessionConfig, TrackingSession

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def doc(name: str) -> str:
    return (DOCS / name).read_text()


def table_rows(text: str) -> list[list[str]]:
    """The body rows of every Markdown table in ``text``, as cells."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|") or re.fullmatch(r"[|\s:-]+", line):
            continue
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


# -- flags -----------------------------------------------------------------------

CLIS = ["server/server.py", "client/client.py"]


@dataclass(frozen=True)
class FlagRow:
    """One flag of a row in a flag table (a row may document two)."""

    flag: str
    variable: str
    default: str
    choices: Optional[str]  # what follows the flag in its cell, e.g. "vp8\\|h264"


def flag_rows(path: str) -> list[FlagRow]:
    """The rows of docs/cli.md's flag table for ``path``, one per long flag.

    A row such as ``| `--width`, `--height` | `BALLTRACKER_WIDTH`,
    `BALLTRACKER_HEIGHT` | 640, 480 |`` documents two flags: the n-th flag
    goes with the n-th variable and the n-th default.
    """
    section = doc("cli.md").split(f"`python {path}`")[1].split("Exit status")[0]
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
    """How the tables write ``action``'s default."""
    default = action.default
    if default is None:
        return "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def parser_actions(path: str) -> dict[str, argparse.Action]:
    parser = load_program(path).build_parser()
    return {long_flag(a): a for a in parser._actions if a.dest != "help"}


@pytest.mark.parametrize("path", CLIS)
def test_every_flag_is_in_the_table_once_and_only_flags_the_parser_has(path: str) -> None:
    documented = [row.flag for row in flag_rows(path)]
    assert len(documented) == len(set(documented)), f"a flag documented twice: {documented}"
    assert set(documented) == set(parser_actions(path)), (
        f"docs only: {set(documented) - set(parser_actions(path))}; "
        f"parser only: {set(parser_actions(path)) - set(documented)}"
    )


@pytest.mark.parametrize("path", CLIS)
def test_each_rows_variable_default_and_choices_are_the_parsers(path: str) -> None:
    actions = parser_actions(path)
    for row in flag_rows(path):
        action = actions[row.flag]
        variable = action.environment_variable  # type: ignore[attr-defined]
        assert row.variable == variable, f"{row.flag}: docs say {row.variable}, parser {variable}"
        expected = documented_default(action)
        assert row.default.strip("`") == expected, (
            f"{row.flag}: docs default {row.default!r}, parser {action.default!r}"
        )
        if action.choices is not None:
            assert row.choices is not None, f"{row.flag}: choices not in the docs"
            assert row.choices.replace("\\|", "|").split("|") == list(action.choices), row


def test_the_readmes_key_flags_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Key flags")[1].split("\n## ")[0]
    every = set(parser_actions(CLIS[0])) | set(parser_actions(CLIS[1]))
    named = set(re.findall(r"`(--[a-z0-9-]+)`", section))
    assert named and named <= every, named - every


# -- endpoints -------------------------------------------------------------------


def normalized(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_the_endpoint_table_lists_every_route() -> None:
    source = (ROOT / "server" / "console" / "web_console.py").read_text()
    routes = {
        (method.upper(), normalized(path))
        for method, path in re.findall(r'add_(get|post|delete|patch)\(\s*"([^"]+)"', source)
    }
    documented = set()
    deletes = 0
    for row in table_rows(doc("http-api.md")):
        found = re.fullmatch(r"`(GET|POST|DELETE|PATCH) (/[^`]*)`", row[0])
        if found:
            documented.add((found.group(1), normalized(found.group(2))))
        elif row[0].startswith("`DELETE` that"):
            deletes += 1
    code_deletes = {route for route in routes if route[0] == "DELETE"}
    assert documented == routes - code_deletes, (
        f"docs only: {documented - routes}; code only: {routes - code_deletes - documented}"
    )
    assert deletes == len(code_deletes)


# -- metrics ---------------------------------------------------------------------


def test_the_metric_table_is_the_registry() -> None:
    metrics = TrackingMetrics()
    metrics.count_slots(1, lambda: 1)
    families = {
        f.name: f
        for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        # prometheus_client's _created timestamps parse as families of their own.
        if f.name.startswith("balltracker_") and not f.name.endswith("_created")
    }
    documented = {}
    for row in table_rows(doc("http-api.md")):
        found = re.fullmatch(r"`(balltracker_[a-z_]+)`", row[0])
        if found:
            documented[found.group(1)] = row
    # The text format names a counter's family without its _total.
    names = {(n + "_total" if f.type == "counter" else n): f for n, f in families.items()}
    assert set(documented) == set(names)
    for name, row in documented.items():
        family = names[name]
        assert row[1] == family.type, (name, row[1], family.type)
        labels = {key for sample in family.samples for key in sample.labels if key != "le"}
        assert set(re.findall(r"`([a-z_]+)`(?:: |,|$)", row[2])) >= labels, (name, row[2])


# -- reports ---------------------------------------------------------------------


class _Peer:
    peer = "127.0.0.1:1"


def test_the_report_key_table_is_the_schema_and_the_summary() -> None:
    schema = json.loads((DOCS / "report.schema.json").read_text())
    documented = set()
    for row in table_rows(doc("reports.md")):
        documented |= set(re.findall(r"`([a-z_]+)`", row[0].split("{")[0]))
    summary = TrackingSession(1, _Peer(), SessionConfig()).summary()  # type: ignore[arg-type]
    assert documented == set(schema["properties"]) == set(summary), (
        f"docs: {sorted(documented ^ set(summary))}; "
        f"schema: {sorted(set(schema['properties']) ^ set(summary))}"
    )
    assert set(schema["required"]) == set(schema["properties"])


# -- dependencies ----------------------------------------------------------------


def test_every_runtime_dependency_is_explained() -> None:
    text = doc("architecture.md")
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            assert f"| {name} {version} |" in text, f"{name} not explained in docs"
