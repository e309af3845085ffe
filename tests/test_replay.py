"""client.replay: a real recorded session re-scored offline by ``client.py --replay``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lab.programs import PYTHON, ROOT, free_port, read_reports, start_client, start_server

pytestmark = [pytest.mark.timeout(300), pytest.mark.e2e]


def run_replay(
    target: Path, *flags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "client/client.py", "--replay", str(target), *flags],
        cwd=ROOT,
        env=None if env is None else {**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def replayed(target: Path, *flags: str, env: dict[str, str] | None = None) -> dict:
    result = run_replay(target, *flags, env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads(result.stdout)
    # The closing line names the detector that was replayed.
    assert f"replayed with {summary['detector']}: " in result.stderr, result.stderr
    return summary


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    report_dir = tmp_path_factory.mktemp("replay") / "reports"
    port = free_port()
    server = start_server(
        port, "--once", "--duration", "4", "--report-dir", str(report_dir), "--record"
    )
    client = start_client(port)
    try:
        assert client.wait(timeout=60) == 0, client.describe()
        assert server.wait(timeout=60) == 0, server.describe()
    finally:
        client.close()
        server.close()
    [report] = read_reports(report_dir)
    return report_dir / report["session"], report


def test_replay_matches_the_live_error_on_every_answered_frame(recorded: tuple[Path, dict]) -> None:
    base, report = recorded
    assert report["recording"]["stream_frames_dropped"] == 0, report["recording"]
    summary = replayed(base)
    assert summary["session"] == report["session"]
    assert summary["detector"] == "centroid"
    assert summary["frames_in_stream"] == report["frames_sent"]
    assert summary["frames_decoded"] == report["frames_sent"]
    assert summary["decode_errors"] == 0
    assert summary["frames_without_truth"] == 0
    # Every frame the live client found the ball in is compared, each within 0.001 px
    # (the CSV keeps four decimals).
    assert summary["live_answers_compared"] == report["frames_found"] > 0
    assert summary["largest_difference_from_live_px"] <= 0.001, summary
    assert summary["frames_found"] == summary["frames_scored"]
    assert summary["error_px"]["mean"] == pytest.approx(report["error_px"]["mean"], abs=0.01)
    assert summary["detector_ms"]["p50"] > 0


def test_any_file_of_the_session_names_it(recorded: tuple[Path, dict]) -> None:
    base, report = recorded
    summary = replayed(base.with_name(base.name + ".json"))
    assert summary["frames_in_stream"] == report["frames_sent"]


def test_a_stream_cut_mid_frame_replays_up_to_its_cut(
    recorded: tuple[Path, dict], tmp_path: Path
) -> None:
    base, report = recorded
    for suffix in (".csv", ".json"):
        shutil.copy(base.with_name(base.name + suffix), tmp_path / (base.name + suffix))
    whole = base.with_name(base.name + ".ivf").read_bytes()
    (tmp_path / (base.name + ".ivf")).write_bytes(whole[: len(whole) * 2 // 3])
    summary = replayed(tmp_path / base.name)
    assert 0 < summary["frames_in_stream"] < report["frames_sent"]
    assert summary["decode_errors"] == 0
    assert summary["largest_difference_from_live_px"] <= 0.001


def test_replay_with_the_hough_locator(recorded: tuple[Path, dict]) -> None:
    base, report = recorded
    summary = replayed(base, "--detector", "hough")
    assert summary["detector"] == "hough"
    assert summary["frames_scored"] == report["frames_sent"]
    assert summary["frames_found"] >= 0.9 * summary["frames_scored"], summary
    # Whole pixels' worth of votes, not the centroid's thousandths; its own time per frame.
    assert 0.01 < summary["error_px"]["mean"] < 2.0, summary
    assert summary["detector_ms"]["p50"] > 0


USER_MODULE = """
from client.detection.detector import CentroidDetector


class ShiftedAndFlaky:
    '''The centroid detector's answer moved by (3, 4) px; every fourth frame raises.'''

    def __init__(self):
        self._inner = CentroidDetector()
        self._calls = 0

    def detect(self, luma):
        self._calls += 1
        if self._calls % 4 == 0:
            raise RuntimeError("this frame is too hard")
        found = self._inner.detect(luma)
        return None if found is None else (found[0] + 3.0, found[1] + 4.0)
