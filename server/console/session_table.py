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
#: The recording's files (server --record, ``server.reports.recorder``): the
#: annotated video the console plays, and the kept stream for ``--replay``.
RECORDING_SUFFIXES = ("mp4", "ivf")

#: A live session being recorded, and an ended one that was.
RECORDING = "recording"
RECORDED = "recorded"


def session_row(
    summary: Mapping[str, Any], state: str, reports: Optional[Mapping[str, str]] = None
) -> dict[str, Any]:
    """The table's row for one session summary (see ``TrackingSession.summary``)."""
    error = summary.get("error_px") or {}
    at_arrival = summary.get("error_at_arrival_px") or {}
    latency = summary.get("latency_ms") or {}
    ice = summary.get("ice") or {}
    return {
        "id": summary["session"],
        "state": state,
        "scene": summary.get("scene"),
        "peer": summary.get("peer"),
        "started_at": summary.get("started_at"),
        "duration_s": summary.get("duration_s"),
        "frames_sent": summary.get("frames_sent", 0),
        "frames_answered": summary.get("frames_answered", 0),
        "answered_ratio": summary.get("answered_ratio"),
        "error_mean_px": error.get("mean"),
        "error_p95_px": error.get("p95"),
        "error_at_arrival_mean_px": at_arrival.get("mean"),
        "error_at_arrival_p95_px": at_arrival.get("p95"),
        **_visibility(summary),
        "latency_p50_ms": latency.get("p50"),
        "latency_p99_ms": latency.get("p99"),
        "end_reason": summary.get("end_reason"),
        # The nominated candidate pair, server side first: "host -> relay".
        "ice_path": ice.get("path"),
        "reports": _with_recording(summary, reports),
        "recording": _recording(summary, state, reports),
    }


def _visibility(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Found when visible and false positives, once the ball has been hidden.

    In a scene that never hides it (every scene but ``occlusion``) the share
    found is the share answered and false positives cannot happen: the
    columns would repeat the table or say nothing, so they stay empty. Hidden
    frames are counted as they leave the ledger, so a live session shows
    them some five seconds late.
    """
    visibility = summary.get("visibility") or {}
    if not visibility.get("frames_hidden"):
        return {"found_when_visible_ratio": None, "false_positives_when_hidden": None}
    return {
        "found_when_visible_ratio": visibility.get("found_when_visible_ratio"),
        "false_positives_when_hidden": visibility.get("false_positives_when_hidden"),
    }


def _recording_links(summary: Mapping[str, Any], reports: Mapping[str, str]) -> dict[str, str]:
    # Beside the report's own files, under the same session-id prefix.
    any_link = next(iter(reports.values()))
    directory = any_link.rsplit("/", 1)[0]
    return {suffix: f"{directory}/{summary['session']}.{suffix}" for suffix in RECORDING_SUFFIXES}


def _with_recording(
    summary: Mapping[str, Any], reports: Optional[Mapping[str, str]]
) -> Optional[dict[str, str]]:
    if not reports:
        return None
    links = dict(reports)
    if summary.get("recording"):
        links.update(_recording_links(summary, reports))
    return links


def _recording(
    summary: Mapping[str, Any], state: str, reports: Optional[Mapping[str, str]]
) -> Optional[dict[str, Any]]:
    """None for a session not recorded; else its state and, once ended, its video's link."""
    if not summary.get("recording"):
        return None
    if state == LIVE or not reports:
        return {"state": RECORDING, "video": None}
    return {"state": RECORDED, "video": _recording_links(summary, reports)["mp4"]}


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
