"""A traced session of the real server and client, as processes on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.stage_budget import stage_budget
from lab.programs import free_port, read_reports, start_client, start_server
from protocol.stage_trace import STAGE_NAMES, StageTrace, merge_traces

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

STREAM_S = 4.0


def test_a_traced_session_has_every_stage_of_most_frames_in_path_order(tmp_path: Path) -> None:
    server_trace, client_trace = tmp_path / "server.jsonl", tmp_path / "client.jsonl"
    port = free_port()
    server = start_server(
        port,
        "--once",
        "--duration",
        str(STREAM_S),
        "--report-dir",
        str(tmp_path / "reports"),
        "--trace-stages",
        str(server_trace),
    )
    client = start_client(port, "--trace-stages", str(client_trace))
    try:
        assert client.wait(timeout=60) == 0, client.describe()
        assert server.wait(timeout=30) == 0, server.describe()
        logs = server.stderr + client.stderr
    finally:
        client.close()
        server.close()
    [report] = read_reports(tmp_path / "reports")
    assert report["frames_answered"] >= 0.95 * report["frames_sent"], report
    # Both ends on loopback: no warning about another host's clock.
    assert "another clock" not in logs
    frames = merge_traces(StageTrace.read(server_trace), StageTrace.read(client_trace))
    complete = {rtp: t for rtp, t in frames.items() if set(t) == set(STAGE_NAMES)}
    assert len(complete) >= 0.9 * report["frames_answered"], (len(complete), report)
    in_order = [t for t in complete.values() if [t[s] for s in STAGE_NAMES] == sorted(t.values())]
    assert len(in_order) >= 0.95 * len(complete), [
        t for t in complete.values() if t not in in_order
    ][:3]
    # The trace's end to end is the report's latency: both are on the server's clock.
    budget = stage_budget(complete)
    assert budget.total is not None
    assert budget.total.p50_ms == pytest.approx(report["latency_ms"]["p50"], rel=0.25, abs=0.5)
