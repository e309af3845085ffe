"""bench/encoder_cost.py: both tables come out, with a number in every cell; bad flags exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "encoder_cost.py"


def run(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *flags], capture_output=True, text=True, timeout=120
    )


def test_both_tables_have_a_measured_row_for_each_case() -> None:
    result = run("--sizes", "64x48", "--frames", "3", "--encoders", "1,3")
    assert result.returncode == 0, result.stderr
    rows = [
        line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| 64x48")
    ]
    timing = [row for row in rows if len(row) == 5]
    shared = [row for row in rows if len(row) == 4]
    assert [(row[1].strip(), row[2].strip()) for row in timing] == [
        (cpu_used, way) for cpu_used in ("-6", "-16") for way in ("loop", "sleep", "spin")
    ]
    assert [(row[1].strip(), row[2].strip()) for row in shared] == [
        (content, encoders) for content in ("ball", "black") for encoders in ("1", "3")
    ]
    for row in rows:
        assert float(row[-1]) > 0


def test_bad_flags_get_one_line_and_exit_2() -> None:
    for flags in (["--encoders", "0"], ["--encoders", "two"], ["--sizes", "65x48"]):
        result = run(*flags)
        assert result.returncode == 2, flags
        assert "Traceback" not in result.stderr and "error:" in result.stderr
