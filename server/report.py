"""Per-session report files: a JSON summary, a CSV with one row per frame, a PNG plot.

Rows are written as frames retire from the ledger, so a session of hours
streams to disk instead of piling up in memory; the plot is drawn from the
CSV read back at the end.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from array import array
from pathlib import Path
from typing import IO, Any, Optional

import numpy as np

from server.ledger import VIDEO_CLOCK_RATE, FrameRecord
from server.plot import SessionSeries, render_session_plot

logger = logging.getLogger("server.report")

CSV_COLUMNS = (
    "pts",
    "true_x",
    "true_y",
    "reported_x",
    "reported_y",
    "error_px",
    "latency_ms",
)


def _cell(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.4f}"


def read_frames(path: Path) -> SessionSeries:
    """The CSV written by ``SessionReport`` as arrays; empty cells become NaN.

    Values go into compact ``array``s rather than lists of floats, so a long
    session costs 24 bytes a frame to read back.
    """
    time_s, error_px, latency_ms = array("d"), array("d"), array("d")
    with open(path, newline="", encoding="utf8") as file:
        reader = csv.DictReader(file)
        if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
            raise ValueError(f"{path}: columns {reader.fieldnames}, expected {CSV_COLUMNS}")
        for row in reader:
            time_s.append(int(row["pts"]) / VIDEO_CLOCK_RATE)
            error_px.append(_value(row["error_px"]))
            latency_ms.append(_value(row["latency_ms"]))
    order = np.argsort(np.frombuffer(time_s), kind="stable")
    return SessionSeries(
        time_s=np.frombuffer(time_s)[order],
        error_px=np.frombuffer(error_px)[order],
        latency_ms=np.frombuffer(latency_ms)[order],
    )


def _value(cell: str) -> float:
    return float(cell) if cell else float("nan")


class SessionReport:
    """Writes ``<name>.csv`` while the session runs, then ``<name>.png`` and ``<name>.json``."""

    def __init__(self, directory: Path, name: str) -> None:
        self.csv_path = directory / f"{name}.csv"
        self.json_path = directory / f"{name}.json"
        self.png_path = directory / f"{name}.png"
        self._directory = directory
        self._name = name
        self._file: Optional[IO[str]] = None
        self._writer: Any = None

    def open(self) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        self._file = open(self.csv_path, "w", newline="", encoding="utf8")
        self._writer = csv.writer(self._file)
        self._writer.writerow(CSV_COLUMNS)

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

    def close(self, summary: dict[str, Any]) -> None:
        """Finish the CSV and write the summary atomically.

        The plot comes afterwards, from another process (``ReportPlotter``):
        drawing it takes a few hundred ms and tens of MB that the server's
        event loop and memory must not pay.
        """
        if self._file is not None:
            self._file.close()
            self._file = None
            self._writer = None
        temporary = self.json_path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf8")
        os.replace(temporary, self.json_path)


def write_plot(csv_path: Path, summary: dict[str, Any], png_path: Path) -> None:
    """Plot a finished session's CSV into ``png_path`` (run in the plotting process)."""
    render_session_plot(read_frames(csv_path), summary, png_path)
