"""The console's table: one row per live session and per recently ended one.

Pure: it is handed session summaries (the same dictionaries the JSON reports
hold) and keeps a bounded history of ended sessions, so a server that runs
for weeks holds the same few rows.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterable, Mapping, Optional

#: Ended sessions the console keeps showing.
DEFAULT_KEEP_ENDED = 20

LIVE = "live"
ENDED = "ended"

#: The report files of an ended session, by the console's link name.
REPORT_SUFFIXES = ("json", "csv", "seconds.csv", "png")


def session_row(
    summary: Mapping[str, Any], state: str, reports: Optional[Mapping[str, str]] = None
) -> dict[str, Any]:
    """The table's row for one session summary (see ``TrackingSession.summary``)."""
    error = summary.get("error_px") or {}
    latency = summary.get("latency_ms") or {}
    ice = summary.get("ice") or {}
    return {
        "id": summary["session"],
        "state": state,
        "peer": summary.get("peer"),
        "started_at": summary.get("started_at"),
        "duration_s": summary.get("duration_s"),
        "frames_sent": summary.get("frames_sent", 0),
        "frames_answered": summary.get("frames_answered", 0),
        "answered_ratio": summary.get("answered_ratio"),
        "error_mean_px": error.get("mean"),
        "error_p95_px": error.get("p95"),
        "latency_p50_ms": latency.get("p50"),
        "latency_p99_ms": latency.get("p99"),
        "end_reason": summary.get("end_reason"),
        # The nominated candidate pair, server side first: "host -> relay".
        "ice_path": ice.get("path"),
        "reports": dict(reports) if reports else None,
    }


class SessionTable:
    """Rows of the ended sessions, newest first, at most ``keep_ended`` of them."""

    def __init__(self, keep_ended: int = DEFAULT_KEEP_ENDED) -> None:
        self._ended: deque[dict[str, Any]] = deque(maxlen=keep_ended)

    def session_ended(
        self, summary: Mapping[str, Any], reports: Optional[Mapping[str, str]] = None
    ) -> None:
        self._ended.appendleft(session_row(summary, ENDED, reports))

    def rows(self, live_summaries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Live sessions first (oldest first), then the ended ones (newest first)."""
        live = [session_row(summary, LIVE) for summary in live_summaries]
        live.sort(key=lambda row: row["id"])
        return live + list(self._ended)
