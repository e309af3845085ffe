"""Real-time pacing of a video track's frames on a monotonic clock.

aiortc's ``VideoStreamTrack.next_timestamp`` is fixed at 30 fps, so our
tracks pace themselves: frame ``n`` is due ``n / fps`` seconds after the
first one. A track that falls behind (a slow encoder, a busy machine) skips
to the frame that is due rather than send a backlog, so the motion stays
real-time instead of drifting into slow motion.

A link narrower than the stream needs fewer frames: with ``frame_interval``
k the pacer hands out every k-th frame of the same nominal timeline, so a
frame keeps its index, its pts and its ground truth whatever the rate; the
frames in between are skipped at the source (``frames_thinned``).

``first_due`` places the whole grid: given the time the first frame is asked
for, it returns when that frame is due (``server.core.frame_phases`` uses it
to keep sessions' frames apart). By default the first frame is due at once.
"""

from __future__ import annotations

import asyncio
import math
from typing import Callable, Optional


class FramePacer:
    def __init__(
        self,
        fps: float,
        clock: Callable[[], float],
        first_due: Optional[Callable[[float], float]] = None,
    ) -> None:
        self._fps = fps
        self._clock = clock
        #: Places the grid on the first frame; None: the first frame is due at once.
        self.first_due = first_due
        self._start: Optional[float] = None
        self._next_index = 0
        #: Send every ``frame_interval``-th frame of the nominal timeline.
        self.frame_interval = 1
        #: Frames skipped because the track fell behind.
        self.frames_skipped = 0
        #: Frames skipped because of ``frame_interval``.
        self.frames_thinned = 0

    @property
    def started(self) -> bool:
        return self._start is not None

    async def next_index(self) -> int:
        """Wait until the next frame is due; its index."""
        now = self._clock()
        if self._start is None:
            # Time starts with the first frame asked for, so it is not late.
            self._start = now if self.first_due is None else max(self.first_due(now), now)
        index = self._next_index
        due = self._start + index / self._fps
        if due > now:
            await asyncio.sleep(due - now)
        else:
            current = math.floor((now - self._start) * self._fps)
            if current > index:
                self.frames_skipped += current - index
                index = current
        self._next_index = index + self.frame_interval
        self.frames_thinned += self.frame_interval - 1
        return index
