"""The import rules of the product code, read from its syntax trees (no imports run).

- ``server/core/`` is pure: nothing it imports, directly or through our own
  modules, imports aiortc or asyncio (the renderer fills PyAV frames: av is
  a data type here, not I/O).
- ``client/detection/`` never imports av or aiortc (the detector process
  imports it, and av before cv2 breaks OpenCV's windows).
- aiortc's private names are spelled once, in ``protocol/aiortc_internals.py``;
  only ``server/media/``, ``client/media/`` and ``protocol/`` use that table.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterable

import pytest

from protocol.aiortc_internals import MANGLED_NAMES

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("server", "client", "protocol")
TABLE_MODULE = "protocol.aiortc_internals"
TABLE_NAMES = {"SenderPrivate", "ReceiverPrivate", "JitterBufferPrivate", "OtherPrivate"}
MAY_USE_TABLE = ("server.media", "client.media", "protocol")
#: A name-mangled private attribute of some class: _Class__name.
MANGLED = re.compile(r"^_[A-Z][A-Za-z0-9]*__[a-z_0-9]+$")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_modules() -> dict[str, ast.Module]:
    return {
        module_name(path): ast.parse(path.read_text(encoding="utf8"), str(path))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def imported_modules(tree: ast.AST) -> set[str]:
    """Every module an import statement in ``tree`` names, wherever it sits."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def imported_names(tree: ast.AST, module: str) -> set[str]:
    return {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == module
        for alias in node.names
    }


def forbidden_imports(
    modules: dict[str, ast.Module], roots: Iterable[str], forbidden: tuple[str, ...]
) -> dict[str, set[str]]:
    """The forbidden imports of ``roots`` and of every module of ours they import, by module."""
    seen: set[str] = set()
    waiting = list(roots)
    bad: dict[str, set[str]] = {}
    while waiting:
        name = waiting.pop()
        if name in seen or name not in modules:
            continue
        seen.add(name)
        for imported in imported_modules(modules[name]):
            if imported.split(".")[0] in forbidden:
                bad.setdefault(name, set()).add(imported)
            elif imported in modules:
                waiting.append(imported)
    return bad


def private_spellings(tree: ast.AST) -> set[str]:
    """Mangled names ``tree`` spells, as strings or attributes."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in MANGLED_NAMES or MANGLED.match(node.value):
                found.add(node.value)
        elif isinstance(node, ast.Attribute) and MANGLED.match(node.attr):
            found.add(node.attr)
    return found


def in_package(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


MODULES = product_modules()


def test_the_core_imports_no_aiortc_or_asyncio() -> None:
    core = [name for name in MODULES if in_package(name, ("server.core",))]
    assert len(core) >= 6
    assert forbidden_imports(MODULES, core, ("aiortc", "asyncio")) == {}


def test_the_detectors_import_no_av_or_aiortc() -> None:
    detection = [name for name in MODULES if in_package(name, ("client.detection",))]
    assert len(detection) >= 5
    assert forbidden_imports(MODULES, detection, ("aiortc", "av")) == {}


def test_private_aiortc_names_are_spelled_only_in_the_table() -> None:
    spelled = {
        name: names
        for name, tree in MODULES.items()
        if name != TABLE_MODULE and (names := private_spellings(tree))
    }
    assert spelled == {}
    assert private_spellings(MODULES[TABLE_MODULE]) >= MANGLED_NAMES


def test_only_the_media_packages_and_protocol_use_the_table() -> None:
    users = {
        name for name, tree in MODULES.items() if imported_names(tree, TABLE_MODULE) & TABLE_NAMES
    }
    assert users  # the hooks use it
    assert {name for name in users if not in_package(name, MAY_USE_TABLE)} == set()


# --- the rules can fail -----------------------------------------------------------


def test_a_transitive_import_is_caught() -> None:
    modules = {
        "server.core.a": ast.parse("from server.core import b\nimport numpy"),
        "server.core.b": ast.parse("def f():\n    import asyncio.tasks"),
    }
    assert forbidden_imports(modules, ["server.core.a"], ("asyncio",)) == {
        "server.core.b": {"asyncio.tasks"}
    }


@pytest.mark.parametrize(
    "source",
    [
        "getattr(sender, '_RTCRtpSender__encoder')",
        "receiver._RTCRtpReceiver__jitter_buffer",
        "x = '_Vp8Encoder__target_bitrate'",
        "y = '_SomeClass__future_name'",
    ],
)
def test_a_private_spelling_is_caught(source: str) -> None:
    assert private_spellings(ast.parse(source))
