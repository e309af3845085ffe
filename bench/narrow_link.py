"""Narrow-link benchmark: the real server and client across a capped link.

``.venv/bin/python bench/narrow_link.py --seconds 20``  (as root: network namespaces)

The server runs in one namespace of a ``NetworkLab`` and the client in the
other; a ``tbf`` qdisc on the server's side caps the video direction
(``NetworkLab.set_rate``: ``burst 16kb latency 200ms``). For each cap one
session streams ``--seconds`` (the server's ``--duration``), and the script
prints one markdown table: answered %, latency p50 in each quarter of the
session's stream time, p99, error mean, what the cap dropped, and what the
server and client did about it (frames skipped at the source, frames the
client dropped as stale, the encoder's bitrate and frame rate at the end).

Runs never overlap, and a run of one cap never sees another's queue: the
lab is cleared between caps. This is a benchmark, not a test: the figures
depend on the machine's load, so it asserts nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    import common  # noqa: F401  # bench/common.py: puts the repository root on sys.path

import argparse
import csv
import json
import re
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from bench.common import number
from lab.network_lab import NetworkLab
from lab.programs import Program, read_reports, start_client, start_server, wait_for_reports

SIGNALING_PORT = 1234
DEFAULT_CAPS = ("200", "150", "100", "50")

#: Start-up (imports, detector spawn, ICE/DTLS over the narrow link) and the
#: teardown after the server's --duration must fit in this.
OVERHEAD_TIMEOUT_S = 90.0

#: Flag variables the programs would otherwise inherit from this shell.
NEUTRAL_ENVIRONMENT = {
    "BALLTRACKER_DISPLAY": "",
    "BALLTRACKER_VERBOSE": "",
    "BALLTRACKER_RECONNECT": "",
    "BALLTRACKER_STUN": "",
}


@dataclass
class Frame:
    time_s: float
    latency_ms: Optional[float]


def read_csv_frames(path: Path) -> list[Frame]:
    """The per-frame report CSV as (stream time, latency or None), in stream order."""
    frames = []
    with open(path, newline="", encoding="utf8") as rows:
        for row in csv.DictReader(rows):
            latency = row["latency_ms"]
            frames.append(Frame(int(row["pts"]) / 90000, float(latency) if latency else None))
    frames.sort(key=lambda f: f.time_s)
    return frames


def quarter_p50s(frames: Sequence[Frame], duration_s: float) -> list[Optional[float]]:
    """Median latency of the answered frames in each quarter of the stream time."""
    quarters: list[list[float]] = [[], [], [], []]
    for frame in frames:
        if frame.latency_ms is None:
            continue
        quarter = min(3, int(4 * frame.time_s / duration_s)) if duration_s > 0 else 0
        quarters[quarter].append(frame.latency_ms)
    return [statistics.median(q) if q else None for q in quarters]


@dataclass
class CapResult:
    cap: str
    seconds: float
    report: dict[str, Any] = field(default_factory=dict)
    quarters: list[Optional[float]] = field(default_factory=list)
    tbf_dropped: int = 0
    tbf_sent_packets: int = 0
    #: The client's "video receiver:" counters (frames_dropped_stale, ...).
    client_counters: dict[str, int] = field(default_factory=dict)
    #: Median estimated wire rate sent in the last quarter, kbit/s.
    sent_kbps_last_quarter: Optional[float] = None
    error: Optional[str] = None


def _tbf_counters(lab: NetworkLab) -> tuple[int, int]:
    """(packets sent, packets dropped) of the server side's root qdisc."""
    out = lab.run("server", ["tc", "-s", "qdisc", "show", "dev", "lab0"]).stdout
    found = re.search(r"Sent \d+ bytes (\d+) pkt \(dropped (\d+)", out)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def run_cap(lab: NetworkLab, report_dir: Path, cap: str, seconds: float) -> CapResult:
    """One session across the link capped at ``cap`` kbit/s ("none": uncapped)."""
    result = CapResult(cap, seconds)
    reports_before = len(read_reports(report_dir))
    client: Optional[Program] = None
    try:
        if cap != "none":
            lab.set_rate(float(cap) / 1000.0, side="server")
        # No --duration: the server's BYE after its --duration ends the client.
        client = start_client(
            SIGNALING_PORT,
            prefix=lab.exec_argv("client", []),
            host="ball-server",
            env=NEUTRAL_ENVIRONMENT,
        )
        client.wait(timeout=seconds + OVERHEAD_TIMEOUT_S)
        result.tbf_sent_packets, result.tbf_dropped = _tbf_counters(lab)
        result.client_counters = client_counters(client.stderr)
    except Exception as exc:  # one failed cap must not lose the others' rows
        result.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    finally:
        if client is not None:
            client.close()
        lab.clear()
    reports = wait_for_reports(report_dir, reports_before + 1, timeout=30.0)
    if len(reports) <= reports_before:
        result.error = result.error or "the server wrote no report"
        return result
    result.report = reports[-1]
    csv_path = report_dir / f"{result.report['session']}.csv"
    result.quarters = quarter_p50s(read_csv_frames(csv_path), result.report["duration_s"])
    seconds_path = report_dir / f"{result.report['session']}.seconds.csv"
    if seconds_path.exists():
        result.sent_kbps_last_quarter = last_quarter_sent_kbps(seconds_path)
    return result


