"""Every scene, streamed by the real server to the real client over WebRTC on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytest

from lab.programs import close_all, free_port, read_reports, start_client, start_server
from server.core.scene import BallScene
from server.core.scenes import SCENES, make_scene

pytestmark = [pytest.mark.timeout(120), pytest.mark.e2e]

STREAM_S = 3.0
#: The first session is number 1, so its scene's seed is the server's seed + 1.
SEED = 0


def one_session(
    tmp_path: Path, *server_flags: str, env: Optional[dict[str, str]] = None
) -> tuple[dict[str, Any], str]:
    """One session of ``STREAM_S`` between the real programs: its report and the client's log."""
    port = free_port()
    server = client = None
    try:
        server = start_server(
            port,
            "--once",
            "--duration",
            str(STREAM_S),
            "--report-dir",
            str(tmp_path),
            *server_flags,
            env=env,
        )
        client = start_client(port)
        assert client.wait(timeout=60) == 0, client.describe()
        assert server.wait(timeout=30) == 0, server.describe()
        [report] = read_reports(tmp_path)
        return report, client.stderr
    finally:
        close_all(client, server)


@pytest.mark.parametrize("name", SCENES)
def test_each_scene_streams_and_its_report_says_which(name: str, tmp_path: Path) -> None:
    report, client_log = one_session(tmp_path, "--seed", str(SEED), env={"BALLTRACKER_SCENE": name})
    assert report["scene"] == name
    # How many are answered depends on the machine's load; that they are does not.
    assert report["frames_sent"] > 0 and report["frames_answered"] > 0, report
    arrival = report["error_at_arrival_px"]
    if report["frames_found"]:
        assert arrival["mean"] is not None and arrival["p95"] is not None
    # The server told the client its latency, and the client kept it.
    assert "the server measures our latency" in client_log, client_log
    rows = (tmp_path / f"{report['session']}.csv").read_text().splitlines()
    assert rows[0].endswith(",visibility,arrival_true_x,arrival_true_y,error_at_arrival_px")
    assert len(rows) - 1 == report["frames_sent"]


def test_classic_answers_are_further_off_at_arrival_than_at_frame_time(tmp_path: Path) -> None:
    # The ball moves 300 px/s: tens of ms of latency are px of error at arrival.
    report, _ = one_session(tmp_path)
    assert report["scene"] == "classic"
    frame_time, arrival = report["error_px"]["p50"], report["error_at_arrival_px"]["p50"]
    latency_s = report["latency_ms"]["p50"] / 1000
    assert frame_time < 0.1 < arrival, report
    # Within a factor of two of speed x latency (the medians need not pair up).
    assert 0.5 * 300 * latency_s < arrival < 2 * 300 * latency_s + 1, report


def test_occlusion_reports_found_when_visible_and_hidden_frames(tmp_path: Path) -> None:
    scene = make_scene("occlusion", BallScene.from_seed(640, 480, 20.0, 300.0, SEED + 1), 30, 1)
    hidden = [i for i in range(int(30 * STREAM_S)) if scene.truth(i).hidden]
    assert hidden and hidden[-1] < 30 * STREAM_S - 15  # hides, then comes back, in the run
    report, _ = one_session(tmp_path, "--seed", str(SEED), "--scene", "occlusion")
    visibility = report["visibility"]
    assert 0 < visibility["frames_hidden"] <= len(hidden), report
    assert visibility["found_when_visible_ratio"] > 0.8, report
    # Nothing bright shows while the ball is behind the bar.
    assert visibility["false_positives_when_hidden"] == 0, report
    assert visibility["reacquisitions"] + visibility["reacquisitions_missed"] >= 1, report
    assert visibility["reacquire_ms"]["max"] is None or visibility["reacquire_ms"]["max"] < 500
