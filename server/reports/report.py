"""Per-session report files: a JSON summary, a CSV with one row per frame
and a CSV with one row per second.

Rows are written as frames retire from the ledger, so a session of hours
streams to disk instead of piling up in memory. The per-second CSV is the
link adaptation's record (``server.media.link_adaptation``): what was sent and
skipped, the bitrate and frame rate in use. The PNG plot is drawn from both
CSVs by ``server.reports.plot``, in a worker process (``server.reports.plotter``).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import socket
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any, Mapping, Optional

from protocol.version import VERSION
from server.core.ledger import FrameRecord

#: The report's format, as ``docs/report.schema.json`` describes it. Raised
#: when a key changes meaning or goes; a new key does not raise it.
SCHEMA_VERSION = 1

CSV_COLUMNS = (
    "pts",
    "true_x",
    "true_y",
    "reported_x",
    "reported_y",
    "error_px",
    "latency_ms",
)

#: The per-second CSV: see ``server.media.link_adaptation.SecondRecord``.
SECOND_COLUMNS = (
    "second",
    "frames_sent",
    "frames_skipped_for_rate",
    "frames_answered",
    "latency_p50_ms",
    "sent_kbps",
    "payload_kbps",
    "target_kbps",
    "capacity_kbps",
    "bitrate_kbps",
    "fps",
    "keyframes",
    "receiver_estimate_kbps",
)


def timestamp(seconds: Optional[float]) -> Optional[str]:
    """A ``time.time()`` value as RFC 3339 UTC (``2026-12-03T19:06:40.123+00:00``)."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def report_metadata() -> dict[str, Any]:
    """What tells a report's origin apart: the format, the host, the versions.

    With reports from several pods in one place, ``host`` (the pod's name in
    Kubernetes) and the session id (which carries a per-process suffix) keep
    them apart.
    """
    return {
        "schema_version": SCHEMA_VERSION,
        "host": socket.gethostname(),
        "versions": {
            "balltracker": VERSION,
            "aiortc": _package_version("aiortc"),
            "python": platform.python_version(),
        },
    }


def seconds_csv_path(csv_path: Path) -> Path:
    """The per-second CSV that goes with the per-frame ``csv_path``."""
    return csv_path.with_name(f"{csv_path.stem}.seconds.csv")


def _cell(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.4f}"


class SessionReport:
    """Writes ``<name>.csv`` and ``<name>.seconds.csv`` while the session
    runs, then ``<name>.json``.

    ``png_path`` is where the plotter draws ``<name>.png`` afterwards.
    """

    def __init__(self, directory: Path, name: str) -> None:
        self.csv_path = directory / f"{name}.csv"
        self.json_path = directory / f"{name}.json"
        self.png_path = directory / f"{name}.png"
        self.seconds_path = seconds_csv_path(self.csv_path)
        self._directory = directory
        self._name = name
        self._file: Optional[IO[str]] = None
        self._writer: Any = None
        self._seconds_file: Optional[IO[str]] = None
        self._seconds_writer: Any = None

    def open(self) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        self._file = open(self.csv_path, "w", newline="", encoding="utf8")
        self._writer = csv.writer(self._file)
        self._writer.writerow(CSV_COLUMNS)
        self._seconds_file = open(self.seconds_path, "w", newline="", encoding="utf8")
        self._seconds_writer = csv.DictWriter(self._seconds_file, SECOND_COLUMNS)
        self._seconds_writer.writeheader()

    def write_frame(self, record: FrameRecord) -> None:
        if self._writer is None:
            return
        self._writer.writerow(
            (
                record.pts,
                _cell(record.true_x),
                _cell(record.true_y),
                _cell(record.reported_x),
                _cell(record.reported_y),
                _cell(record.error_px),
                _cell(record.latency_ms),
            )
        )

    def write_second(self, row: Mapping[str, Any]) -> None:
        """One row of the per-second CSV, a value for each of ``SECOND_COLUMNS``; None is empty."""
        if self._seconds_writer is None:
            return
        if set(row) != set(SECOND_COLUMNS):
            raise ValueError(
                f"columns {sorted(row)} are not the per-second CSV's {list(SECOND_COLUMNS)}"
            )
        self._seconds_writer.writerow(
            {name: value if isinstance(value, int) else _cell(value) for name, value in row.items()}
        )

    def close(self, summary: dict[str, Any]) -> None:
        """Finish the CSV and write the summary atomically.

        The plot comes afterwards, from another process (``ReportPlotter``):
        drawing it takes a few hundred ms and tens of MB that the server's
        event loop and memory must not pay.
        """
        for file in (self._file, self._seconds_file):
            if file is not None:
                file.close()
        self._file = self._seconds_file = None
        self._writer = self._seconds_writer = None
        temporary = self.json_path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf8")
        os.replace(temporary, self.json_path)
