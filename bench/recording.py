"""What ``--record`` costs a tracked session: the same session with and without it.

``.venv/bin/python bench/recording.py --seconds 15 --repeats 2``

For 640x480 and 1920x1080 (``--sizes``), the real server and client run one
session at a time (never overlapping: on a 2-core box two would measure
their contention), alternately without and with ``--record``, ``--repeats``
times each. The table gives, per run, the server's session report (frames,
answered, latency p50 and p99), the server's CPU and the recorder's dropped
frames, then the medians per size and mode, and the ratio recorded /
not recorded of the median p50 and p99 (the issue's target: <= 1.1).

Server CPU is the whole process session of the server: with ``--record``
that includes the recorders' fork server and the worker that encodes the
MP4; "main" is the server's own process alone, i.e. what the event loop
that serves the sessions spent. CPU % is CPU seconds / wall seconds x 100
over the streaming period (``bench.latency.CpuWindow``); "other" is
everything else the machine ran meanwhile. On a shared machine, read the
figures with it.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Optional, Sequence

from bench.latency import CpuWindow, machine_description
from lab.programs import free_port, read_reports, start_client, start_server

#: Streaming at the start (negotiation, the fork server's imports) is left out of the CPU window.
WARM_UP_S = 1.5


@dataclass
class Run:
    size: str
    record: bool
    frames_sent: int
    answered_ratio: Optional[float]
    p50_ms: Optional[float]
    p99_ms: Optional[float]
    server_cpu_pct: float
    main_cpu_pct: float
    other_cpu_pct: float
    frames_dropped: Optional[int]
    stream_frames_dropped: Optional[int]
    recording_errors: int


def process_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text()
    rest = fields[fields.rindex(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])


def run_once(width: int, height: int, record: bool, seconds: float) -> Run:
    with tempfile.TemporaryDirectory(prefix="balltracker-bench-recording-") as directory:
        report_dir = Path(directory)
        flags = ["--once", "--duration", str(seconds), "--report-dir", str(report_dir)]
        flags += ["--width", str(width), "--height", str(height)]
        if record:
            flags.append("--record")
        port = free_port()
        server = start_server(port, *flags)
        client = start_client(port)
        try:
            server.wait_for_output("streaming to", timeout=60)
            time.sleep(WARM_UP_S)
            window = CpuWindow({"server": os.getsid(server.pid)})
            main_before = process_ticks(server.pid)
            window.start()
            end = time.monotonic() + max(seconds - WARM_UP_S - 0.5, 1.0)
            while time.monotonic() < end:
                time.sleep(0.5)
                window.sample()
            window.stop()
            main_used = process_ticks(server.pid) - main_before
            main_pct = 100.0 * main_used / (os.sysconf("SC_CLK_TCK") * window.wall_s)
            if client.wait(timeout=60 + seconds) != 0 or server.wait(timeout=120) != 0:
                raise RuntimeError(f"the session failed:\n{server.describe()}\n{client.describe()}")
        finally:
            client.close()
            server.close()
        [report] = read_reports(report_dir)
    recording = report.get("recording") or {}
    return Run(
        size=f"{width}x{height}",
        record=record,
        frames_sent=report["frames_sent"],
        answered_ratio=report["answered_ratio"],
        p50_ms=report["latency_ms"]["p50"],
        p99_ms=report["latency_ms"]["p99"],
        server_cpu_pct=window.percent["server"],
        main_cpu_pct=main_pct,
        other_cpu_pct=window.percent["other"],
        frames_dropped=recording.get("frames_dropped"),
        stream_frames_dropped=recording.get("stream_frames_dropped"),
        recording_errors=len(recording.get("errors") or []),
    )


def _number(value: Optional[float], digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _median(values: Sequence[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def markdown(runs: Sequence[Run]) -> str:
    lines = [
        "| size | --record | frames | answered | p50 ms | p99 ms | server CPU % (main) "
        "| other CPU % | dropped (video / stream) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        dropped = (
            "–" if r.frames_dropped is None else f"{r.frames_dropped} / {r.stream_frames_dropped}"
        )
        lines.append(
            f"| {r.size} | {'yes' if r.record else 'no'} | {r.frames_sent} "
            f"| {_number(100 * r.answered_ratio if r.answered_ratio is not None else None)} % "
            f"| {_number(r.p50_ms)} | {_number(r.p99_ms)} "
            f"| {_number(r.server_cpu_pct, 0)} ({_number(r.main_cpu_pct, 0)}) "
            f"| {_number(r.other_cpu_pct, 0)} | {dropped} |"
        )
    lines += [
        "",
        "| size | median p50 ms without / with | ratio | median p99 ms without / with | ratio "
        "| median server CPU % without / with |",
        "|---|---|---|---|---|---|",
    ]
    for size in dict.fromkeys(r.size for r in runs):
        plain = [r for r in runs if r.size == size and not r.record]
        recorded = [r for r in runs if r.size == size and r.record]
        p50 = (_median([r.p50_ms for r in plain]), _median([r.p50_ms for r in recorded]))
        p99 = (_median([r.p99_ms for r in plain]), _median([r.p99_ms for r in recorded]))
        cpu = (
            _median([r.server_cpu_pct for r in plain]),
            _median([r.server_cpu_pct for r in recorded]),
        )

        def ratio(pair: tuple[Optional[float], Optional[float]]) -> str:
            return "–" if not pair[0] or pair[1] is None else f"{pair[1] / pair[0]:.2f}"

        lines.append(
            f"| {size} | {_number(p50[0])} / {_number(p50[1])} | {ratio(p50)} "
            f"| {_number(p99[0])} / {_number(p99[1])} | {ratio(p99)} "
            f"| {_number(cpu[0], 0)} / {_number(cpu[1], 0)} |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/recording.py", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each session")
    parser.add_argument("--repeats", type=int, default=2, help="runs per size and mode")
    parser.add_argument(
        "--sizes", nargs="+", default=["640x480", "1920x1080"], help="frame sizes, WxH"
    )
    args = parser.parse_args(argv)
    runs: list[Run] = []
    for size in args.sizes:
        width, height = (int(n) for n in size.split("x"))
        for _ in range(args.repeats):
            for record in (False, True):
                run = run_once(width, height, record, args.seconds)
                print(f"{run}", file=sys.stderr, flush=True)
                runs.append(run)
    print(machine_description())
    print()
    print(markdown(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
