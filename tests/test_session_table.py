"""server.console.session_table and the console's recordings, down to Chromium playing one.

The row logic is checked directly; then the real server with ``--record``,
the real client and headless Chromium (lab/browser.py): a live session says
it is being recorded, the ended one links its MP4, the console serves it,
and the page plays it (``readyState``, ``currentTime`` advancing). Debian's
Chromium here plays H.264 in MP4 (``canPlayType`` says "probably").
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lab.browser import chromium
from lab.programs import free_port, start_client, start_server
from server.console.session_table import ENDED, LIVE, REPORT_SUFFIXES, SessionTable, session_row

pytestmark = pytest.mark.timeout(240)

NAME = "session-20261203T190717-0001"
REPORTS = {suffix: f"/reports/{NAME}.{suffix}" for suffix in REPORT_SUFFIXES}


def summary(recorded: bool) -> dict:
    base = {"session": NAME, "frames_sent": 10, "error_px": {}, "latency_ms": {}}
    if recorded:
        base["recording"] = {"video": None, "frames_dropped": 0}
    return base


def test_rows_of_recorded_and_unrecorded_sessions() -> None:
    assert session_row(summary(False), LIVE)["recording"] is None
    assert session_row(summary(False), ENDED, REPORTS)["reports"] == REPORTS
    assert session_row(summary(True), LIVE)["recording"] == {"state": "recording", "video": None}
    ended = session_row(summary(True), ENDED, REPORTS)
    assert ended["recording"] == {"state": "recorded", "video": f"/reports/{NAME}.mp4"}
    assert ended["reports"] == {
        **REPORTS,
        "mp4": f"/reports/{NAME}.mp4",
        "ivf": f"/reports/{NAME}.ivf",
    }
    # No report directory, no links: nothing to play either.
    assert session_row(summary(True), ENDED)["recording"]["video"] is None


def test_a_row_names_the_scene_and_its_headline_scores() -> None:
    scored = {
        **summary(False),
        "scene": "occlusion",
        "error_px": {"mean": 0.02, "p95": 0.05},
        "error_at_arrival_px": {"mean": 11.5, "p50": 11.0, "p95": 36.8, "max": 50.0},
        "visibility": {
            "frames_hidden": 24,
            "found_when_visible_ratio": 0.975,
            "false_positives_when_hidden": 3,
        },
    }
    row = session_row(scored, LIVE)
    assert row["scene"] == "occlusion"
    assert (row["error_mean_px"], row["error_p95_px"]) == (0.02, 0.05)
    assert (row["error_at_arrival_mean_px"], row["error_at_arrival_p95_px"]) == (11.5, 36.8)
    assert (row["found_when_visible_ratio"], row["false_positives_when_hidden"]) == (0.975, 3)


def test_visibility_stays_empty_until_the_ball_has_been_hidden() -> None:
    # classic never hides it: "found when visible" would only repeat "answered".
    never = {
        **summary(False),
        "scene": "classic",
        "visibility": {
            "frames_hidden": 0,
            "found_when_visible_ratio": 1.0,
            "false_positives_when_hidden": 0,
        },
    }
    row = session_row(never, ENDED, REPORTS)
    assert (row["found_when_visible_ratio"], row["false_positives_when_hidden"]) == (None, None)
    # An older summary, without the keys: empty cells, no error.
    bare = session_row(summary(False), LIVE)
    assert bare["scene"] is None and bare["error_at_arrival_mean_px"] is None
    assert bare["found_when_visible_ratio"] is None


@pytest.mark.e2e
@pytest.mark.browser
def test_the_console_marks_links_serves_and_plays_a_recording(tmp_path: Path) -> None:
    report_dir = tmp_path / "reports"
    port, http_port = free_port(), free_port()
    server = start_server(
        port, "--report-dir", str(report_dir), "--record", "--duration", "5", http_port=http_port
    )
    client = None
    try:
        with chromium() as browser:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{http_port}/")
            client = start_client(port)
            # While it runs: the live row says it is being recorded.
            page.wait_for_selector("tr[data-state=live] .recording-badge", timeout=30_000)
            assert client.wait(timeout=60) == 0, client.describe()
            # Ended: a play button; the MP4 is complete once the JSON report is there.
            button = page.wait_for_selector("tr[data-state=ended] .play-recording", timeout=30_000)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not list(report_dir.glob("*.json")):
                time.sleep(0.1)
            [mp4] = report_dir.glob("session-*.mp4")
            link = page.locator(f"tr[data-state=ended] a[href='/reports/{mp4.name}']")
            assert link.count() == 1
            response = page.request.get(f"http://127.0.0.1:{http_port}/reports/{mp4.name}")
            assert response.status == 200
            assert response.headers["content-type"] == "video/mp4"
            assert response.body() == mp4.read_bytes()
            ivf = page.request.get(f"http://127.0.0.1:{http_port}/reports/{mp4.stem}.ivf")
            assert ivf.status == 200 and ivf.body()[:4] == b"DKIF"

            button.click()
            page.wait_for_function(
                "() => document.getElementById('recording-video')?.readyState >= 2",
                timeout=20_000,
            )
            first = page.evaluate("() => document.getElementById('recording-video').currentTime")
            page.wait_for_function(
                f"() => document.getElementById('recording-video').currentTime > {first} + 0.5",
                timeout=20_000,
            )
            video = page.evaluate(
                """() => {
                    const v = document.getElementById('recording-video');
                    return {width: v.videoWidth, height: v.videoHeight, duration: v.duration,
                            error: v.error && v.error.message};
                }"""
            )
            assert video["error"] is None
            assert (video["width"], video["height"]) == (640, 480)
            assert video["duration"] > 3.0
    finally:
        if client is not None:
            client.close()
        server.close()


ICE_SUMMARY = {
    "session": "session-20261203T101010-0001",
    "peer": "192.0.2.2:50000",
    "frames_sent": 300,
    "frames_answered": 299,
    "error_px": {"mean": 0.01, "p95": 0.02},
    "latency_ms": {"p50": 12.0, "p99": 30.0},
    "ice": {"local": "host", "remote": "relay", "relay_transport": None, "path": "host -> relay"},
}


def test_a_row_shows_the_media_path() -> None:
    row = session_row(ICE_SUMMARY, LIVE)
    assert row["ice_path"] == "host -> relay"
    assert row["error_mean_px"] == 0.01 and row["latency_p99_ms"] == 30.0


def test_a_session_without_a_path_or_an_older_summary_shows_none() -> None:
    failed = dict(ICE_SUMMARY, ice={"path": None, "failure": "ICE failed"})
    assert session_row(failed, ENDED)["ice_path"] is None
    older = {k: v for k, v in ICE_SUMMARY.items() if k != "ice"}
    assert session_row(older, ENDED)["ice_path"] is None


def test_ended_rows_are_kept_newest_first_and_bounded() -> None:
    table = SessionTable(keep_ended=2)
    for number in range(3):
        table.session_ended(dict(ICE_SUMMARY, session=f"session-{number}"))
    rows = table.rows([ICE_SUMMARY])
    assert [row["id"] for row in rows] == [ICE_SUMMARY["session"], "session-2", "session-1"]
    assert [row["state"] for row in rows] == [LIVE, ENDED, ENDED]
