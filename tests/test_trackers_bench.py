"""bench/trackers.py: its flags, what a cell shows, the summary, and one real tiny run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import pytest

from bench.trackers import (
    BROWSER_DETECTOR_NOTE,
    COLUMNS,
    DEFAULT_SECONDS,
    LINKS,
    NO_FRAMES_NOTE,
    Cell,
    build_parser,
    figures,
    leaderboard_table,
    main,
    pixels,
    plan_of,
    run,
    summary_rows,
)
from server.core.scenes import SCENES


def report(
    answered: float = 1.0,
    error_p50: float = 0.005,
    latency_p50: float = 4.0,
    visibility: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """A session summary with the keys the leaderboard reads (docs/reports.md)."""
    return {
        "frames_sent": 120,
        "answered_ratio": answered,
        "error_px": {"mean": error_p50, "max": 1.0, "p50": error_p50, "p95": 0.03},
        "error_at_arrival_px": {"mean": 1.0, "max": 9.0, "p50": 1.2, "p95": 2.5},
        "latency_ms": {"mean": 5.0, "max": 20.0, "p50": latency_p50, "p95": 9.0, "p99": 15.9},
        "visibility": visibility
        or {"found_when_visible_ratio": 0.875, "false_positives_when_hidden": 3},
    }


def body_rows(table: str) -> list[list[str]]:
    lines = [line for line in table.splitlines() if line.startswith("| ")][2:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


# -- flags ----------------------------------------------------------------------------


def test_the_defaults_are_every_detector_scene_and_link() -> None:
    plan = plan_of(build_parser().parse_args([]))
    assert [t.name for t in plan.trackers] == ["centroid", "hough", "kalman", "browser"]
    assert plan.scenes == tuple(SCENES) and len(plan.scenes) == 7
    assert [link.name for link in plan.links] == ["clean", "loss", "cap"]
    assert plan.seconds == DEFAULT_SECONDS


def test_subsets_keep_the_tables_order_and_all_means_all() -> None:
    args = build_parser().parse_args(
        ["--detectors", "kalman,centroid", "--scenes", "occlusion,classic", "--links", "all"]
        + ["--seconds", "2.5"]
    )
    plan = plan_of(args)
    assert [t.name for t in plan.trackers] == ["centroid", "kalman"]
    assert plan.scenes == ("classic", "occlusion")
    assert plan.links == LINKS and plan.seconds == 2.5


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--detectors", "centroid,yolo"], "unknown detector yolo; choose from centroid, hough"),
        (["--scenes", "fog"], "unknown scene fog; choose from classic, noise"),
        (["--links", ","], "unknown link ','"),
        (["--seconds", "0.5"], "must be at least 1 s"),
        (["--seconds", "soon"], "not a number of seconds: 'soon'"),
        (["--seconds", "nan"], "must be at least 1 s"),
    ],
)
def test_a_bad_value_is_one_line_and_exit_status_2(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("trackers.py: error: argument ") and expected in err, err


# -- one cell ---------------------------------------------------------------------------


def test_figures_come_from_the_report_and_visibility_only_for_occlusion() -> None:
    occluded = figures(Cell("centroid", "occlusion", "clean", report=report(), detector_ms=0.2))
    assert occluded.answered_pct == 100.0 and occluded.error_p50_px == 0.005
    assert (occluded.arrival_p50_px, occluded.arrival_p95_px) == (1.2, 2.5)
    assert (occluded.latency_p50_ms, occluded.latency_p99_ms) == (4.0, 15.9)
    assert occluded.detector_ms == 0.2
    assert occluded.found_when_visible_pct == 87.5
    assert occluded.false_positives_when_hidden == 3
    plain = figures(Cell("centroid", "classic", "clean", report=report()))
    assert plain.found_when_visible_pct is None and plain.false_positives_when_hidden is None
    unmeasured = figures(Cell("hough", "classic", "loss", "not run", "no namespaces"))
    assert unmeasured.answered_pct is None and unmeasured.latency_p99_ms is None


def test_a_session_without_answers_has_no_error_figures() -> None:
    empty = report(answered=0.0)
    empty["error_px"] = {"mean": None, "max": None, "p50": None, "p95": None}
    row = body_rows(leaderboard_table([Cell("centroid", "noise", "cap", report=empty)]))[0]
    assert row[3:6] == ["120", "0.0", "— / —"]
    silent = report(answered=0.0) | {"frames_sent": 0, "answered_ratio": None}
    table = leaderboard_table([Cell("hough", "classic", "loss", report=silent)])
    assert body_rows(table)[0][3:5] == ["0", "—¹"]
    assert table.endswith(f"¹ {NO_FRAMES_NOTE}")


def test_pixels_keep_the_digits_that_matter() -> None:
    assert [pixels(v) for v in (0.0061, 0.43, 2.5, 11.71, 203.4, None)] == [
        "0.006",
        "0.430",
        "2.50",
        "11.7",
        "203",
        "—",
    ]


# -- the tables -------------------------------------------------------------------------


def test_the_table_has_a_row_per_cell_and_footnotes_each_reason_once() -> None:
    cells = [
        Cell("centroid", "classic", "clean", report=report(), detector_ms=0.213),
        Cell("browser", "occlusion", "clean", report=report(), detector_ms=0.97),
        Cell("kalman", "classic", "loss", "not run", "no network namespaces here: not root"),
        Cell("hough", "classic", "loss", "not run", "no network namespaces here: not root"),
        Cell("hough", "classic", "cap", "failed", "the server reported no session"),
        Cell("centroid", "blur", "cap", reason="the client exited 1: boom", report=report()),
    ]
    table = leaderboard_table(cells)
    lines = table.splitlines()
    assert lines[0] == "| " + " | ".join(COLUMNS) + " |"
    rows = body_rows(table)
    assert len(rows) == len(cells) and all(len(row) == len(COLUMNS) for row in rows)
    assert rows[0] == [
        "clean", "classic", "centroid", "120", "100.0", "0.005 / 0.030", "1.20 / 2.50",
        "4.0 / 15.9", "0.21", "", "",
    ]  # fmt: skip
    assert rows[1][2] == "browser /track" and rows[1][8] == "0.97¹"
    assert rows[1][9:] == ["87.5", "3"]
    assert rows[2][:5] == ["5 % loss", "classic", "Kalman", "", "not run²"]
    assert rows[3][4] == "not run²" and rows[3][5:] == [""] * 6
    assert rows[4][:5] == ["100 kbit/s cap", "classic", "Hough", "", "failed³"]
    assert rows[5][4] == "100.0⁴"
    assert lines[-4:] == [
        f"¹ {BROWSER_DETECTOR_NOTE}",
        "² no network namespaces here: not root",
        "³ the server reported no session",
        "⁴ the client exited 1: boom",
    ]


def test_the_summary_takes_each_detector_and_links_measured_cells() -> None:
    cells = [
        Cell("centroid", "classic", "clean", report=report(1.0, 0.004, 4.0), detector_ms=0.2),
        Cell("centroid", "noise", "clean", report=report(0.9, 0.06, 20.0), detector_ms=0.4),
        Cell("centroid", "blur", "clean", report=report(0.95, 0.01, 6.0), detector_ms=0.3),
        Cell("centroid", "classic", "loss", "not run", "no namespaces"),
        Cell("centroid", "noise", "loss", report=report() | {"frames_sent": 0}),
    ]
    assert summary_rows(cells) == [
        ["centroid", "clean", "3 of 3", "95.0", "0.010", "1.20", "6.0", "0.30"],
        ["centroid", "5 % loss", "0 of 2", "—", "—", "—", "—", "—"],
    ]


def test_without_namespaces_the_impaired_links_are_not_run_and_nothing_starts() -> None:
    argv = ["--detectors", "centroid,browser", "--scenes", "classic,occlusion"]
    plan = plan_of(build_parser().parse_args([*argv, "--links", "loss,cap"]))
    cells = run(plan, None, "must run as root")
    assert len(cells) == 2 * 2 * 2
    assert {c.status for c in cells} == {"not run"} and not any(c.report for c in cells)
    assert cells[0].reason == "no network namespaces here: must run as root"


# -- a real run ---------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_tiny_real_run_prints_and_writes_its_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "leaderboard.json"
    argv = ["--detectors", "centroid", "--scenes", "classic", "--links", "clean"]
    status = main([*argv, "--seconds", "3", "--json", str(output)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert out.startswith("command: bench/trackers.py --detectors centroid"), out
    assert out.splitlines()[1].startswith("machine: "), out
    (row,) = [r for r in body_rows(out) if r[:3] == ["clean", "classic", "centroid"]]
    document = json.loads(output.read_text())
    (cell,) = document["cells"]
    assert cell["status"] == "ok" and cell["client_exit"] == 0, cell
    assert cell["report"]["scene"] == "classic"
    # Loose bounds: a busy 2-core machine.
    assert cell["figures"]["answered_pct"] >= 90, cell["figures"]
    assert cell["figures"]["error_p50_px"] < 0.5, cell["figures"]
    assert cell["figures"]["detector_ms"] > 0, cell["figures"]
    assert row[3] == str(cell["report"]["frames_sent"])
    assert row[4] == f"{cell['figures']['answered_pct']:.1f}"
