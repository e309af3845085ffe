"""The real server and client, as processes, over real WebRTC on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from lab.programs import (
    free_port,
    read_reports,
    start_client,
    start_server,
    wait_for_reports,
)
from tests.test_report import assert_valid_report

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

STREAM_S = 4.0
#: How soon the server must end the session of a client killed with SIGKILL.
KILLED_CLIENT_NOTICED_S = 2.0


def assert_tracked(report: dict, min_answered: float = 0.95) -> None:
    assert report["frames_sent"] >= 0.8 * report["fps"] * min(report["duration_s"], STREAM_S)
    assert report["frames_answered"] / report["frames_sent"] >= min_answered, report
    assert report["frames_found"] == report["frames_answered"], report
    assert report["error_px"]["mean"] < 0.1, report
    assert report["error_px"]["max"] < 1.0, report
    assert report["invalid_messages"] == 0, report
    assert 0 < report["latency_ms"]["p50"] < 200, report


@pytest.fixture
def report_dir(tmp_path: Path) -> Path:
    return tmp_path / "reports"


def test_one_session_is_tracked_frame_exactly(report_dir: Path) -> None:
    port = free_port()
    server = start_server(
        port,
        "--once",
        "--duration",
        str(STREAM_S),
        "--report-dir",
        str(report_dir),
        progress_interval=None,
    )
    client = start_client(port)
    try:
        assert client.wait(timeout=60) == 0, client.describe()
        assert server.wait(timeout=30) == 0, server.describe()
        [report] = read_reports(report_dir)
        assert_tracked(report)
        assert report["end_reason"] == "duration reached"
        # A real report follows the published schema, and so does the line
        # the server printed.
        assert_valid_report(report)
        assert report["ended_at"] is not None and report["host"]
        for key in (
            "frames_sent",
            "frames_answered",
            "invalid_messages",
            "fps",
            "width",
            "height",
            "codec",
            "duration_s",
        ):
            assert key in report
        assert set(report["error_px"]) >= {"mean", "p50", "p95", "max"}
        assert set(report["latency_ms"]) >= {"p50", "p95", "p99", "max"}
        # The server prints the same summary, one line of JSON (log shippers
        # split anything longer); the client prints its own, likewise.
        [server_line] = server.stdout.splitlines()
        assert json.loads(server_line)["frames_sent"] == report["frames_sent"]
        assert_valid_report(json.loads(server_line))
        [client_line] = client.stdout.splitlines()
        client_summary = json.loads(client_line)
        assert client_summary["frames_received"] >= report["frames_answered"]
        # The per-frame CSV has one row per frame sent.
        rows = (report_dir / f"{report['session']}.csv").read_text().splitlines()
        assert rows[0] == (
            "pts,true_x,true_y,reported_x,reported_y,error_px,latency_ms,"
            "visibility,arrival_true_x,arrival_true_y,error_at_arrival_px"
        )
        assert len(rows) - 1 == report["frames_sent"]
        # No progress lines at INFO by default (--progress-interval asks for them).
        assert ": sent " not in server.stderr, server.stderr
    finally:
        client.close()
        server.close()


#: What stock aiortc's jitter buffer costs: it releases a frame only when the
#: next one starts, one frame interval (33 ms at 30 fps) on top of the 5-15 ms
#: the rest of the round trip takes. Measured p50 ratios stock/fast: 4-6x
#: (docs/latency.md); 2x still holds on a loaded machine, and fails if the
#: client used the same buffer both times.
STOCK_OVER_FAST_P50 = 2.0


def _session_with_jitter_buffer(kind: str, report_dir: Path) -> tuple[dict, str]:
    """One session of the real client with ``--jitter-buffer kind``; its report and log."""
    port = free_port()
    server = start_server(
        port, "--once", "--duration", str(STREAM_S), "--report-dir", str(report_dir / kind)
    )
    client = start_client(port, "--jitter-buffer", kind)
    try:
        assert client.wait(timeout=60) == 0, client.describe()
        assert server.wait(timeout=30) == 0, server.describe()
        [report] = read_reports(report_dir / kind)
        return report, client.stderr
    finally:
        client.close()
        server.close()


def test_fast_jitter_buffer_and_repeating_nacks_are_in_use_and_cut_latency(
    report_dir: Path,
) -> None:
    fast, fast_log = _session_with_jitter_buffer("fast", report_dir)
    stock, stock_log = _session_with_jitter_buffer("stock", report_dir)
    ratio = stock["latency_ms"]["p50"] / fast["latency_ms"]["p50"]
    print(
        f"\nlatency p50: fast {fast['latency_ms']['p50']:.1f} ms, "
        f"stock {stock['latency_ms']['p50']:.1f} ms, ratio {ratio:.2f}"
    )
    # The client names what its video receiver really uses, read back from it.
    assert (
        "video receiver: jitter buffer FastJitterBuffer, NACK generator RepeatingNackGenerator"
        in fast_log
    ), fast_log
    assert (
        "video receiver: jitter buffer JitterBuffer, NACK generator RepeatingNackGenerator"
        in stock_log
    ), stock_log
    for report in (fast, stock):
        assert_tracked(report, min_answered=0.9)
    assert ratio >= STOCK_OVER_FAST_P50, (fast["latency_ms"], stock["latency_ms"])


def test_client_duration_ends_with_bye_and_exit_zero(report_dir: Path) -> None:
    port = free_port()
    server = start_server(port, "--report-dir", str(report_dir))
    client = start_client(port, "--duration", "3")
    try:
        assert client.wait(timeout=60) == 0, client.describe()
        [report] = wait_for_reports(report_dir, 1)
        assert report["end_reason"] == "client said bye"
        assert_tracked(report, min_answered=0.9)
        assert server.process.poll() is None  # serves on
    finally:
        client.close()
        server.close()


def test_two_clients_in_a_row(report_dir: Path) -> None:
    port = free_port()
    server = start_server(port, "--duration", "2.5", "--report-dir", str(report_dir))
    try:
        for _ in range(2):
            client = start_client(port)
            try:
                assert client.wait(timeout=60) == 0, client.describe()
            finally:
                client.close()
        # The client exits on the server's BYE, maybe before the report is written.
        reports = wait_for_reports(report_dir, 2)
        assert len(reports) == 2
        for report in reports:
            assert report["end_reason"] == "duration reached", report
            assert_tracked(report)
    finally:
        server.close()


def test_two_clients_at_once(report_dir: Path) -> None:
    port = free_port()
    server = start_server(port, "--duration", "3", "--report-dir", str(report_dir))
    clients = [start_client(port) for _ in range(2)]
    try:
        for client in clients:
            assert client.wait(timeout=60) == 0, client.describe()
        # The clients exit on the server's BYE, maybe before the reports are written.
        reports = wait_for_reports(report_dir, 2)
        assert len(reports) == 2
        assert reports[0]["session"] != reports[1]["session"]
        for report in reports:
            assert_tracked(report, min_answered=0.9)
    finally:
        for client in clients:
            client.close()
        server.close()


def test_client_killed_mid_stream_leaves_next_session_unharmed(report_dir: Path) -> None:
    port = free_port()
    server = start_server(port, "--report-dir", str(report_dir))
    victim = start_client(port)
    try:
        server.wait_for_output("answered", timeout=30)
        victim.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        victim.wait(timeout=10)
        [killed] = wait_for_reports(report_dir, 1)
        # EOF on signaling ends the session at once (measured 0.1-0.4 s; see
        # test_faults.py, which also checks that the server does not spin).
        assert time.monotonic() - killed_at < KILLED_CLIENT_NOTICED_S, killed
        assert killed["end_reason"] == "client disconnected", killed
        survivor = start_client(port, "--duration", "3")
        try:
            assert survivor.wait(timeout=60) == 0, survivor.describe()
        finally:
            survivor.close()
        assert_tracked(wait_for_reports(report_dir, 2)[1], min_answered=0.9)
    finally:
        victim.close()
        server.close()


def test_sigterm_ends_client_cleanly(report_dir: Path) -> None:
    port = free_port()
    server = start_server(port, "--report-dir", str(report_dir))
    client = start_client(port)
    try:
        server.wait_for_output("answered", timeout=30)
        client.signal(signal.SIGTERM)
        assert client.wait(timeout=15) == 0, client.describe()
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0, server.describe()
        assert len(read_reports(report_dir)) == 1
    finally:
        client.close()
        server.close()


def test_detector_process_death_ends_the_client_with_a_clear_error() -> None:
    port = free_port()
    server = start_server(port)
    # The detector runs on the client's event loop by default; this is the process one.
    client = start_client(port, "--reconnect", "--detector", "process")
    try:
        server.wait_for_output("answered", timeout=30)
        children = Path(f"/proc/{client.pid}/task/{client.pid}/children").read_text().split()
        detectors = [
            int(child)
            for child in children
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
        ]
        assert len(detectors) == 1, "the client should have one detector process"
        os.kill(detectors[0], signal.SIGKILL)
        assert client.wait(timeout=15) == 1, client.describe()
        assert "detector" in client.stderr and "Traceback" not in client.stderr
    finally:
        client.close()
        server.close()


def test_an_unmodified_aiortc_peer_with_tcp_socket_signaling_is_served(report_dir: Path) -> None:
    """The wire format is aiortc's: its own TcpSocketSignaling answers our offer."""
    from aiortc import RTCConfiguration, RTCPeerConnection
    from aiortc.contrib.signaling import TcpSocketSignaling

    port = free_port()
    server = start_server(port, "--report-dir", str(report_dir))

    async def answer_and_watch() -> int:
        signaling = TcpSocketSignaling("127.0.0.1", port)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        received: asyncio.Queue[object] = asyncio.Queue()

        @pc.on("track")
        def on_track(track: object) -> None:
            async def pull() -> None:
                while True:
                    await received.put(await track.recv())  # type: ignore[attr-defined]

            asyncio.ensure_future(pull())

        try:
            offer = await signaling.receive()
            await pc.setRemoteDescription(offer)  # type: ignore[arg-type]
            await pc.setLocalDescription(await pc.createAnswer())
            await signaling.send(pc.localDescription)
            for _ in range(10):
                await asyncio.wait_for(received.get(), 10)
            return 10
        finally:
            await signaling.close()  # sends BYE
            await pc.close()

    try:
        assert asyncio.run(answer_and_watch()) == 10
        [report] = wait_for_reports(report_dir, 1)
        assert report["end_reason"] == "client said bye"
        assert report["frames_sent"] >= 10 and report["invalid_messages"] == 0
    finally:
        server.close()
