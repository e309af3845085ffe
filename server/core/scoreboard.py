"""Scores each answer against the true position of the very frame it names.

And against where the ball is when the answer arrives: frame ``n`` shows
scene time ``n / fps`` at the moment it was produced, and the scene moves on
in real time, so an answer that arrives ``latency`` later is also measured
against the position at ``n / fps + latency`` (``error_at_arrival_px``).
That is the error a robot acting on the answer would see; the frame-time
error is the tracker's accuracy alone.

Pure bookkeeping: it is handed frames as they are produced and messages as
they arrive, with timestamps from the caller's clock, so it is tested without
a network.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from protocol.coordinates import CoordinateReport, InvalidReport, decode_report
from server.core.ledger import FrameLedger, FrameRecord
from server.core.statistics import LogHistogram
from server.core.visibility import VisibilityTally

#: The ball's centre at a scene time (seconds), as ``BallScene.position``.
PositionAt = Callable[[float], tuple[float, float]]

ERROR_QUANTILES = (0.5, 0.95)
LATENCY_QUANTILES = (0.5, 0.95, 0.99)


@dataclass
class Interval:
    """What happened since the previous progress line."""

    frames_sent: int = 0
    frames_answered: int = 0
    errors: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def describe(self) -> str:
        error = f"{sum(self.errors) / len(self.errors):.3f}" if self.errors else "-"
        latency = f"{statistics.median(self.latencies):.1f}" if self.latencies else "-"
        return (
            f"sent {self.frames_sent} answered {self.frames_answered} "
            f"error {error} px latency p50 {latency} ms"
        )


class Scoreboard:
    """Frames sent, answers received, and their error and latency.

    ``on_retired`` receives each frame once it can no longer be answered
    (evicted from the ledger or the session ended), for the per-frame CSV.
    ``rtp_origin`` gives the sender's RTP timestamp of pts 0, None until it is
    known (the first packet has left); answers that name their frame by RTP
    timestamp need it. ``position_at`` gives the ball at any scene time, for
    the error at arrival (none without it); ``acquired_within_px`` is how
    close an answer must be to count as finding the ball again after it hid
    (``server.core.visibility``).
    """

    def __init__(
        self,
        fps: float,
        ledger_capacity: int,
        on_retired: Optional[Callable[[FrameRecord], None]] = None,
        rtp_origin: Callable[[], Optional[int]] = lambda: None,
        position_at: Optional[PositionAt] = None,
        acquired_within_px: float = 20.0,
    ) -> None:
        self._fps = fps
        self._ledger = FrameLedger(fps, ledger_capacity)
        self._position_at = position_at
        self._on_retired = on_retired
        self._rtp_origin = rtp_origin
        self.frames_sent = 0
        self.frames_answered = 0
        self.frames_found = 0
        self.invalid: Counter[str] = Counter()
        #: Why the newest invalid message was rejected (a key of ``invalid``).
        self.last_invalid_reason: Optional[str] = None
        self.error_px = LogHistogram()
        self.latency_ms = LogHistogram()
        self.error_at_arrival_px = LogHistogram()
        self.visibility = VisibilityTally(fps, acquired_within_px)
        self._interval = Interval()

    @property
    def invalid_messages(self) -> int:
        return sum(self.invalid.values())

    def frame_sent(
        self, index: int, x: float, y: float, produced_at: float, visibility: float = 1.0
    ) -> FrameRecord:
        entry, evicted = self._ledger.record(index, x, y, produced_at, visibility)
        self.frames_sent += 1
        self._interval.frames_sent += 1
        for record in evicted:
            self._retire(record)
        return entry

    def _reject(self, reason: str) -> None:
        self.invalid[reason] += 1
        self.last_invalid_reason = reason

    def answer(self, message: Union[str, bytes], arrival: float) -> Optional[FrameRecord]:
        """Score one data channel message; None when it was invalid."""
        try:
            report = decode_report(message)
        except InvalidReport:
            self._reject("malformed")
            return None
        entry = self._match(report)
        if entry is None:
            self._reject("unknown_frame")
            return None
        if entry.answered:
            self._reject("duplicate")
            return None
        entry.answered = True
        entry.latency_ms = (arrival - entry.produced_at) * 1000.0
        self.frames_answered += 1
        self._interval.frames_answered += 1
        self.latency_ms.add(max(entry.latency_ms, 0.0))
        self._interval.latencies.append(entry.latency_ms)
        if report.found:
            assert report.x is not None and report.y is not None
            entry.reported_x, entry.reported_y = report.x, report.y
            entry.error_px = math.hypot(report.x - entry.true_x, report.y - entry.true_y)
            self.frames_found += 1
            self.error_px.add(entry.error_px)
            self._interval.errors.append(entry.error_px)
        if self._position_at is not None:
            late_s = max(arrival - entry.produced_at, 0.0)
            x, y = self._position_at(entry.index / self._fps + late_s)
            entry.arrival_true_x, entry.arrival_true_y = x, y
            if report.found:
                assert report.x is not None and report.y is not None
                entry.error_at_arrival_px = math.hypot(report.x - x, report.y - y)
                self.error_at_arrival_px.add(entry.error_at_arrival_px)
        return entry

    def _match(self, report: CoordinateReport) -> Optional[FrameRecord]:
        if report.rtp_timestamp is not None:
            origin = self._rtp_origin()
            if origin is None:  # nothing has been sent, so nothing can be answered
                return None
            return self._ledger.match_rtp_timestamp(report.rtp_timestamp, origin)
        assert report.pts is not None
        return self._ledger.match(report.pts)

    def take_interval(self) -> Interval:
        interval, self._interval = self._interval, Interval()
        return interval

    def close(self) -> None:
        """Retire every frame still waiting for an answer."""
        for record in self._ledger.drain():
            self._retire(record)

    def _retire(self, record: FrameRecord) -> None:
        self.visibility.add(record)
        if self._on_retired is not None:
            self._on_retired(record)

    def summary(self) -> dict[str, object]:
        sent = self.frames_sent
        return {
            "frames_sent": sent,
            "frames_answered": self.frames_answered,
            "frames_found": self.frames_found,
            "answered_ratio": self.frames_answered / sent if sent else None,
            "invalid_messages": self.invalid_messages,
            "invalid_by_reason": dict(self.invalid),
            "error_px": self.error_px.summary(ERROR_QUANTILES),
            "latency_ms": self.latency_ms.summary(LATENCY_QUANTILES),
            "error_at_arrival_px": self.error_at_arrival_px.summary(ERROR_QUANTILES),
            # Counted as frames retire: while streaming, the last few seconds are missing.
            "visibility": self.visibility.summary(),
        }
