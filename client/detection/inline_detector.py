"""The ball detector on the client's event loop: no hand-off, no second process.

``DetectorProcess`` runs detection in a spawned process so that slow
detection could never hold up the loop that receives the video. It costs two
wake-ups of a sleeping process per frame, the frame's luma plane copied into
shared memory and the result back through a pipe: together more than the
detection itself takes (docs/latency.md has the stage times). Detection on
the loop skips both hand-offs and the copy.

The loop has the time: it decodes each frame itself now
(``client.media.inline_decoder``), and nothing else on the client is urgent while
a frame is detected. What the process gave besides, a slow moment costing
frames rather than latency, the session keeps with a bound on its backlog
(``client.session``): it detects the frames waiting for it in order, so a
burst after a retransmission is answered in full, but when more than a few
are waiting it skips to the newest.

``InlineDetector`` and ``DetectorProcess`` are both a
``client.detection.interface.Detector``, so the session and the client use
either: ``--detect-in inline`` selects it for any locator
(``client.detection.choice``), the process stays the default (the product's
design: a slow frame never stalls the client's networking). It has no
``result_fd``: results are ready when ``submit`` returns. A locator other
than ours runs under the same ``GuardedLocator`` as in the process
(``plugin.build_locator``), so a frame it fails on is counted, not fatal.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import numpy as np

from client.detection.interface import (
    BallLocator,
    DetectionResult,
    DetectionTally,
    DetectorStats,
)
from client.detection.plugin import build_locator
from protocol.wire_clock import VIDEO_CLOCK_RATE

#: Decoded frames that may wait behind the one being detected on the loop; a
#: burst after a retransmission is a few frames, and each is detected in a
#: fraction of a millisecond. With more waiting, the session skips to the newest.
MAX_DETECTION_BACKLOG = 3


class InlineDetector:
    """Detects in ``submit``; ``collect`` returns what was detected since its last call."""

    def __init__(
        self,
        stats_window: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        **detector_options: Any,
    ) -> None:
        self._detector: BallLocator = build_locator(detector_options)
        self._clock = clock
        self._tally = DetectionTally(stats_window)
        self._results: list[DetectionResult] = []
        self._closed = False
        #: Frames the session skipped (a backlog) instead of detecting them.
        self.skipped = 0

    # -- lifecycle: nothing to spawn, so ready at once -------------------------

    def start(self) -> None:
        if self._closed:
            raise RuntimeError("the detector is closed")

    def wait_ready(self, timeout: float) -> bool:
        return not self._closed

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> "InlineDetector":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def failed(self) -> bool:
        return False

    @property
    def result_fd(self) -> Optional[int]:
        """None: there is nothing to wait for."""
        return None

    # -- frames and results -----------------------------------------------------

    @property
    def max_backlog(self) -> int:
        return MAX_DETECTION_BACKLOG

    @property
    def pending(self) -> bool:
        """Never: each frame is detected inside ``submit``."""
        return False

    def wait_taken(self, timeout: float) -> bool:
        return True

    def submit(self, pts: int, luma: np.ndarray) -> None:
        """Detect the ball in ``luma`` (2-D uint8, strided views welcome) now."""
        if self._closed:
            raise RuntimeError("the detector is closed")
        self._tally.submitted += 1
        set_frame_time = getattr(self._detector, "set_frame_time", None)
        if callable(set_frame_time):
            set_frame_time(pts / VIDEO_CLOCK_RATE)
        started = self._clock()
        centre = self._detector.detect(luma)
        finished = self._clock()
        result = DetectionResult(
            pts=pts,
            x=None if centre is None else centre[0],
            y=None if centre is None else centre[1],
            detect_ms=(finished - started) * 1000.0,
            windowed=self._detector.used_window,
            failed=bool(getattr(self._detector, "failed", False)),
            started_at=started,
            finished_at=finished,
        )
        self._tally.add(result)
        self._results.append(result)

    def set_lead(self, seconds: float) -> None:
        """Tell a predictive locator how far ahead to aim (the server's latency)."""
        set_lead = getattr(self._detector, "set_lead", None)
        if callable(set_lead):
            set_lead(seconds)

    def skip(self) -> None:
        """The session dropped a frame rather than detect it."""
        self.skipped += 1

    def collect(self) -> list[DetectionResult]:
        results, self._results = self._results, []
        return results

    def stats(self) -> DetectorStats:
        return self._tally.stats(dropped=self.skipped, results_lost=0)
