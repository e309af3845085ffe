"""Soak benchmark: one long session of the real server and client.

``.venv/bin/python bench/soak.py --minutes 10``

Streams for ``--minutes`` at ``--fps`` and prints one row per minute: the
server's RSS, the client's RSS (its whole process tree: the client, the
spawned detector and multiprocessing's resource tracker), and that minute's
answered share and latency p50/p99. A leak shows as RSS climbing minute after
minute, a backlog as latency doing so.

Latency comes from the server's per-frame CSV, each frame placed in its
minute by its pts (frame n has pts n * 90000 / fps, so pts / 90000 is its
time in the stream). The server writes rows only once frames leave its
five-second ledger, through a file buffer, so a minute's row is printed
``CSV_LAG_S`` after the minute ends; the last rows come once the session has
ended and its report is complete.

This is a benchmark, not a test: it asserts nothing and exits 0 unless a
program fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    import common  # noqa: F401  # bench/common.py: puts the repository root on sys.path

import argparse
import csv
import signal
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from bench.common import number
from lab.process_stats import rss_bytes, tree_rss_bytes
from lab.programs import Program, free_port, read_reports, start_client, start_server

VIDEO_CLOCK_RATE = 90000
#: Rows of a frame reach the CSV after the ledger (5 s) and the file buffer
#: (8 KiB, about 140 rows at 30 fps) let go of them.
CSV_LAG_S = 15.0
STARTUP_TIMEOUT_S = 60.0
MB = 2**20


@dataclass
class Minute:
    """What one minute of streaming looked like."""

    index: int
    server_rss: list[int] = field(default_factory=list)
    client_rss: list[int] = field(default_factory=list)
    frames: int = 0
    latencies: list[float] = field(default_factory=list)

    def row(self) -> str:
        answered = len(self.latencies) / self.frames if self.frames else 0.0
        p50, p99 = (
            np.percentile(self.latencies, (50, 99)) if self.latencies else (float("nan"),) * 2
        )
        return (
            f"{self.index + 1:>6} {_mb(self.server_rss):>13} {_mb(self.client_rss):>13} "
            f"{self.frames:>7} {answered:>9.1%} {p50:>8.1f} {p99:>8.1f}"
        )


HEADER = (
    f"{'minute':>6} {'server RSS MB':>13} {'client RSS MB':>13} {'frames':>7} "
    f"{'answered':>9} {'lat p50':>8} {'lat p99':>8}"
)


def _mb(samples: list[int]) -> str:
    """The RSS at the end of the minute (the last sample), in MB."""
    return number(samples[-1] / MB if samples else None, 1)


def read_frames(csv_path: Path, minutes: list[Minute]) -> None:
    """Put every frame row written so far into its minute (recounted each time)."""
    for minute in minutes:
        minute.frames, minute.latencies = 0, []
    if not csv_path.exists():
        return
    with open(csv_path, newline="") as rows:
        for row in csv.DictReader(rows):
            index = int(int(row["pts"]) / VIDEO_CLOCK_RATE // 60)
            if index >= len(minutes):
                continue  # the last frames, after the final full minute
            minutes[index].frames += 1
            if row["latency_ms"]:
                minutes[index].latencies.append(float(row["latency_ms"]))


class Soak:
    def __init__(self, minutes: float, fps: float, sample_s: float, report_dir: Path) -> None:
        self.seconds = minutes * 60
        self.fps = fps
        self.sample_s = sample_s
        self.report_dir = report_dir
        self.minutes = [Minute(i) for i in range(max(1, int(minutes)))]
        self.printed = 0
        self.server: Optional[Program] = None
        self.client: Optional[Program] = None

    def run(self) -> int:
        port = free_port()
        self.server = start_server(
            port, "--fps", f"{self.fps:g}", "--report-dir", str(self.report_dir)
        )
        self.client = start_client(port)
        try:
            self.server.wait_for_output("streaming to", timeout=STARTUP_TIMEOUT_S)
            print(
                f"streaming {self.seconds / 60:g} min at {self.fps:g} fps; reports in "
                f"{self.report_dir}\n{HEADER}",
                flush=True,
            )
            self._sample_until(time.monotonic() + self.seconds)
            return self._finish()
        finally:
            self.client.close()
            self.server.close()

    def _csv_path(self) -> Path:
        found = sorted(self.report_dir.glob("session-*.csv"))
        return found[0] if found else self.report_dir / "missing.csv"

    def _sample_until(self, end: float) -> None:
        assert self.server is not None and self.client is not None
        start = end - self.seconds
        while (now := time.monotonic()) < end:
            minute = min(int((now - start) // 60), len(self.minutes) - 1)
            self.minutes[minute].server_rss.append(rss_bytes(self.server.pid))
            self.minutes[minute].client_rss.append(tree_rss_bytes(self.client.pid))
            # Print each finished minute once its frames are all in the CSV.
            ready = int((now - start - CSV_LAG_S) // 60)
            if ready > self.printed:
                read_frames(self._csv_path(), self.minutes)
                self._print_rows(min(ready, len(self.minutes)))
            for program in (self.server, self.client):
                if program.process.poll() is not None:
                    raise RuntimeError(f"{program.argv[1]} exited:\n{program.describe()}")
            time.sleep(min(self.sample_s, max(end - time.monotonic(), 0)))

    def _print_rows(self, upto: int) -> None:
        for minute in self.minutes[self.printed : upto]:
            print(minute.row(), flush=True)
        self.printed = max(self.printed, upto)

    def _finish(self) -> int:
        assert self.server is not None and self.client is not None
        # SIGTERM: the client says BYE, so the server closes the report.
        self.client.signal(signal.SIGTERM)
        status = self.client.wait(timeout=30)
        deadline = time.monotonic() + 15
        while not read_reports(self.report_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        read_frames(self._csv_path(), self.minutes)
        self._print_rows(len(self.minutes))
        reports = read_reports(self.report_dir)
        if reports:
            report = reports[0]
            print(
                f"\nsession: {report['frames_answered']}/{report['frames_sent']} frames answered, "
                f"error mean {report['error_px']['mean']:.3f} px, latency p50 "
                f"{report['latency_ms']['p50']:.1f} p99 {report['latency_ms']['p99']:.1f} ms, "
                f"{report['invalid_messages']} invalid; end: {report['end_reason']}"
            )
        first, last = self.minutes[0], self.minutes[-1]
        if first.server_rss and last.server_rss:
            print(
                f"RSS change, end of minute 1 to end of run: server "
                f"{(last.server_rss[-1] - first.server_rss[-1]) / MB:+.1f} MB, client tree "
                f"{(last.client_rss[-1] - first.client_rss[-1]) / MB:+.1f} MB"
            )
        print("(client RSS counts its whole process tree; shared memory is counted per process)")
        return 0 if status == 0 and reports else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="soak.py", description="Run one long session and print RSS and latency per minute."
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="streaming time")
    parser.add_argument("--fps", type=float, default=30.0, help="the server's frame rate")
    parser.add_argument(
        "--sample-seconds", type=float, default=5.0, help="how often RSS is sampled"
    )
    parser.add_argument(
        "--report-dir", type=Path, default=None, help="keep the session report here"
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.minutes < 1:
        build_parser().error("--minutes must be at least 1")
    if args.report_dir is not None:
        return Soak(args.minutes, args.fps, args.sample_seconds, args.report_dir).run()
    with tempfile.TemporaryDirectory(prefix="soak-") as directory:
        return Soak(args.minutes, args.fps, args.sample_seconds, Path(directory)).run()


if __name__ == "__main__":
    sys.exit(main())
