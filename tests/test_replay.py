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


def run_replay(target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "client/client.py", "--replay", str(target)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def replayed(target: Path) -> dict:
    result = run_replay(target)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


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
