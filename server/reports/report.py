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
from pathlib import Path
from typing import IO, Any, Optional, Sequence

from server.core.ledger import FrameRecord

CSV_COLUMNS = (
    "pts",
    "true_x",
    "true_y",
    "reported_x",
    "reported_y",
    "error_px",
    "latency_ms",
    "visibility",
    "arrival_true_x",
    "arrival_true_y",
    "error_at_arrival_px",
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
        self._seconds_writer = csv.writer(self._seconds_file)
        self._seconds_writer.writerow(SECOND_COLUMNS)

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
                _cell(record.visibility),
                _cell(record.arrival_true_x),
                _cell(record.arrival_true_y),
                _cell(record.error_at_arrival_px),
            )
        )

    def write_second(self, values: Sequence[Any]) -> None:
        """One row of the per-second CSV, ``SECOND_COLUMNS`` in order; None is empty."""
        if self._seconds_writer is None:
            return
        if len(values) != len(SECOND_COLUMNS):
            raise ValueError(f"{len(values)} values for {len(SECOND_COLUMNS)} columns")
        self._seconds_writer.writerow([v if isinstance(v, int) else _cell(v) for v in values])

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
