"""server/console/session_table.py: rows of the console's table, from session summaries."""

from __future__ import annotations

from server.console.session_table import ENDED, LIVE, SessionTable, session_row

SUMMARY = {
    "session": "session-20261203T101010-0001",
    "peer": "192.0.2.2:50000",
    "frames_sent": 300,
    "frames_answered": 299,
    "error_px": {"mean": 0.01, "p95": 0.02},
    "latency_ms": {"p50": 12.0, "p99": 30.0},
    "ice": {"local": "host", "remote": "relay", "relay_transport": None, "path": "host -> relay"},
}


def test_a_row_shows_the_media_path() -> None:
    row = session_row(SUMMARY, LIVE)
    assert row["ice_path"] == "host -> relay"
    assert row["error_mean_px"] == 0.01 and row["latency_p99_ms"] == 30.0


def test_a_session_without_a_path_or_an_older_summary_shows_none() -> None:
    failed = dict(SUMMARY, ice={"path": None, "failure": "ICE failed"})
    assert session_row(failed, ENDED)["ice_path"] is None
    older = {k: v for k, v in SUMMARY.items() if k != "ice"}
    assert session_row(older, ENDED)["ice_path"] is None


def test_ended_rows_are_kept_newest_first_and_bounded() -> None:
    table = SessionTable(keep_ended=2)
    for number in range(3):
        table.session_ended(dict(SUMMARY, session=f"session-{number}"))
    rows = table.rows([SUMMARY])
    assert [row["id"] for row in rows] == [SUMMARY["session"], "session-2", "session-1"]
    assert [row["state"] for row in rows] == [LIVE, ENDED, ENDED]
