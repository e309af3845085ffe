"""How a tracker does when the ball hides: found when visible, quiet when hidden,
and how soon it finds the ball again.

Fed with retired frames (``Scoreboard``'s ledger hands them over oldest
first), so each frame is counted once, with its final answer, in stream
order. A frame is *visible* when at least ``VISIBLE_FROM`` of the ball shows,
*hidden* when none of it does, and partly hidden in between; partly hidden
frames count in neither share (finding the ball there is neither required
nor wrong).

Re-acquisition: after a hidden stretch, the clock starts at the first
visible frame and stops at the first frame after it that is found within
``acquired_within_px`` of the truth; the time is in the scene's own time
(frames apart / fps), so a slow network does not change it, only a
tracker that needs frames to lock on does. A ball that hides again first
counts as a missed re-acquisition.
"""

from __future__ import annotations

from typing import Any, Optional

from server.core.ledger import FrameRecord
from server.core.statistics import LogHistogram

#: A ball with at least this share of its coverage in view counts as visible.
VISIBLE_FROM = 0.5

REACQUIRE_QUANTILES = (0.5, 0.95)


class VisibilityTally:
    def __init__(self, fps: float, acquired_within_px: float) -> None:
        self._fps = fps
        self._within = acquired_within_px
        self.frames_visible = 0
        self.frames_hidden = 0
        self.frames_partly_hidden = 0
        self.found_when_visible = 0
        self.hidden_answered = 0
        self.false_positives_when_hidden = 0
        self.reacquisitions = 0
        self.reacquisitions_missed = 0
        self.reacquire_ms = LogHistogram()
        self._hidden_since_visible = False
        self._reappeared_at: Optional[int] = None

    def add(self, record: FrameRecord) -> None:
        found = record.reported_x is not None
        if record.visibility <= 0.0:
            self.frames_hidden += 1
            if record.answered:
                self.hidden_answered += 1
            if found:
                self.false_positives_when_hidden += 1
            if self._reappeared_at is not None:
                self.reacquisitions_missed += 1
                self._reappeared_at = None
            self._hidden_since_visible = True
            return
        if record.visibility >= VISIBLE_FROM:
            self.frames_visible += 1
            if found:
                self.found_when_visible += 1
            if self._hidden_since_visible:
                self._hidden_since_visible = False
                self._reappeared_at = record.index
        else:
            self.frames_partly_hidden += 1
        if (
            self._reappeared_at is not None
            and record.error_px is not None
            and record.error_px <= self._within
        ):
            frames = max(record.index - self._reappeared_at, 0)
            self.reacquire_ms.add(frames * 1000.0 / self._fps)
            self.reacquisitions += 1
            self._reappeared_at = None

    def summary(self) -> dict[str, Any]:
        visible = self.frames_visible
        return {
            "frames_visible": visible,
            "frames_partly_hidden": self.frames_partly_hidden,
            "frames_hidden": self.frames_hidden,
            "found_when_visible_ratio": self.found_when_visible / visible if visible else None,
            "hidden_frames_answered": self.hidden_answered,
            "false_positives_when_hidden": self.false_positives_when_hidden,
            "reacquisitions": self.reacquisitions,
            "reacquisitions_missed": self.reacquisitions_missed,
            "reacquire_ms": self.reacquire_ms.summary(REACQUIRE_QUANTILES),
        }
