"""What the server sent: one entry per frame, keyed by pts, bounded in size.

The pts convention (see ``protocol.coordinates``): frame ``n`` carries
``round(n * 90000 / fps)`` on the 90 kHz clock. A reported pts is matched to
the nearest frame, because aiortc's RTP timestamp mapping can shift it by a
tick; an exact dict lookup would lose frames.

A reported RTP timestamp is the frame's pts plus the sender's random origin,
modulo 2**32. Taking the origin off leaves the pts modulo 2**32; of the pts
that fit, the one nearest the newest frame sent is meant (the ledger holds
seconds, the 32-bit clock wraps after 13 hours).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional

from protocol.wire_clock import RTP_TIMESTAMP_MODULUS, VIDEO_CLOCK_RATE

#: How far a reported pts may sit from the pts we sent and still match.
PTS_TOLERANCE_TICKS = 1


def frame_pts(index: int, fps: float) -> int:
    return round(index * VIDEO_CLOCK_RATE / fps)


@dataclass
class FrameRecord:
    """A sent frame, its ground truth and, once answered, its score."""

    index: int
    pts: int
    true_x: float
    true_y: float
    produced_at: float  # server monotonic clock, seconds
    answered: bool = False
    reported_x: Optional[float] = None
    reported_y: Optional[float] = None
    error_px: Optional[float] = None
    latency_ms: Optional[float] = None
    #: Share of the ball in view (``server.core.scenes.Truth.visibility``).
    visibility: float = 1.0
    #: Where the ball was when the answer arrived, and the answer's distance from it.
    arrival_true_x: Optional[float] = None
    arrival_true_y: Optional[float] = None
    error_at_arrival_px: Optional[float] = None


class FrameLedger:
    """The last ``capacity`` frames sent, so memory stays flat for hours.

    An answer for a frame that has already left the ledger is too late to
    score and is treated like an unknown pts.
    """

    def __init__(self, fps: float, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.fps = fps
        self.capacity = capacity
        self._records: dict[int, FrameRecord] = {}
        self._order: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._records)

    def record(
        self,
        index: int,
        true_x: float,
        true_y: float,
        produced_at: float,
        visibility: float = 1.0,
    ) -> tuple[FrameRecord, list[FrameRecord]]:
        """Add frame ``index``; return it and the records evicted to make room."""
        entry = FrameRecord(
            index, frame_pts(index, self.fps), true_x, true_y, produced_at, visibility=visibility
        )
        self._records[index] = entry
        self._order.append(index)
        evicted: list[FrameRecord] = []
        while len(self._order) > self.capacity:
            evicted.append(self._records.pop(self._order.popleft()))
        return entry, evicted

    def match(self, pts: int) -> Optional[FrameRecord]:
        """The frame sent with the pts nearest to ``pts``, within the tolerance."""
        index = round(pts * self.fps / VIDEO_CLOCK_RATE)
        entry = self._records.get(index)
        if entry is None or abs(entry.pts - pts) > PTS_TOLERANCE_TICKS:
            return None
        return entry

    def match_rtp_timestamp(self, rtp_timestamp: int, origin: int) -> Optional[FrameRecord]:
        """The frame sent with the RTP timestamp nearest to ``rtp_timestamp``.

        ``origin`` is the sender's RTP timestamp of pts 0.
        """
        if not self._order:
            return None
        newest = frame_pts(self._order[-1], self.fps)
        offset = (rtp_timestamp - origin - newest) % RTP_TIMESTAMP_MODULUS
        if offset >= RTP_TIMESTAMP_MODULUS // 2:
            offset -= RTP_TIMESTAMP_MODULUS
        return self.match(newest + offset)

    def drain(self) -> list[FrameRecord]:
        """Remove and return every record, oldest first."""
        records = [self._records[i] for i in self._order]
        self._records.clear()
        self._order.clear()
        return records
