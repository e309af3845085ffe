"""Per-session report files: a JSON summary, a CSV with one row per frame
and a CSV with one row per second.

Rows are written as frames retire from the ledger, so a session of hours
streams to disk instead of piling up in memory. The per-second CSV is the
link adaptation's record (``server.media.link_adaptation``): what was sent and
skipped, the bitrate and frame rate in use. The PNG plot is drawn from both
CSVs by ``server.reports.plot``, in a worker process (``server.reports.plotter``).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import socket
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Optional, Sequence

from protocol.version import VERSION
from server.core.ledger import FrameRecord

#: The report's format, as ``docs/report.schema.json`` describes it. Raised
#: when a key changes meaning or goes; a new key does not raise it.
SCHEMA_VERSION = 1

logger = logging.getLogger("server.reports.report")

#: A file of one session's report, and nothing else in a report directory:
#: group 1 is the session's name (number, then a per-process suffix that keeps
#: names apart across pods), group 2 the kind of file.
REPORT_FILE = re.compile(
    r"(session-\d{8}T\d{6}-\d{4,}(?:-[0-9a-f]+)?)\.(json|csv|seconds\.csv|png|mp4|ivf)"
)

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


def _row(cells: Sequence[Any]) -> str:
    # What csv.writer writes for numbers and empty cells (nothing needs
    # quoting), built by hand so that every byte is counted.
    return ",".join(map(str, cells)) + "\r\n"


#: Of a session's byte limit, what the per-frame CSV may take; the per-second
#: CSV (a row a second, not thirty) gets the rest.
FRAME_SHARE = 0.8


class SessionReport:
    """Writes ``<name>.csv`` and ``<name>.seconds.csv`` while the session
    runs, then ``<name>.json``.

    ``png_path`` is where the plotter draws ``<name>.png`` afterwards.

    With ``limit_bytes``, the two CSVs together stay under it: rows beyond a
    file's share are counted, not written, and the summary says so
    (``report_rows_dropped``), so an endless session cannot fill the disk.
    A write that fails (full disk, unwritable directory) is one log line and
    one ``on_failure`` call; the report stops there and the session goes on.
    """

    def __init__(
        self,
        directory: Path,
        name: str,
        limit_bytes: Optional[int] = None,
        on_failure: Optional[Callable[[], None]] = None,
    ) -> None:
        self.csv_path = directory / f"{name}.csv"
        self.json_path = directory / f"{name}.json"
        self.png_path = directory / f"{name}.png"
        self.seconds_path = seconds_csv_path(self.csv_path)
        self._directory = directory
        self._name = name
        self._on_failure = on_failure
        self._frame_limit = int(limit_bytes * FRAME_SHARE) if limit_bytes is not None else None
        self._second_limit = (
            limit_bytes - self._frame_limit
            if limit_bytes is not None and self._frame_limit is not None
            else None
        )
        self._file: Optional[IO[str]] = None
        self._seconds_file: Optional[IO[str]] = None
        self._frame_bytes = 0
        self._second_bytes = 0
        self.rows_dropped = 0
        self.opened = False
        self.failed = False

    def open(self) -> None:
        if self.opened:
            return
        self.opened = True
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            self._file = open(self.csv_path, "w", newline="", encoding="utf8")
            self._seconds_file = open(self.seconds_path, "w", newline="", encoding="utf8")
            self._frame_bytes = self._write(self._file, _row(CSV_COLUMNS))
            self._second_bytes = self._write(self._seconds_file, _row(SECOND_COLUMNS))
        except OSError as error:
            self._fail(error)

    def write_frame(self, record: FrameRecord) -> None:
        if self._file is None:
            return
        line = _row(
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
        if self._frame_limit is not None and self._frame_bytes + len(line) > self._frame_limit:
            self.rows_dropped += 1
            return
        try:
            self._frame_bytes += self._write(self._file, line)
        except OSError as error:
            self._fail(error)

    def write_second(self, row: Mapping[str, Any]) -> None:
        """One row of the per-second CSV, a value for each of ``SECOND_COLUMNS``; None is empty."""
        if set(row) != set(SECOND_COLUMNS):
            raise ValueError(
                f"columns {sorted(row)} are not the per-second CSV's {list(SECOND_COLUMNS)}"
            )
        if self._seconds_file is None:
            return
        values = [row[name] for name in SECOND_COLUMNS]
        line = _row([v if isinstance(v, int) else _cell(v) for v in values])
        if self._second_limit is not None and self._second_bytes + len(line) > self._second_limit:
            self.rows_dropped += 1
            return
        try:
            self._second_bytes += self._write(self._seconds_file, line)
        except OSError as error:
            self._fail(error)

    def close(self, summary: dict[str, Any]) -> bool:
        """Finish the CSVs and write the summary atomically; False if the report failed.

        The plot comes afterwards, from another process (``ReportPlotter``):
        drawing it takes a few hundred ms and tens of MB that the server's
        event loop and memory must not pay.
        """
        try:
            self._close_files()
        except OSError as error:
            self._fail(error)
        if self.rows_dropped:
            summary = dict(summary, report_rows_dropped=self.rows_dropped)
        temporary = self.json_path.with_suffix(".json.tmp")
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf8")
            os.replace(temporary, self.json_path)
        except OSError as error:
            try:
                temporary.unlink(missing_ok=True)
            except OSError:
                pass  # no directory, or no file system, to clean up in
            self._fail(error)
        return not self.failed

    @staticmethod
    def _write(file: IO[str], line: str) -> int:
        file.write(line)
        return len(line)

    def _close_files(self) -> None:
        files = [f for f in (self._file, self._seconds_file) if f is not None]
        self._file = self._seconds_file = None
        first_error: Optional[OSError] = None
        for file in files:
            try:
                file.close()  # closes the descriptor even when the final flush fails
            except OSError as error:
                first_error = first_error or error
        if first_error is not None:
            raise first_error

    def _fail(self, error: OSError) -> None:
        try:
            self._close_files()
        except OSError:
            pass
        if self.failed:
            return
        self.failed = True
        logger.error(
            "%s: report stops: cannot write to %s: %s",
            self._name,
            self._directory,
            error.strerror or error,
        )
        if self._on_failure is not None:
            self._on_failure()
