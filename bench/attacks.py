"""Each attack of issue 19 beside a tracked session: what it costs a real client.

``.venv/bin/python bench/attacks.py``                      (every attack, 10 s sessions)
``.venv/bin/python bench/attacks.py --attacks idle-http,candidates --seconds 6``

For each attack one fresh server runs two sessions of the real
``client/client.py`` from 127.0.0.1, one after the other: a baseline without
the attack, then one while ``lab.attacks`` attacks from 127.0.0.2 (started a
few seconds before, so it is in force). The table gives, per attack, the
tracked session's answered share and latency p50/p99 without and with the
attack, the server's RSS at the end of the attacked session, the slowest
``/livez`` answer during it, and what the attacker saw. Target: under every
attack, p99 <= 2x the baseline of the same run.

Timing figures on a machine shared with other work are noisy: say so next to
them, and re-measure on a quiet machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repository root importable, as bench/latency.py does.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import json
import os
import time
from typing import Any, Optional

from lab.attacks import ATTACKS, ProbeWatch, start_attacker, stop_attacker
from lab.programs import Program, close_all, free_port, start_client, start_server

TOKEN = "bench-token"

#: The server flags each attack runs against: a token for the token variant,
#: short silence timeouts so silent and flooding sessions come and go.
SERVER_FLAGS: dict[str, tuple[str, ...]] = {
    "idle-signaling": (),
    "idle-signaling-token": ("--access-token", TOKEN),
    "silent-webrtc": ("--silence-timeout", "3"),
    "idle-http": (),
    "slow-body": (),
    "candidates": (),
    "junk-messages": ("--silence-timeout", "4"),
}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tracked(port: int, seconds: float, token: Optional[str]) -> Program:
    flags = ["--duration", f"{seconds:g}"]
    if token is not None:
        flags += ["--access-token", token]
    return start_client(port, *flags)


def summary_of(server: Program, seen: int) -> dict[str, Any]:
    """The newest summary of a session from 127.0.0.1 beyond the first ``seen``."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        mine = [d for d in server.json_documents() if d.get("peer", "").startswith("127.0.0.1:")]
        if len(mine) > seen:
            return mine[seen]
        time.sleep(0.1)
    raise RuntimeError(f"no summary of session {seen + 1}:\n{server.describe()}")


def run_attack(name: str, seconds: float, warm_up_s: float) -> dict[str, Any]:
    kind = name.removesuffix("-token")
    token = TOKEN if name.endswith("-token") else None
    port, http_port = free_port(), free_port()
    server = start_server(port, *SERVER_FLAGS[name], http_port=http_port)
    attacker = client = None
    probe = ProbeWatch(f"http://127.0.0.1:{http_port}/livez")
    try:
        server.wait_for_output("console on", timeout=30)
        client = tracked(port, seconds, token)
        client.wait(timeout=seconds + 60)
        baseline = summary_of(server, 0)
        client.close()
        attack_flags = ["--token", "wrong"] if token else []
        attacker = start_attacker(kind, port, http_port, *attack_flags)
        time.sleep(warm_up_s)
        probe.start()
        client = tracked(port, seconds, token)
        client.wait(timeout=seconds + 60)
        rss = rss_mb(server.pid)
        probe.stop()
        attacked = summary_of(server, 1)
        tally = stop_attacker(attacker) or {}
    finally:
        probe.stop()
        close_all(client, attacker, server)
    return {
        "attack": name,
        "baseline": _figures(baseline),
        "attacked": _figures(attacked),
        "server_rss_mb": round(rss, 1),
        "livez_slowest_ms": round(probe.slowest_s * 1000, 1),
        "livez_failures": probe.failures,
        "attacker": tally,
    }


def _figures(summary: dict[str, Any]) -> dict[str, Any]:
    latency = summary["latency_ms"]
    return {
        "answered_pct": round(100 * (summary["answered_ratio"] or 0.0), 2),
        "p50_ms": latency["p50"] and round(latency["p50"], 1),
        "p99_ms": latency["p99"] and round(latency["p99"], 1),
        "end_reason": summary["end_reason"],
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "| attack | answered % (base / attacked) | p50 ms (base / attacked) "
        "| p99 ms (base / attacked) | p99 ≤ 2× base | server RSS MB | /livez slowest ms |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        base, hit = row["baseline"], row["attacked"]
        within = (
            "yes"
            if base["p99_ms"] and hit["p99_ms"] and hit["p99_ms"] <= 2 * base["p99_ms"]
            else "no"
        )
        print(
            f"| {row['attack']} | {base['answered_pct']} / {hit['answered_pct']} "
            f"| {base['p50_ms']} / {hit['p50_ms']} | {base['p99_ms']} / {hit['p99_ms']} "
            f"| {within} | {row['server_rss_mb']} | {row['livez_slowest_ms']} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [*ATTACKS[:1], "idle-signaling-token", *ATTACKS[1:]]
    parser.add_argument("--attacks", default=",".join(names), help="comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="each tracked session")
    parser.add_argument("--warm-up", type=float, default=3.0, help="attack alone before it")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    chosen = [a for a in args.attacks.split(",") if a]
    unknown = set(chosen) - set(names)
    if unknown:
        parser.error(f"unknown attacks: {', '.join(sorted(unknown))}")
    rows = []
    for name in chosen:
        print(f"# {name}", file=sys.stderr, flush=True)
        rows.append(run_attack(name, args.seconds, args.warm_up))
    print(f"# {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at the end")
    print_table(rows)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
