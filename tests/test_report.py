import csv
import json
from pathlib import Path

from server.ledger import FrameRecord
from server.report import CSV_COLUMNS, SessionReport


def test_csv_rows_and_json_summary(tmp_path: Path) -> None:
    report = SessionReport(tmp_path / "deep" / "dir", "session-x")
    report.open()
    report.write_frame(FrameRecord(0, 0, 10.0, 20.0, 1.0, True, 10.5, 20.0, 0.5, 7.25))
    report.write_frame(FrameRecord(1, 3000, 11.0, 21.0, 1.1))
    report.close({"frames_sent": 2})
    rows = list(csv.reader(report.csv_path.open()))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[1] == ["0", "10.0000", "20.0000", "10.5000", "20.0000", "0.5000", "7.2500"]
    assert rows[2] == ["3000", "11.0000", "21.0000", "", "", "", ""]
    assert json.loads(report.json_path.read_text()) == {"frames_sent": 2}
    assert not list(tmp_path.rglob("*.tmp"))


def test_summary_without_csv(tmp_path: Path) -> None:
    report = SessionReport(tmp_path, "s")
    report.write_frame(FrameRecord(0, 0, 1.0, 1.0, 0.0))  # not opened: ignored
    report.close({"ok": True})
    assert json.loads(report.json_path.read_text()) == {"ok": True}
