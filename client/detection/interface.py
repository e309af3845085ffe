"""What a detector is to the rest of the client: frames in, centres out.

Two layers, each a ``typing.Protocol``:

- ``BallLocator`` is the algorithm: one luma plane in, the ball's centre or
  None out. ``client.detection.detector.CentroidDetector`` is the one this
  project ships; another locator plugs in here.
- ``Detector`` is where the session sends each frame (its id and luma plane)
  and collects a ``DetectionResult`` per frame detected. It decides where a
  locator runs: ``client.detection.detector_process.DetectorProcess`` in a
  process of its own, fed through shared memory, or
  ``client.detection.inline_detector.InlineDetector`` on the event loop.

The result types both detectors share live here too. Nothing here imports
av or aiortc (``tests/test_import_rules.py``): the detector process imports
this module.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np

#: A ball's centre in pixels, (x, y) from the top-left corner.
Centre = tuple[float, float]


class BallLocator(Protocol):
    """Finds the ball in one frame."""

    #: Whether the last ``detect`` found the ball in a tracking window around
    #: the previous centre rather than by searching the whole frame (a locator
    #: without a window: always False). Counted, not otherwise used.
    used_window: bool

    def detect(self, luma: np.ndarray) -> Optional[Centre]:
        """The centre of the ball in ``luma`` (2-D uint8, maybe a strided view), or None."""
        ...


@dataclass(frozen=True)
class DetectionResult:
    """What the detector found in the frame stamped ``pts``.

    ``x`` and ``y`` are None when there was no ball; ``detect_ms`` is the time
    the detector itself took, without any waiting or copying; ``windowed``
    says whether it found the ball in its tracking window. ``started_at`` and
    ``finished_at`` are when the detector took the frame and when it was done,
    on ``time.monotonic()``, which every process of the host shares (the
    stage trace uses them); 0.0 when not given.
    """

    pts: int
    x: Optional[float]
    y: Optional[float]
    detect_ms: float
    windowed: bool = False
    #: The locator raised or returned garbage on this frame; counted as no ball.
    failed: bool = False
    started_at: float = 0.0
    finished_at: float = 0.0

    @property
    def found(self) -> bool:
        return self.x is not None


@dataclass(frozen=True)
class DetectorStats:
    """Counters since start; detector times over the last ``window`` results."""

    submitted: int
    detected: int  # results received, ball or not
    found: int  # results with a ball
    windowed: int  # results where the ball was found in the tracking window
    dropped: int  # frames skipped or replaced before the detector took them
    results_lost: int  # results overwritten before ``collect`` saw them
    failed: int  # frames the locator raised on (or answered garbage): no ball, counted
    mean_ms: float
    p50_ms: float
    p99_ms: float
    window: int


class DetectionTally:
    """Counts results and keeps the detector's recent times, for ``DetectorStats``."""

    def __init__(self, window: int = 1000) -> None:
        self.submitted = 0
        self.detected = 0
        self.found = 0
        self.windowed = 0
        self.failed = 0
        self._total_ms = 0.0
        self._recent_ms: deque[float] = deque(maxlen=window)

    def add(self, result: DetectionResult) -> None:
        self.detected += 1
        self.found += result.found
        self.windowed += result.windowed
        self.failed += result.failed
        self._total_ms += result.detect_ms
        self._recent_ms.append(result.detect_ms)

    def stats(self, dropped: int, results_lost: int) -> DetectorStats:
        recent = np.fromiter(self._recent_ms, dtype=np.float64, count=len(self._recent_ms))
        p50, p99 = np.percentile(recent, (50, 99)) if recent.size else (0.0, 0.0)
        return DetectorStats(
            submitted=self.submitted,
            detected=self.detected,
            found=self.found,
            windowed=self.windowed,
            dropped=dropped,
            results_lost=results_lost,
            failed=self.failed,
            mean_ms=self._total_ms / self.detected if self.detected else 0.0,
            p50_ms=float(p50),
            p99_ms=float(p99),
            window=int(recent.size),
        )


class DetectorFailed(RuntimeError):
    """The detector cannot go on (its process died): the session ends."""


class Detector(Protocol):
    """Takes frames from the session and gives back what it found in them.

    Lifecycle: ``start()``, ``wait_ready(timeout)``, then frames; ``close()``
    ends it (idempotent). One detector serves the client's sessions in turn.

    Per frame the session calls ``submit(pts, luma)`` and sends whatever
    ``collect()`` returns: at once when ``result_fd`` is None (the results
    are ready when ``submit`` returns), else whenever ``result_fd`` is
    readable. A detector may skip frames under load (latest wins) but never
    queues them: a slow moment costs frames, not latency.
    """

    def start(self) -> None: ...

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until frames can be detected; False if not."""
        ...

    def close(self) -> None: ...

    @property
    def failed(self) -> bool:
        """Started, not closed, and yet unable to detect: no point reconnecting."""
        ...

    @property
    def result_fd(self) -> Optional[int]:
        """A descriptor readable when ``collect`` has results; None: ready after ``submit``."""
        ...

    @property
    def max_backlog(self) -> Optional[int]:
        """Decoded frames that may wait behind the one being submitted before the
        session skips to the newest (``skip``); None: the detector drops stale
        frames itself."""
        ...

    @property
    def pending(self) -> bool:
        """The last frame submitted has not been taken up yet (see ``wait_taken``)."""
        ...

    def wait_taken(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the last frame submitted to be taken up,
        so that a burst of frames is answered in full; True if it was."""
        ...

    def submit(self, pts: int, luma: np.ndarray) -> None:
        """Detect the ball in the frame stamped ``pts`` (``luma``: 2-D uint8).

        :raises DetectorFailed: the detector cannot go on.
        """
        ...

    def skip(self) -> None:
        """The session dropped a frame instead of submitting it (counted as dropped)."""
        ...

    def collect(self) -> list[DetectionResult]:
        """Results since the last call, oldest first.

        :raises DetectorFailed: the detector cannot go on.
        """
        ...

    def set_lead(self, seconds: float) -> None:
        """The server's latency: how far past each frame a predictive locator
        (one with ``set_lead``) should aim; others ignore it."""
        ...

    def stats(self) -> DetectorStats: ...
