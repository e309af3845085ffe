"""The README is part of the product: its commands and tables must match the code."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_opens_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()[1:]]
    assert commands == ["python3 dev.py demo", "python3 dev.py test"]


def test_ci_runs_the_readme_test_command() -> None:
    assert "python3 dev.py test" in (ROOT / ".ci" / "run").read_text()


#: Pages other branches write; their links are checked once they exist here.
def relative_links(text: str) -> list[str]:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    return [link for link in links if "://" not in link and not link.startswith("mailto:")]


def test_the_readme_is_short() -> None:
    assert len(README.splitlines()) <= 250


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {link for link in relative_links(README) if link.startswith("docs/")}
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages <= linked, f"not linked from the README: {sorted(pages - linked)}"
    assert "docs/report.schema.json" in linked


def test_every_link_in_the_readme_and_docs_resolves() -> None:
    documents = [ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")]
    for document in documents:
        for link in relative_links(document.read_text()):
            target = (document.parent / link).resolve()
            assert target.exists(), f"{document.name}: {link} does not exist"


def test_the_screenshot_is_a_real_png() -> None:
    assert "(docs/console.png)" in README
    data = (ROOT / "docs" / "console.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_requirements_are_stated_honestly() -> None:
    assert "Python 3.11 or newer" in README and "3.10" not in README
    assert "libGL.so.1" in README and "libglib-2.0.so.0" in README
    assert "Debian 12" in README
    assert "python_requires" not in README  # no packaging metadata claims a range


def test_no_unsourced_claims_about_other_projects() -> None:
    assert "typical public solution" not in README


def test_license_is_bsd_3_clause() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("BSD 3-Clause License")


def test_no_placeholders_left() -> None:
    assert not re.search(r"\b[A-Z]+_SECTION\b|\bLAT_P\d+\b|MEAN_ERROR|MAX_ERROR", README)
