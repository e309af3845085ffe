"""What ``--trace-stages`` costs: tracing absent, off and on, in one run.

``PYTHONPATH=. .venv/bin/python bench/tracing_cost.py --absent REV [--traced REV2]``

- **absent**: the programs of commit ``REV``, one without the tracing code
  (the commit before it came in);
- **off**: those of ``REV2`` (default ``HEAD``), without ``--trace-stages``;
- **on**: the same, with it on both sides.

Both trees are unpacked with ``git archive`` into a temporary directory, so
edits in the work tree during the run change nothing; compare two commits
that differ only by the tracing code.

Rounds alternate the three (absent, off, on, absent, ...), so a machine
that gets busier or quieter meanwhile disturbs all three alike; the table
shows the median over rounds of each run's latency p50 and p99 and the CPU
of both sides, 640x480@30 VP8 with the fast jitter buffer. Only differences
larger than the spread between rounds of one variant mean anything.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    import common  # noqa: F401  # bench/common.py: puts the repository root on sys.path

import argparse
import os
import shlex
import statistics
import tempfile
from dataclasses import dataclass, field
from typing import Optional, Sequence

from bench.common import number
from bench.latency import (
    CONFIGURATIONS,
    RunResult,
    machine_description,
    run_once,
    unpack,
    wait_until_quiet,
)

VARIANTS = ("absent", "off", "on")


@dataclass
class Variant:
    name: str
    runs: list[RunResult] = field(default_factory=list)

    def good(self) -> list[RunResult]:
        return [r for r in self.runs if r.error is None]

    def median(self, value: str) -> Optional[float]:
        values = []
        for run in self.good():
            if value in ("p50", "p99"):
                values.append(float(run.server_report["latency_ms"][value]))
            else:
                values.append(getattr(run, value))
        return statistics.median(values) if values else None

    def spread(self, value: str) -> Optional[tuple[float, float]]:
        values = [float(r.server_report["latency_ms"][value]) for r in self.good()]
        return (min(values), max(values)) if values else None


def table(variants: Sequence[Variant]) -> str:
    rows = [
        "| tracing | runs | latency p50 ms (median; min–max) | latency p99 ms (median) "
        "| server CPU % | client CPU % (tree) | others' CPU % |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    for v in variants:
        spread = v.spread("p50")
        low_high = "" if spread is None else f" ({spread[0]:.2f}–{spread[1]:.2f})"
        rows.append(
            f"| {v.name} | {len(v.good())} | {number(v.median('p50'), 2)}{low_high} "
            f"| {number(v.median('p99'), 2)} | {number(v.median('server_cpu_pct'), 1)} "
            f"| {number(v.median('client_cpu_pct'), 1)} | {number(v.median('other_cpu_pct'), 0)} |"
        )
    return "\n".join(rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Latency and CPU with tracing absent, off, on.")
    parser.add_argument(
        "--absent", required=True, metavar="REV", help="a commit without the tracing code"
    )
    parser.add_argument(
        "--traced", default="HEAD", metavar="REV", help="a commit with it (default HEAD)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the three (default 5)")
    parser.add_argument("--seconds", type=float, default=10.0, help="streaming s per run")
    parser.add_argument("--only", default="vga30-vp8", help="configuration (default vga30-vp8)")
    parser.add_argument("--quiet-below", type=float, default=30.0, metavar="PCT")
    args = parser.parse_args(argv)
    configuration = {c.name: c for c in CONFIGURATIONS}[args.only]
    command = shlex.join(sys.orig_argv if argv is None else ["bench/tracing_cost.py", *argv])
    print(f"command: {command}\nmachine: {machine_description()}", flush=True)
    variants = [Variant(name) for name in VARIANTS]
    with tempfile.TemporaryDirectory(prefix="tracing-cost-") as scratch:
        roots = {"absent": Path(scratch, "absent"), "traced": Path(scratch, "traced")}
        unpack(args.absent, roots["absent"])
        unpack(args.traced, roots["traced"])
        for round_number in range(args.rounds):
            for variant in variants:
                if args.quiet_below > 0:
                    wait_until_quiet(args.quiet_below, 60.0)
                print(
                    f"round {round_number + 1}/{args.rounds}: {variant.name}, "
                    f"load {os.getloadavg()[0]:.2f}",
                    file=sys.stderr,
                    flush=True,
                )
                variant.runs.append(
                    run_once(
                        configuration,
                        "fast",
                        args.seconds,
                        trace_stages=variant.name == "on",
                        root=roots["absent" if variant.name == "absent" else "traced"],
                    )
                )
    print()
    print(
        f"{configuration.label()}, fast jitter buffer, {args.rounds} rounds of {args.seconds:g} s"
    )
    print()
    print(table(variants))
    failed = [f"{v.name}: {r.error}" for v in variants for r in v.runs if r.error]
    if failed:
        print("\nfailed runs:\n" + "\n".join(f"- {line}" for line in failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