def client_counters(log: str) -> dict[str, int]:
    """The counters of the client's last "video receiver: name value, ..." line."""
    found = re.findall(r"video receiver: ((?:\w+ \d+(?:, )?)+)$", log, re.MULTILINE)
    if not found:
        return {}
    return {name: int(value) for name, value in re.findall(r"(\w+) (\d+)", found[-1])}


def last_quarter_sent_kbps(path: Path) -> Optional[float]:
    """Median estimated wire rate over the last quarter of the per-second record."""
    with open(path, newline="", encoding="utf8") as rows:
        sent = [float(row["sent_kbps"]) for row in csv.DictReader(rows) if row["sent_kbps"]]
    tail = sent[len(sent) * 3 // 4 :]
    return statistics.median(tail) if tail else None


COLUMNS = (
    "cap kbit/s",
    "frames sent",
    "answered %",
    "p50 by quarter ms",
    "p50 last quarter ms",
    "p99 ms",
    "error mean px",
    "dropped by the cap",
    "skipped for rate",
    "stale dropped (client)",
    "keyframes asked",
    "sent kbit/s (last quarter)",
    "decreases",
    "fps, bitrate kbit/s (end)",
)


def table_row(result: CapResult) -> list[str]:
    if not result.report:
        return [result.cap, f"FAILED: {result.error}"] + [""] * (len(COLUMNS) - 2)
    report = result.report
    latency, error = report["latency_ms"], report["error_px"]
    ratio = report.get("answered_ratio")
    rate = report.get("rate_control") or {}
    counters = result.client_counters
    return [
        result.cap,
        str(report["frames_sent"]),
        number(None if ratio is None else 100.0 * ratio, 1),
        ", ".join(number(q, 1) for q in result.quarters),
        number(result.quarters[-1] if result.quarters else None, 1),
        number(latency.get("p99"), 1),
        number(error.get("mean"), 3),
        str(result.tbf_dropped),
        str(report.get("frames_skipped_for_rate", "—")),
        str(counters.get("frames_dropped_stale", "—")),
        str(counters.get("keyframes_requested", "—")),
        number(result.sent_kbps_last_quarter, 0),
        str(rate.get("decreases", "—")),
        f"{number(rate.get('final_fps'), 0)}, {number(rate.get('final_bitrate_kbps'), 0)}"
        if rate
        else "—",
    ]


def markdown_table(results: Sequence[CapResult]) -> str:
    rows = [list(COLUMNS), ["---"] * len(COLUMNS)]
    rows += [table_row(r) for r in results]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="streaming per cap")
    parser.add_argument(
        "--caps",
        default=",".join(DEFAULT_CAPS),
        help="comma-separated caps in kbit/s, 'none' for an uncapped run",
    )
    parser.add_argument("--repeat", type=int, default=1, help="sessions per cap")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--keep-reports",
        type=Path,
        default=None,
        help="keep the session reports (and the server's log) in this directory",
    )
    parser.add_argument("server_flags", nargs="*", help="extra server flags, after --", default=[])
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    caps = [c.strip() for c in args.caps.split(",") if c.strip()]
    available, why = NetworkLab.available()
    if not available:
        print(f"NetworkLab prerequisites missing: {why}", file=sys.stderr)
        return 2
    results: list[CapResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-narrow-") as scratch, NetworkLab() as lab:
        report_dir = args.keep_reports or Path(scratch) / "reports"
        server = start_server(
            SIGNALING_PORT,
            "--report-dir",
            str(report_dir),
            "--duration",
            f"{args.seconds:g}",
            *args.server_flags,
            prefix=lab.exec_argv("server", []),
            host="0.0.0.0",
            env=NEUTRAL_ENVIRONMENT,
        )
        try:
            for cap in caps:
                for _ in range(args.repeat):
                    started = time.monotonic()
                    result = run_cap(lab, report_dir, cap, args.seconds)
                    results.append(result)
                    print(
                        f"{cap} kbit/s ({time.monotonic() - started:.0f} s): "
                        + " | ".join(table_row(result)),
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            if args.keep_reports is not None:
                (args.keep_reports / "server.log").write_text(server.stderr)
            server.close()
    print(markdown_table(results))
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "cap": r.cap,
                        "quarters": r.quarters,
                        "tbf_dropped": r.tbf_dropped,
                        "client_counters": r.client_counters,
                        "report": r.report,
                        "error": r.error,
                    }
                    for r in results
                ],
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
