"""Relay benchmark: direct against relayed through coturn, over UDP and over TCP, in one run.

``.venv/bin/python bench/relay.py --seconds 20``  (as root: network namespaces)

Three namespaces (``NetworkLab(relay=True)``): the server's, the client's and
the relay's, with coturn (``lab/turn_relay.py``) in the last. Each condition
is one session of ``--seconds`` (the server's ``--duration``):

- **direct**: UDP passes between server and client; no ICE server anywhere.
- **relay udp**: no UDP between them any more (``block_direct_udp``); the
  client allocates on the relay over UDP, ``--ice-transport-policy relay``.
- **relay tcp**: the same, over a TCP connection to the relay.

It prints one markdown table: answered %, error mean, latency p50 and p99,
the path each end reported, and the relay's CPU over the session (user plus
system time of the coturn process over the session's wall time, in % of one
core). The machine this runs on may be shared: the figures then carry the
other load, which is why this is a benchmark that asserts nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repository root importable (lab.*).
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from lab.network_lab import NetworkLab
from lab.programs import start_client, start_server, wait_for_reports
from lab.turn_relay import TurnRelay

SIGNALING_PORT = 1234
SECRET = "bench-relay-secret"
#: Start-up (imports, detector spawn) and teardown around the session.
OVERHEAD_TIMEOUT_S = 90.0


@dataclass
class Condition:
    name: str
    client_flags: tuple[str, ...]
    block_udp: bool


@dataclass
class Result:
    name: str
    report: dict[str, Any]
    client_path: Optional[str]
    relay_cpu_percent: float


def run_condition(
    lab: NetworkLab, relay: TurnRelay, reports: Path, condition: Condition, seconds: float
) -> Result:
    if condition.block_udp:
        lab.block_direct_udp()
    before = len(list(reports.glob("session-*.json")))
    server = start_server(
        SIGNALING_PORT,
        "--report-dir", str(reports),
        "--duration", f"{seconds:g}",
        "--once",
        prefix=lab.exec_argv("server", []),
        host="0.0.0.0",
    )  # fmt: skip
    try:
        cpu_before, wall_before = relay.cpu_seconds(), time.monotonic()
        client = start_client(
            SIGNALING_PORT,
            *condition.client_flags,
            prefix=lab.exec_argv("client", []),
            host="ball-server",
        )
        try:
            status = client.wait(timeout=seconds + OVERHEAD_TIMEOUT_S)
            if status != 0:
                raise RuntimeError(f"{condition.name}: client exited {status}\n{client.describe()}")
            documents = client.json_documents()
        finally:
            client.close()
        cpu = relay.cpu_seconds() - cpu_before
        wall = time.monotonic() - wall_before
    finally:
        server.close()
    report = sorted(wait_for_reports(reports, before + 1), key=lambda r: r["session"])[-1]
    ice = (documents[-1] if documents else {}).get("ice") or {}
    return Result(condition.name, report, ice.get("path"), 100.0 * cpu / wall)


def markdown_table(results: list[Result]) -> str:
    def fmt(value: Optional[float], digits: int) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    lines = [
        "| condition | answered | error mean (px) | latency p50 (ms) | latency p99 (ms) "
        "| path (client -> server) | path (server -> client) | relay CPU (% of a core) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        report = result.report
        lines.append(
            f"| {result.name} | {100 * (report['answered_ratio'] or 0):.1f} % "
            f"| {fmt(report['error_px']['mean'], 3)} "
            f"| {fmt(report['latency_ms']['p50'], 1)} | {fmt(report['latency_ms']['p99'], 1)} "
            f"| {result.client_path or '–'} | {report['ice'].get('path') or '–'} "
            f"| {result.relay_cpu_percent:.1f} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="streaming time per condition")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    for available, why in (NetworkLab.available(), TurnRelay.available()):
        if not available:
            print(f"prerequisites missing: {why}", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as directory:
        reports = Path(directory)
        with NetworkLab(relay=True) as lab, TurnRelay(lab, SECRET) as relay:
            relayed = ("--turn-secret", SECRET, "--ice-transport-policy", "relay")
            conditions = [
                Condition("direct", (), block_udp=False),
                Condition("relay udp", ("--ice-server", relay.url("udp"), *relayed), True),
                Condition("relay tcp", ("--ice-server", relay.url("tcp"), *relayed), True),
            ]
            results = []
            for condition in conditions:
                results.append(run_condition(lab, relay, reports, condition, args.seconds))
                print(f"{condition.name}: done", file=sys.stderr, flush=True)
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
