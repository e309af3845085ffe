"""The load client (lab/load_client.py): its answers, its flags, and one real run.

The answers are pure (a pts in, the true centre of that frame out), checked
against the server's own scene and defaults; the real run streams two
sessions from one load client process to a real server and reads the
server's reports, then shows that answers for the wrong session number are
scored as the large error they are.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from lab.load_client import EXIT_FAILED, LoadClient, LoadSettings, main
from lab.programs import PYTHON, Program, free_port, start_server, wait_for_reports
from lab.true_answers import SceneSettings, TrueAnswers
from protocol.coordinates import MAX_MESSAGE_BYTES, decode_report
from server.core.scene import BallScene
from server.sessions.session import SessionConfig

# -- the answers ---------------------------------------------------------------


def test_the_scene_settings_default_to_the_servers() -> None:
    config = SessionConfig()
    assert SceneSettings() == SceneSettings(
        config.width, config.height, config.radius, config.speed, config.fps, config.seed
    )


def test_session_k_gets_the_scene_of_seed_plus_k() -> None:
    settings = SceneSettings(seed=7)
    assert settings.scene(3) == BallScene.from_seed(640, 480, 20.0, 300.0, 10)


def test_the_answer_is_the_true_centre_of_the_frame_the_pts_names() -> None:
    answers = TrueAnswers(SceneSettings(), session_number=2)
    scene = SceneSettings().scene(2)
    x, y = scene.position(7 / 30)
    report = answers.report(pts=7 * 3000, rtp_timestamp=123_456)
    assert report.rtp_timestamp == 123_456 and report.pts == 21_000
    assert report.x == pytest.approx(x, abs=1e-4) and report.y == pytest.approx(y, abs=1e-4)
    # VP8 may deliver a pts one tick off: still that frame.
    assert answers.report(7 * 3000 - 1, None).x == report.x
    assert answers.report(7 * 3000 + 1, None).y == report.y
    # A frame off is off by the distance the ball moves in a frame (10 px).
    after = answers.report(8 * 3000, None)
    assert after.x is not None and report.x is not None and after.y is not None
    assert report.y is not None
    assert ((after.x - report.x) ** 2 + (after.y - report.y) ** 2) ** 0.5 == pytest.approx(
        10.0, abs=1e-3
    )


def test_the_message_is_a_valid_answer_naming_the_frame_both_ways() -> None:
    message = TrueAnswers(SceneSettings(fps=60), 1).message(1500 * 9, 4_000_000_000)
    assert len(message) < MAX_MESSAGE_BYTES
    decoded = decode_report(message)
    assert (decoded.pts, decoded.rtp_timestamp) == (13_500, 4_000_000_000)
    assert decoded.found


# -- flags and failures --------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--sessions", "0"],
        ["--signaling-port", "99999"],
        ["--duration", "-1"],
        ["--fps", "nan"],
        ["--access-token", " "],
        ["--no-such-flag"],
    ],
)
def test_bad_flags_are_one_error_line_and_status_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1


def test_an_unreachable_server_is_one_line_and_status_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = LoadSettings("127.0.0.1", free_port(), 3, SceneSettings(), connect_timeout=0.3)
    assert asyncio.run(LoadClient(settings).run()) == EXIT_FAILED
    captured = capsys.readouterr()
    assert captured.err.startswith("error: cannot reach signaling at 127.0.0.1:")
    assert len(captured.err.strip().splitlines()) == 1
    summary = json.loads(captured.out)
    assert summary["sessions_started"] == 0 and summary["frames_received"] == 0


# -- a real run ----------------------------------------------------------------


def run_load_client(port: int, *flags: str) -> dict:
    program = Program([PYTHON, "lab/load_client.py", "--signaling-port", str(port), *flags])
    try:
        assert program.wait(timeout=60) == 0, program.describe()
        [summary] = program.json_documents()
        return summary
    finally:
        program.close()


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_two_sessions_from_one_process_are_answered_frame_exactly(tmp_path: Path) -> None:
    port = free_port()
    server = start_server(port, "--duration", "3", "--report-dir", str(tmp_path))
    try:
        summary = run_load_client(port, "--sessions", "2")
        assert summary["sessions_started"] == 2 and summary["ends"] == {"server ended": 2}
        assert summary["answers_sent"] >= 0.95 * summary["frames_received"] > 0
        assert summary["cpu_pct"] is not None
        reports = wait_for_reports(tmp_path, 2)
        assert len(reports) == 2
        for report in reports:
            assert report["frames_sent"] >= 60, report
            assert report["frames_answered"] / report["frames_sent"] >= 0.95, report
            assert report["error_px"]["max"] < 1.0, report
            assert report["invalid_messages"] == 0, report

        # The server's sessions 3 and 4 now; answering as if for 5 and 6 is
        # answering another scene, and the server's error says so.
        run_load_client(port, "--sessions", "2", "--first-session", "5")
        misnamed = wait_for_reports(tmp_path, 4)[2:]
        assert len(misnamed) == 2
        for report in misnamed:
            assert report["frames_answered"] / report["frames_sent"] >= 0.95, report
            assert report["error_px"]["mean"] > 5.0, report
    finally:
        server.close()
