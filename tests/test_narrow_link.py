"""The real server and client across a link narrower than the stream (issue 14).

Uncapped, the stream needs about 180 kbit/s on the wire (VP8 at aiortc's
default: 540-byte frames, plus per frame an RTP packet's headers and the
SCTP SACK of its answer). Here a ``tbf`` on the server's side of a
``NetworkLab`` caps it at 100 kbit/s (``burst 16kb latency 200ms``, as
``NetworkLab.set_rate`` does) for one 20 s session. Before the link
adaptation this session answered 20 % of its frames, the latency grew from
0.2 s to over 3 s and the cap dropped 8030 packets (retransmissions of
retransmissions). The server must now fit the stream to the link (a lower
VP8 bitrate, then fewer frames) and keep the latency flat.

``bench/narrow_link.py`` measures the full table (200, 150, 100, 50 kbit/s).
"""

from __future__ import annotations

import csv
import re
import statistics
from pathlib import Path
from typing import Any, Iterator

import pytest

from lab.network_lab import NetworkLab
from lab.programs import start_client, start_server, wait_for_plots, wait_for_reports

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

SIGNALING_PORT = 1234
CAP_KBPS = 100
STREAM_S = 20


def quarter_p50s(csv_path: Path, duration_s: float) -> list[float]:
    """Median latency (ms) of the answered frames in each quarter of the stream time."""
    quarters: list[list[float]] = [[], [], [], []]
    with open(csv_path, newline="") as rows:
        for row in csv.DictReader(rows):
            if row["latency_ms"]:
                quarter = min(3, int(4 * int(row["pts"]) / 90000 / duration_s))
                quarters[quarter].append(float(row["latency_ms"]))
    return [statistics.median(q) for q in quarters]


def tbf_counters(lab: NetworkLab) -> tuple[int, int]:
    """(packets sent, packets dropped) by the cap on the server's side."""
    out = lab.run("server", ["tc", "-s", "qdisc", "show", "dev", "lab0"]).stdout
    found = re.search(r"Sent \d+ bytes (\d+) pkt \(dropped (\d+)", out)
    assert found, out
    return int(found.group(1)), int(found.group(2))


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    available, why = NetworkLab.available()
    if not available:
        pytest.fail(f"NetworkLab prerequisites missing: {why}", pytrace=False)
    report_dir = tmp_path_factory.mktemp("narrow") / "reports"
    with NetworkLab() as lab:
        server = start_server(
            SIGNALING_PORT,
            "--report-dir",
            str(report_dir),
            "--duration",
            str(STREAM_S),
            prefix=lab.exec_argv("server", []),
            host="0.0.0.0",
        )
        client = None
        try:
            lab.set_rate(CAP_KBPS / 1000, side="server")
            # No --duration: the server's BYE after its --duration ends the client.
            client = start_client(
                SIGNALING_PORT, prefix=lab.exec_argv("client", []), host="ball-server"
            )
            assert client.wait(timeout=STREAM_S + 60) == 0, client.describe()
            sent_packets, dropped = tbf_counters(lab)
            client_log = client.stderr
            reports = wait_for_reports(report_dir, 1)
            assert reports, server.describe()
            report = reports[-1]
            yield {
                "report": report,
                "csv": report_dir / f"{report['session']}.csv",
                "seconds": report_dir / f"{report['session']}.seconds.csv",
                "plots": wait_for_plots(report_dir, 1),
                "tbf_sent": sent_packets,
                "tbf_dropped": dropped,
                "client_log": client_log,
            }
        finally:
            if client is not None:
                client.close()
            server.close()


@pytest.mark.timeout(180)
def test_tracking_stays_fast_on_a_narrow_link(session: dict[str, Any]) -> None:
    report = session["report"]
    quarters = quarter_p50s(session["csv"], report["duration_s"])
    print(
        f"\n{CAP_KBPS} kbit/s: {report['frames_sent']} frames sent, answered "
        f"{report['answered_ratio']:.1%}, p50 by quarter {[round(q, 1) for q in quarters]} ms, "
        f"p99 {report['latency_ms']['p99']:.1f} ms, error mean {report['error_px']['mean']:.3f} px, "
        f"cap dropped {session['tbf_dropped']} of {session['tbf_sent']} packets, "
        f"skipped for rate {report['frames_skipped_for_rate']}, rate {report['rate_control']}"
    )
    # Measured (5 runs): 100 % answered, p50 4.5-6 ms in every quarter, p99
    # 35-60 ms, error mean 0.02 px. The targets: >= 60 %, last
    # quarter's p50 <= 80 ms, p99 <= 300 ms, error mean <= 0.2 px, and no
    # growth (last quarter <= 2 x first + 50 ms).
    assert report["answered_ratio"] >= 0.9, report
    assert quarters[-1] <= 80, quarters
    assert quarters[-1] <= 2 * quarters[0] + 50, quarters
    assert report["latency_ms"]["p99"] <= 300, report
    assert report["error_px"]["mean"] <= 0.2, report
    # The sender fits the link instead of overflowing it (before: 8030 drops).
    assert session["tbf_dropped"] <= 0.02 * session["tbf_sent"], session
    # ... and it still streams: at least 10 frames a second.
    assert report["frames_sent"] >= 10 * STREAM_S, report


@pytest.mark.timeout(180)
def test_the_report_says_how_the_stream_was_fitted(session: dict[str, Any]) -> None:
    report = session["report"]
    rate = report["rate_control"]
    assert rate["bitrate_controlled"] and rate["decreases"] >= 1, rate
    # Below aiortc's own VP8 floor of 250 kbit/s, which is above this link.
    assert rate["lowest_bitrate_kbps"] < 250, rate
    assert report["frames_skipped_for_rate"] > 0, report
    assert report["keyframes_sent"] >= 1 and report["keyframes_requested"] is not None
    with open(session["seconds"], newline="") as rows:
        seconds = list(csv.DictReader(rows))
    assert len(seconds) >= STREAM_S - 1
    sent = [float(row["sent_kbps"]) for row in seconds if row["sent_kbps"]]
    # What the server sent, by its own estimate of the wire, fits the link
    # (tbf's 16 kB bucket lets a probe above the cap through for a while).
    assert statistics.median(sent[len(sent) // 2 :]) <= CAP_KBPS * 1.15, sent
    assert any(row["target_kbps"] for row in seconds)
    assert session["plots"] == 1
    # The client says what it gave up on.
    assert re.search(r"video receiver: frames_dropped_stale \d+", session["client_log"])
