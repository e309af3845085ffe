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
and truth; only the first frame waits, by less than one interval.

Pure: times in, times out.
"""

from __future__ import annotations

import math

#: Phases closer than this are one phase: far below any clock's resolution.
_TOLERANCE_S = 1e-9


class FramePhases:
    """The phases of the live sessions' frame grids, all of one frame rate."""

    def __init__(self, fps: float) -> None:
        if fps <= 0:
            raise ValueError("fps must be positive")
        self._interval = 1.0 / fps
        #: Session key -> phase in [0, interval).
        self._phases: dict[str, float] = {}

    @property
    def interval(self) -> float:
        return self._interval

    def phases(self) -> list[float]:
        """The phases in use, ascending."""
        return sorted(self._phases.values())

    def claim(self, key: str, now: float) -> float:
        """Give ``key`` a phase; the time (>= ``now``) its first frame is due.

        The first session starts at once. A key that already holds a phase
        gets its own grid again.
        """
        interval = self._interval
        if key in self._phases:
            phase = self._phases[key]
        elif not self._phases:
            phase = now % interval
        else:
            phase = self._widest_gap_middle()
        self._phases[key] = phase
        delay = (phase - now) % interval
        # A float's remainder can come out a hair below a whole interval.
        return now if math.isclose(delay, interval, abs_tol=_TOLERANCE_S) else now + delay

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
