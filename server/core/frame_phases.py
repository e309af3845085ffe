"""Where in the frame interval each session's frames fall.

Every session renders and encodes one frame per frame interval on the same
event loop. A session paces from its own start, so sessions that begin
close together (a load test, a reconnect storm, a pod filling up) put their
frames in the same millisecond: each waits behind the others' encodes, and
the p99 latency grows with N long before the core is busy (issue 24).

``FramePhases`` spreads them: each new session's first frame waits until
the phase (offset within the interval, on the shared monotonic clock) that
lies in the middle of the widest gap between the phases in use. Sessions
keep their own pacing from that start, so every frame keeps its index, pts
and truth; only the first frame waits.

It also starts the streams one at a time. A stream's first frame costs
several ordinary ones: the encoder allocates its buffers and codes a
keyframe (docs/capacity.md has the figures). A crowd that connects together (a load test, a
reconnect storm after a restart) would put all those first frames in one
interval and every live session's latency would jump by tens of ms. So
first frames are at least ``start_spacing_s`` apart (one interval unless
told otherwise): the k-th of a crowd waits k to 2k intervals (each start
one for the spacing, then less than one for its phase), and a session that
arrives alone does not wait for that at all.

Pure: times in, times out.
"""

from __future__ import annotations

import math
from typing import Optional

#: Phases closer than this are one phase: far below any clock's resolution.
_TOLERANCE_S = 1e-9


class FramePhases:
    """The phases of the live sessions' frame grids, all of one frame rate."""

    def __init__(self, fps: float, start_spacing_s: Optional[float] = None) -> None:
        if fps <= 0:
            raise ValueError("fps must be positive")
        if start_spacing_s is not None and start_spacing_s < 0:
            raise ValueError("start_spacing_s must be 0 or more")
        self._interval = 1.0 / fps
        self._start_spacing = self._interval if start_spacing_s is None else start_spacing_s
        #: Session key -> phase in [0, interval).
        self._phases: dict[str, float] = {}
        #: When the latest first frame handed out is due.
        self._last_start: Optional[float] = None

    @property
    def interval(self) -> float:
        return self._interval

    def phases(self) -> list[float]:
        """The phases in use, ascending."""
        return sorted(self._phases.values())

    def claim(self, key: str, now: float) -> float:
        """Give ``key`` a phase; the time (>= ``now``) its first frame is due.

        The first session starts at once. A key that already holds a phase
        gets its own grid again. No first frame is due less than the start
        spacing after the one handed out before it.
        """
        interval = self._interval
        earliest = now
        if self._last_start is not None and self._start_spacing > 0:
            earliest = max(now, self._last_start + self._start_spacing)
        if key in self._phases:
            phase = self._phases[key]
        elif not self._phases:
            phase = earliest % interval
        else:
            phase = self._widest_gap_middle()
        self._phases[key] = phase
        delay = (phase - earliest) % interval
        # A float's remainder can come out a hair below a whole interval.
        if math.isclose(delay, interval, abs_tol=_TOLERANCE_S):
            delay = 0.0
        start = earliest + delay
        # With spacing, start > the previous one: this is the latest start.
        self._last_start = start
        return start

    def release(self, key: str) -> None:
        """``key`` streams no more; its phase is free. Unknown keys are ignored."""
        self._phases.pop(key, None)

    def _widest_gap_middle(self) -> float:
        used = self.phases()
        interval = self._interval
        # The gap after each phase, the last one wrapping round to the first.
        best_start, best_width = used[-1], used[0] + interval - used[-1]
        for before, after in zip(used, used[1:]):
            if after - before > best_width:
                best_start, best_width = before, after - before
        return (best_start + best_width / 2) % interval