"""


def test_replay_with_a_users_locator(recorded: tuple[Path, dict], tmp_path: Path) -> None:
    base, report = recorded
    (tmp_path / "user_replay_h22.py").write_text(USER_MODULE)
    env = {"PYTHONPATH": str(tmp_path)}
    summary = replayed(base, "--detector", "user_replay_h22:ShiftedAndFlaky", env=env)
    assert summary["detector"] == "user_replay_h22:ShiftedAndFlaky"
    scored = summary["frames_scored"]
    assert scored == report["frames_sent"]
    # The failing frames count as "no ball" and the replay goes on.
    assert summary["frames_found"] == scored - scored // 4, summary
    assert summary["error_px"]["mean"] == pytest.approx(5.0, abs=0.05)


def test_a_predictor_is_told_the_recorded_latency_or_nothing(
    recorded: tuple[Path, dict], tmp_path: Path
) -> None:
    base, report = recorded
    # --detect-in does not apply: replay is offline and always inline.
    summary = replayed(base, "--detector", "kalman", "--detect-in", "process")
    assert summary["detector"] == "kalman"
    assert summary["lead_ms"] == report["latency_ms"]["p50"] > 0
    # Aiming ahead costs error at frame time, as it does live.
    assert summary["error_px"]["mean"] > report["error_px"]["mean"]
    # Without a report (a killed server) there is no latency to tell it.
    for suffix in (".csv", ".ivf"):
        shutil.copy(base.with_name(base.name + suffix), tmp_path / (base.name + suffix))
    bare = replayed(tmp_path / base.name, "--detector", "kalman")
    assert bare["lead_ms"] is None and bare["frames_found"] > 0
    # The old spelling still means the centroid detector.
    assert replayed(base, "--detector", "inline")["detector"] == "centroid"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--detector", "no_such_module_h22:Thing"], "error: --detector no_such_module_h22:Thing"),
        (["--detector", "centroids"], "expected centroid, hough, kalman"),
    ],
)
def test_a_bad_detector_is_one_line_and_exit_2(
    recorded: tuple[Path, dict], flags: list[str], message: str
) -> None:
    base, _ = recorded
    result = run_replay(base, *flags)
    assert result.returncode == 2 and result.stdout == ""
    assert message in result.stderr.strip().splitlines()[-1], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no recorded stream"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "is not an IVF stream recording"),
        (b"DKIF\x00\x00\x20\x00VP90" + bytes(20), "not a VP8 or H.264 IVF stream"),
        (b"DK", "is not an IVF stream recording"),
    ],
)
def test_missing_and_foreign_files_get_one_clear_line(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    target = tmp_path / "session-20261203T000000-0001.ivf"
    if content is not None:
        target.write_bytes(content)
    result = run_replay(target)
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line, line


def test_a_recording_of_a_killed_server_replays_up_to_where_it_ends(tmp_path: Path) -> None:
    report_dir = tmp_path / "reports"
    port = free_port()
    server = start_server(port, "--report-dir", str(report_dir), "--record")
    client = start_client(port)
    try:
        # Until rows have left the ledger (5 s) and the CSV's write buffer.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(
            len(p.read_text().splitlines()) > 1 for p in report_dir.glob("session-*[0-9].csv")
        ):
            time.sleep(0.5)
        os.kill(server.pid, signal.SIGKILL)  # the server only: its recorder must cope
        server.wait(timeout=10)
        client.wait(timeout=60)
        # The recorder finishes its files once the server is gone.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(report_dir.glob("*.mp4")):
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        client.close()
        server.close()
    assert read_reports(report_dir) == []  # killed: no JSON
    [stream] = report_dir.glob("session-*.ivf")
    summary = replayed(stream)
    assert summary["frames_in_stream"] > 30
    # The CSV has rows only for frames that left the ledger before the kill.
    assert summary["frames_scored"] > 0
    assert summary["largest_difference_from_live_px"] <= 0.001
