import asyncio
import csv
import json
import platform
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from server.core.ledger import FrameRecord
from server.reports.plot import read_frames
from server.reports.plotter import ReportPlotter
from server.reports.report import (
    CSV_COLUMNS,
    SCHEMA_VERSION,
    SECOND_COLUMNS,
    SessionReport,
    report_metadata,
    seconds_csv_path,
    timestamp,
)

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "docs" / "report.schema.json").read_text())


def assert_valid_report(report: dict) -> None:
    """``report`` follows docs/report.schema.json, times included."""
    jsonschema.Draft202012Validator(SCHEMA).validate(report)
    started = datetime.fromisoformat(report["started_at"])
    assert started.utcoffset() == timedelta(0)
    if report["ended_at"] is not None:
        assert datetime.fromisoformat(report["ended_at"]) >= started


def test_csv_rows_and_json_summary(tmp_path: Path) -> None:
    report = SessionReport(tmp_path / "deep" / "dir", "session-x")
    report.open()
    report.write_frame(FrameRecord(0, 0, 10.0, 20.0, 1.0, True, 10.5, 20.0, 0.5, 7.25))
    report.write_frame(FrameRecord(1, 3000, 11.0, 21.0, 1.1))
    report.close({"frames_sent": 2})
    rows = list(csv.reader(report.csv_path.read_text().splitlines()))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[1] == [
        "0",
        "10.0000",
        "20.0000",
        "10.5000",
        "20.0000",
        "0.5000",
        "7.2500",
        "1.0000",
        "",
        "",
        "",
    ]
    assert rows[2] == ["3000", "11.0000", "21.0000", "", "", "", "", "1.0000", "", "", ""]
    assert json.loads(report.json_path.read_text()) == {"frames_sent": 2}
    assert not list(tmp_path.rglob("*.tmp"))


def test_one_row_a_second_in_its_own_csv(tmp_path: Path) -> None:
    report = SessionReport(tmp_path, "session-y")
    report.open()
    first = (0, 30, 0, 29, 5.25, 180.5, 130.25, None, None, 500.0, 30.0, 1, None)
    second = (1, 15, 15, 15, 6.0, 70.0, 40.0, 85.0, 100.0, 61.0, 15.0, 0, 64.5)
    report.write_second(dict(zip(SECOND_COLUMNS, first)))
    # Bound by name: the order of the keys does not matter.
    report.write_second(dict(reversed(list(zip(SECOND_COLUMNS, second)))))
    with pytest.raises(ValueError, match="columns"):
        report.write_second({"second": 2, "frames_sent": 30})
    with pytest.raises(ValueError, match="columns"):
        report.write_second({**dict(zip(SECOND_COLUMNS, first)), "unknown": 1})
    report.close({})
    assert report.seconds_path == seconds_csv_path(report.csv_path)
    assert report.seconds_path.name == "session-y.seconds.csv"
    rows = list(csv.reader(report.seconds_path.read_text().splitlines()))
    assert tuple(rows[0]) == SECOND_COLUMNS
    assert rows[1][:5] == ["0", "30", "0", "29", "5.2500"] and rows[1][7:9] == ["", ""]
    assert rows[2][7:9] == ["85.0000", "100.0000"] and rows[2][12] == "64.5000"


def test_summary_without_csv(tmp_path: Path) -> None:
    report = SessionReport(tmp_path, "s")
    report.write_frame(FrameRecord(0, 0, 1.0, 1.0, 0.0))  # not opened: ignored
    report.close({"ok": True})
    assert json.loads(report.json_path.read_text()) == {"ok": True}
    assert not report.png_path.exists()  # nothing streamed, nothing to plot


def written_session(directory: Path) -> SessionReport:
    report = SessionReport(directory, "session-p")
    report.open()
    for index in range(90):
        answered = index != 40
        report.write_frame(
            FrameRecord(
                index,
                index * 3000,
                100.0 + index,
                50.0,
                index / 30,
                answered,
                100.01 + index if answered else None,
                50.0 if answered else None,
                0.01 if answered else None,
                5.0 + index % 7 if answered else None,
            )
        )
    return report


def test_the_plotter_draws_the_closed_report_in_its_own_process(tmp_path: Path) -> None:
    report = written_session(tmp_path)
    summary = {"session": "session-p", "frames_sent": 90, "frames_answered": 89}
    report.close(summary)
    assert json.loads(report.json_path.read_text())["frames_answered"] == 89
    assert not report.png_path.exists()  # close() itself never plots

    async def plot() -> None:
        plotter = ReportPlotter()
        try:
            await plotter.plot(report.csv_path, summary, report.png_path)
        finally:
            plotter.close()

    asyncio.run(plot())
    assert report.png_path == tmp_path / "session-p.png"
    image = cv2.imread(str(report.png_path))
    assert image is not None and image.shape == (1000, 1000, 3)
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_failing_plot_costs_only_the_png(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    report = written_session(tmp_path)
    report.close({"frames_sent": 90})
    report.csv_path.write_text("not,the,report,columns\n")  # the worker cannot read it

    async def plot() -> None:
        plotter = ReportPlotter()
        try:
            await plotter.plot(report.csv_path, {"frames_sent": 90}, report.png_path)
        finally:
            plotter.close()

    asyncio.run(plot())
    assert json.loads(report.json_path.read_text()) == {"frames_sent": 90}
    assert not report.png_path.exists()
    assert "no plot written" in caplog.text and "columns" in caplog.text


def test_read_frames_gives_the_csv_back_as_arrays(tmp_path: Path) -> None:
    report = written_session(tmp_path)
    report.close({})
    frames = read_frames(report.csv_path)
    assert len(frames) == 90
    assert frames.time_s[:3] == pytest.approx([0.0, 1 / 30, 2 / 30])
    assert np.isnan(frames.latency_ms[40]) and np.isnan(frames.error_px[40])
    assert frames.latency_ms[41] == pytest.approx(5.0 + 41 % 7)
    assert frames.error_px[41] == pytest.approx(0.01)
    assert int(frames.answered.sum()) == 89 == int(frames.found.sum())


def test_read_frames_refuses_other_columns(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("pts,x\n0,1\n")
    with pytest.raises(ValueError, match="columns"):
        read_frames(path)


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["properties"]["schema_version"]["const"] == SCHEMA_VERSION


def test_metadata_names_format_host_and_versions() -> None:
    metadata = report_metadata()
    assert metadata["schema_version"] == SCHEMA_VERSION
    assert metadata["host"]
    assert metadata["versions"]["python"] == platform.python_version()
    assert metadata["versions"]["aiortc"] != "unknown"


def test_timestamps_are_utc_rfc3339() -> None:
    assert timestamp(0.25) == "1970-01-01T00:00:00.250+00:00"
    assert timestamp(None) is None


def test_a_report_missing_a_key_or_of_another_version_is_invalid() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"schema_version": SCHEMA_VERSION}, SCHEMA)
