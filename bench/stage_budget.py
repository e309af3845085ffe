"""Where the milliseconds go: a latency budget from a server and a client stage trace.

Each segment is the time from one stage (``protocol.stage_trace.STAGES``) to
the next, over the frames that passed every stage; its share is its mean
over the mean end-to-end time, so the shares add up to 100 %. p50 and p99 are
of the segment itself (they do not add up: the slow frames of one segment
are not those of the next).

``PYTHONPATH=. .venv/bin/python bench/stage_budget.py SERVER.jsonl CLIENT.jsonl``

Only traces taken on one host (one CLOCK_MONOTONIC) are joined; across hosts
the per-stage times mean nothing, and this says so instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    import common  # noqa: F401  # bench/common.py: puts the repository root on sys.path

import argparse
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from protocol.stage_trace import STAGE_NAMES, ClockMismatch, StageTrace, merge_traces


@dataclass(frozen=True)
class Segment:
    start: str
    end: str
    mean_ms: float
    share_pct: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class StageBudget:
    frames_traced: int  # frames both sides traced
    frames_complete: int  # of those, frames that passed every stage
    frames_out_of_order: int  # complete frames with a stage earlier than the one before
    segments: tuple[Segment, ...]
    total: Optional[Segment]


def stage_budget(
    frames: Mapping[int, Mapping[str, float]], stages: Sequence[str] = STAGE_NAMES
) -> StageBudget:
    complete = [f for f in frames.values() if all(s in f for s in stages)]
    if not complete:
        return StageBudget(len(frames), 0, 0, (), None)
    times = np.array([[f[s] for s in stages] for f in complete], dtype=np.float64)
    steps_ms = np.diff(times, axis=1) * 1000.0
    total_ms = (times[:, -1] - times[:, 0]) * 1000.0
    mean_total = float(total_ms.mean())

    def segment(start: str, end: str, values: np.ndarray) -> Segment:
        mean = float(values.mean())
        p50, p99 = (float(v) for v in np.percentile(values, (50, 99)))
        share = 100.0 * mean / mean_total if mean_total > 0 else 0.0
        return Segment(start, end, mean, share, p50, p99)

    segments = tuple(
        segment(stages[i], stages[i + 1], steps_ms[:, i]) for i in range(len(stages) - 1)
    )
    out_of_order = int(np.count_nonzero((steps_ms < 0).any(axis=1)))
    return StageBudget(
        len(frames),
        len(complete),
        out_of_order,
        segments,
        segment(stages[0], stages[-1], total_ms),
    )


def markdown(budget: StageBudget) -> str:
    if budget.total is None:
        return f"(no frame passed every stage; {budget.frames_traced} traced by both sides)"
    rows = [
        "| stage (from the one before) | mean ms | share % | p50 ms | p99 ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in budget.segments:
        rows.append(
            f"| {s.start} → **{s.end}** | {s.mean_ms:.2f} | {s.share_pct:.0f} "
            f"| {s.p50_ms:.2f} | {s.p99_ms:.2f} |"
        )
    t = budget.total
    rows.append(
        f"| **end to end** ({t.start} → {t.end}) | {t.mean_ms:.2f} | 100 "
        f"| {t.p50_ms:.2f} | {t.p99_ms:.2f} |"
    )
    note = f"{budget.frames_complete} of {budget.frames_traced} frames passed every stage"
    if budget.frames_out_of_order:
        note += f"; {budget.frames_out_of_order} of them had a stage out of order"
    return "\n".join(rows) + f"\n\n{note}"


def budget_from_files(server: Path, client: Path) -> StageBudget:
    """:raises ClockMismatch: the traces come from two hosts (or boots)."""
    return stage_budget(merge_traces(StageTrace.read(server), StageTrace.read(client)))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("server", type=Path, help="the server's --trace-stages file")
    parser.add_argument("client", type=Path, help="the client's --trace-stages file")
    args = parser.parse_args(argv)
    try:
        budget = budget_from_files(args.server, args.client)
    except ClockMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(markdown(budget))
    return 0


if __name__ == "__main__":
    sys.exit(main())
