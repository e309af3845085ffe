"""Three tracking clients of one server, one after another, on one machine.

``.venv/bin/python bench/browser_clients.py --seconds 15``

The real server runs as a process (640x480@30 VP8, loopback, HTTP on) and
serves, in turn:

- the Python client (``client/client.py``: fast jitter buffer, detector
  process, answers by RTP timestamp and pts);
- headless Chromium on ``/track`` with ``jitterBufferTarget`` 0 (the page's
  default), frames from a ``MediaStreamTrackProcessor``;
- the same page with Chromium's default jitter buffer
  (``?jitterBufferTarget=default``);
- the page reading frames with ``requestVideoFrameCallback``
  (``?frames=video``), the path that waits for the video element.

Every figure is the server's own score from the session's report: frames
answered, error against the true centre of each frame, and latency from the
frame's production to its answer, on the server's clock. On a 2-core
machine Chromium's decoding competes with the server for the same cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    import common  # noqa: F401  # bench/common.py: puts the repository root on sys.path

import argparse
import tempfile
from typing import Any, Optional, Sequence

from bench.common import number
from lab.browser import chromium
from lab.programs import free_port, start_client, start_server, wait_for_reports

PAGES = {
    "Chromium, jitterBufferTarget 0": "",
    "Chromium, default jitter buffer": "&jitterBufferTarget=default",
    "Chromium, requestVideoFrameCallback": "&frames=video",
}


def run(seconds: float, report_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    port, http_port = free_port(), free_port()
    server = start_server(port, "--report-dir", str(report_dir), http_port=http_port)
    results: list[tuple[str, dict[str, Any]]] = []
    try:
        server.wait_for_output("console on", timeout=30)
        client = start_client(port, "--duration", f"{seconds:g}")
        try:
            if client.wait(timeout=seconds + 60) != 0:
                raise RuntimeError(f"the Python client failed:\n{client.describe()}")
        finally:
            client.close()
        results.append(("Python client", wait_for_reports(report_dir, 1)[-1]))
        with chromium() as browser:
            for name, query in PAGES.items():
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{http_port}/track?seconds={seconds:g}{query}")
                page.wait_for_function(
                    "() => ['ended', 'failed'].includes(document.body.dataset.state)",
                    timeout=(seconds + 60) * 1000,
                )
                page.close()
                results.append((name, wait_for_reports(report_dir, len(results) + 1)[-1]))
    finally:
        server.close()
    return results


def table(results: list[tuple[str, dict[str, Any]]]) -> str:
    lines = [
        "| client | frames | answered | error mean px | error max px | latency p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, report in results:
        error, latency = report["error_px"], report["latency_ms"]
        lines.append(
            f"| {name} | {report['frames_sent']} | {100 * (report['answered_ratio'] or 0):.1f} % "
            f"| {number(error['mean'], 3)} | {number(error['max'], 3)} "
            f"| {number(latency['p50'], 1)} | {number(latency['p99'], 1)} |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="tracking time per client")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="balltracker-bench-") as directory:
        results = run(args.seconds, Path(directory))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
