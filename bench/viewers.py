"""What console viewers cost a tracked session: one session, viewers in the middle.

``.venv/bin/python bench/viewers.py --phase-seconds 10 --viewers 2``

The real server and client run as processes over loopback. One session
streams for three phases of equal length: no viewer, then ``--viewers``
WHEP viewers (stock aiortc peers in this process, decoding every frame as a
browser would), then no viewer again. The tracked session's per-frame
latency comes from the server's own CSV report, so all three phases are one
run, one session, one machine, and the table compares like with like. The
first second of each phase is left out of its quantiles and reported
separately as the join transient, because that is when a viewer's
negotiation and first keyframe happen.

On a 2-core machine the viewers' decoding competes with the server and the
client for the same cores; a real browser runs elsewhere, so this is an
upper bound on the cost.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    import common  # noqa: F401  # bench/common.py: puts the repository root on sys.path

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import aiohttp
import numpy as np

from bench.common import number
from lab.programs import Program, free_port, start_client, start_server
from lab.whep_client import WhepViewer
from server.reports.plot import read_frames

#: Left out of each phase's quantiles: a viewer's negotiation and first keyframe.
TRANSIENT_S = 1.0


@dataclass
class Phase:
    name: str
    start_s: float
    end_s: float


async def watch(http_port: int, session_id: str, viewers: int, seconds: float) -> list[int]:
    endpoint = f"http://127.0.0.1:{http_port}/api/sessions/{session_id}/whep"
    async with aiohttp.ClientSession() as http:
        watching = [WhepViewer(endpoint) for _ in range(viewers)]
        for viewer in watching:
            await viewer.start(http)
        await asyncio.sleep(seconds)
        for viewer in watching:
            await viewer.stop(http)
    return [viewer.frames for viewer in watching]


async def live_session_id(http_port: int, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(f"http://127.0.0.1:{http_port}/api/sessions") as response:
                live = [s for s in (await response.json())["sessions"] if s["state"] == "live"]
            if live and live[0]["frames_sent"] > 0:
                return str(live[0]["id"])
            await asyncio.sleep(0.1)
    raise RuntimeError("no live session")


def quantiles(latency_ms: np.ndarray) -> str:
    if latency_ms.size == 0:
        return "| - | - | - | - |"
    p50, p99 = np.percentile(latency_ms, [50, 99])
    return f"| {latency_ms.size} | {p50:.1f} | {p99:.1f} | {latency_ms.max():.1f} |"


def run(phase_seconds: float, viewers: int) -> str:
    signaling, http_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="balltracker-viewers-") as reports:
        server = start_server(
            signaling,
            "--report-dir",
            reports,
            "--once",
            "--max-viewers",
            str(max(viewers, 1)),
            http_port=http_port,
        )
        client: Optional[Program] = None
        try:
            client = start_client(signaling, "--duration", str(3 * phase_seconds))
            session_id = asyncio.run(live_session_id(http_port))
            streaming_since = time.monotonic()
            time.sleep(phase_seconds)
            viewers_at = time.monotonic() - streaming_since
            frames = asyncio.run(watch(http_port, session_id, viewers, phase_seconds))
            viewers_until = time.monotonic() - streaming_since
            if client.wait(timeout=3 * phase_seconds + 30) != 0:
                raise RuntimeError(client.describe())
            server.wait(timeout=30)
        finally:
            if client is not None:
                client.close()
            server.close()
        series = read_frames(Path(reports) / f"{session_id}.csv")
    # The session's first answered frame is about when this script saw it live.
    time_s, latency = np.asarray(series.time_s), np.asarray(series.latency_ms)
    phases = [
        Phase("no viewer", 0.0, viewers_at),
        Phase(f"{viewers} viewers", viewers_at, viewers_until),
        Phase("no viewer again", viewers_until, float(time_s[-1]) + 1),
    ]
    lines = [
        f"{viewers} viewers received {', '.join(map(str, frames))} frames "
        f"during {viewers_until - viewers_at:.1f} s",
        "",
        "| phase | frames | latency p50 ms | p99 ms | max ms | join transient max ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for phase in phases:
        settled = (time_s >= phase.start_s + TRANSIENT_S) & (time_s < phase.end_s)
        joining = (time_s >= phase.start_s) & (time_s < phase.start_s + TRANSIENT_S)
        values = latency[settled & ~np.isnan(latency)]
        transient = latency[joining & ~np.isnan(latency)]
        peak = number(transient.max() if transient.size else None, 1)
        lines.append(f"| {phase.name} {quantiles(values)} {peak} |")
    answered = np.count_nonzero(~np.isnan(latency))
    lines.append("")
    lines.append(f"answered {answered} of {latency.size} frames")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--phase-seconds", type=float, default=10.0)
    parser.add_argument("--viewers", type=int, default=2)
    args = parser.parse_args(argv)
    print(run(args.phase_seconds, args.viewers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
