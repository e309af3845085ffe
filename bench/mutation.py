"""Mutation testing of the pure core with mutmut, each module against its own unit tests.

``nice -n 10 .venv/bin/python bench/mutation.py`` (or name some modules:
``... bench/mutation.py server/core/scene.py protocol/coordinates.py``)

For every module of ``MODULES`` the script lays out a work directory,
``mutants/<module>/`` (git-ignored), holding copies of the packages, that
module's own test file and a ``pyproject.toml`` with the ``[tool.mutmut]``
section for it, then runs ``mutmut run`` there with one worker process and
reads the verdicts back with ``mutmut results``. Nothing in the repository
itself is touched, and a module's mutants are only ever killed by its own
fast unit tests, never by another module's tests or the end-to-end suite.

It prints one markdown table (module | mutants | killed | survived | timeout |
crashed | no tests | score %), the surviving mutants by name, and the run
time. The score is (killed + timeout + crashed) / mutants: a mutant whose
tests fail, hang or crash the test process is caught. To look at a survivor:
``cd mutants/server.scene && ../../.venv/bin/mutmut show <name>``.

Each module starts from an empty work directory: mutmut keeps a verdict
across runs even when the tests changed, so a cached survivor would stay a
survivor after the test that kills it was written.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent

#: Module under test -> its own fast unit tests.
MODULES: dict[str, str] = {
    "server/core/scene.py": "tests/test_scene.py",
    "server/core/renderer.py": "tests/test_renderer.py",
    "server/core/ledger.py": "tests/test_ledger.py",
    "server/core/statistics.py": "tests/test_statistics.py",
    "server/core/scoreboard.py": "tests/test_scoreboard.py",
    "client/detection/detector.py": "tests/test_detector.py",
    "protocol/coordinates.py": "tests/test_protocol_coordinates.py",
    "protocol/signaling.py": "tests/test_protocol_signaling.py",
}

#: The packages the tests import; copied whole, only the one module is mutated.
PACKAGES = ("server", "client", "protocol")

WORK_ROOT = ROOT / "mutants"

#: mutmut's verdicts (``mutmut results``) folded into the table's columns.
COLUMNS = {
    "killed": "killed",
    "caught by type check": "killed",
    "survived": "survived",
    "timeout": "timeout",
    "no tests": "no tests",
    # The test process died of a signal: a mutant that crashes OpenCV (None
    # for an array), or one killed by mutmut's hard CPU limit. Caught either way.
    "segfault": "crashed",
}

_RESULT_LINE = re.compile(r"^\s+(?P<name>\S+): (?P<status>.+)$")


@dataclass
class ModuleResult:
    module: str
    seconds: float
    counts: Counter[str] = field(default_factory=Counter)
    survivors: list[str] = field(default_factory=list)
    #: Verdicts other than the table's columns (suspicious, segfault, ...).
    other: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def score(self) -> Optional[float]:
        if not self.total:
            return None
        caught = self.counts["killed"] + self.counts["timeout"] + self.counts["crashed"]
        return 100.0 * caught / self.total


def work_dir(module: str) -> Path:
    return WORK_ROOT / module.removesuffix(".py").replace("/", ".")


def config_text(module: str, tests: str) -> str:
    packages = ", ".join(f'"{p}"' for p in PACKAGES)
    return f"""\
# Written by bench/mutation.py for {module}; the directory is thrown away.
[tool.mutmut]
source_paths = [{packages}]
only_mutate = ["{module}"]
pytest_add_cli_args_test_selection = ["{tests}"]
# A fixed seed: hypothesis draws the same examples for every mutant and run.
pytest_add_cli_args = ["-p", "no:cacheprovider", "--hypothesis-seed=0"]
use_git_change_detection = false

# Present so pytest stops here instead of reading the repository's pytest.ini,
# whose pythonpath = . would put the unmutated code ahead of the mutants.
[tool.pytest.ini_options]
"""


def prepare(module: str, tests: str) -> Path:
    """A fresh work directory with the packages, the test file and the config."""
    directory = work_dir(module)
    if directory.exists():
        shutil.rmtree(directory)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, directory / package, ignore=ignore)
    (directory / "tests").mkdir()
    shutil.copy2(ROOT / tests, directory / tests)
    (directory / "pyproject.toml").write_text(config_text(module, tests))
    return directory


def mutmut(directory: Path, *args: str, log: Optional[Path] = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [str(Path(sys.executable).parent / "mutmut"), *args]
    result = subprocess.run(
        command, cwd=directory, env=env, capture_output=True, text=True, check=False
    )
    if log is not None:
        log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed in {directory} ({result.returncode}):\n"
            + (result.stdout + result.stderr)[-4000:]
        )
    return result.stdout


def run_module(module: str, tests: str, max_children: int) -> ModuleResult:
    directory = prepare(module, tests)
    started = time.monotonic()
    mutmut(directory, "run", "--max-children", str(max_children), log=directory / "run.log")
    result = ModuleResult(module, time.monotonic() - started)
    for line in mutmut(directory, "results", "--all", "true").splitlines():
        match = _RESULT_LINE.match(line)
        if match is None:
            continue
        name, status = match["name"], match["status"]
        column = COLUMNS.get(status)
        if column is None:
            result.other.append(f"{name}: {status}")
            column = "other"
        result.counts[column] += 1
        if column == "survived":
            result.survivors.append(name)
    return result


def table(results: Sequence[ModuleResult]) -> str:
    header = "| module | mutants | killed | survived | timeout | crashed | no tests | score % |"
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        score = "-" if r.score is None else f"{r.score:.1f}"
        lines.append(
            f"| {r.module} | {r.total} | {r.counts['killed']} | {r.counts['survived']} "
            f"| {r.counts['timeout']} | {r.counts['crashed']} | {r.counts['no tests']} | {score} |"
        )
    total = Counter[str]()
    for r in results:
        total.update(r.counts)
    mutants = sum(total.values())
    if len(results) > 1 and mutants:
        score = 100.0 * (total["killed"] + total["timeout"] + total["crashed"]) / mutants
        lines.append(
            f"| **all** | {mutants} | {total['killed']} | {total['survived']} "
            f"| {total['timeout']} | {total['crashed']} | {total['no tests']} | {score:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "modules", nargs="*", metavar="MODULE", help=f"any of {', '.join(MODULES)} (default: all)"
    )
    parser.add_argument(
        "--max-children",
        type=int,
        default=1,
        help="mutmut worker processes (default 1: the box is shared)",
    )
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"not a module of the pure core: {', '.join(unknown)}")
    modules = args.modules or list(MODULES)
    if os.nice(0) < 10:
        os.nice(10 - os.nice(0))  # the mutants must not slow anybody's latency test

    started = time.monotonic()
    results = []
    for module in modules:
        print(f"{module} against {MODULES[module]} ...", file=sys.stderr, flush=True)
        result = run_module(module, MODULES[module], args.max_children)
        print(f"  {result.total} mutants in {result.seconds:.0f} s", file=sys.stderr, flush=True)
        results.append(result)
    elapsed = time.monotonic() - started

    print(table(results))
    for r in results:
        if r.survivors or r.other:
            print(f"\n{r.module} ({work_dir(r.module).relative_to(ROOT)}):")
            for name in r.survivors:
                print(f"  survived: {name}")
            for line in r.other:
                print(f"  {line}")
    print(f"\n{len(modules)} modules in {elapsed:.0f} s with {args.max_children} worker(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
