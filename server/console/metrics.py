"""Prometheus metrics for the ball-tracking server.

Names follow Prometheus' conventions: base units (seconds, not ms),
``_total`` counters, a ``balltracker_build_info`` gauge of 1 whose labels
carry the versions, and the standard ``process_*`` and ``python_*``
collectors next to the project's own.

Each ``TrackingMetrics`` owns its own ``CollectorRegistry`` instead of using
prometheus_client's global ``REGISTRY``: two instances (two servers in one
test process, or a test next to a running server) then never collide with
"Duplicated timeseries" errors, and nothing leaks between tests.

The server's event loop is the only writer; prometheus_client's metric
objects are thread-safe, so the HTTP endpoint (or a test thread) may read the
exposition at any time.
"""

from __future__ import annotations

import math
import platform
import threading
from importlib.metadata import PackageNotFoundError, version
from typing import Callable, Optional

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from protocol.version import VERSION

#: Every metric name starts with this, so a shared Prometheus can tell them apart.
PREFIX = "balltracker_"

#: Tracking error in pixels. A good tracker on clean frames is sub-pixel
#: (codec noise moves the centroid by hundredths of a pixel), a broken one is
#: off by tens of pixels, so the buckets span 0.001 px to 50 px roughly
#: logarithmically (1-2.5-5 steps).
ERROR_BUCKETS_PX: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    25.0,
    50.0,
)

#: Round-trip latency (frame produced -> coordinates received) in seconds. On
#: loopback it is a few ms, with aiortc's stock jitter buffer one frame
#: period more (~40 ms at 30 fps, ~107 ms at 10 fps), and seconds when a
#: receiver falls behind, hence 1 ms to 2 s.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.035,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    0.75,
    1.0,
    2.0,
)

#: The reasons a data channel message is rejected (server/core/scoreboard.py).
INVALID_REASONS = ("malformed", "unknown_frame", "duplicate")

#: The reasons a client is refused a session (server/sessions/tracking_server.py).
REFUSAL_REASONS = ("busy", "shutting_down")


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


class TrackingMetrics:
    """The server's counters, gauges and histograms in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        # The active-session count is kept here as well as in the gauge so
        # that an unmatched session_ended() can be clamped at zero instead
        # of reporting a negative number of sessions.
        self._active = 0
        self._lock = threading.Lock()

        self.active_sessions = Gauge(
            PREFIX + "active_sessions",
            "WebRTC sessions currently streaming.",
            registry=self.registry,
        )
        self.viewers = Gauge(
            PREFIX + "viewers",
            "Console viewers (WHEP) currently watching a session.",
            registry=self.registry,
        )
        self.sessions = Counter(
            PREFIX + "sessions",
            "WebRTC sessions started since the server started.",
            registry=self.registry,
        )
        self.frames_sent = Counter(
            PREFIX + "frames_sent",
            "Video frames handed to the encoder.",
            registry=self.registry,
        )
        self.frames_answered = Counter(
            PREFIX + "frames_answered",
            "Frames for which the client reported coordinates.",
            registry=self.registry,
        )
        self.invalid_messages = Counter(
            PREFIX + "invalid_messages",
            "Data channel messages rejected, by reason: malformed, unknown_frame "
            "(names no frame sent recently), duplicate (a frame already answered).",
            ["reason"],
            registry=self.registry,
        )
        for reason in INVALID_REASONS:
            self.invalid_messages.labels(reason)
        self.sessions_refused = Counter(
            PREFIX + "sessions_refused",
            "Clients refused a session, by reason: busy (every slot taken), shutting_down.",
            ["reason"],
            registry=self.registry,
        )
        for reason in REFUSAL_REASONS:
            self.sessions_refused.labels(reason)
        self.session_slots = Gauge(
            PREFIX + "session_slots",
            "Session slots (--max-sessions), by state: total, free.",
            ["state"],
            registry=self.registry,
        )
        self.build_info = Gauge(
            PREFIX + "build_info",
            "Always 1; the labels are the versions of the project, aiortc and Python.",
            ["version", "aiortc_version", "python_version"],
            registry=self.registry,
        )
        self.build_info.labels(VERSION, package_version("aiortc"), platform.python_version()).set(1)
        self.signaling_refused = Counter(
            PREFIX + "signaling_refused",
            "Signaling connections refused before an offer, by why: server busy "
            "(full, or the address's cap), server shutting down, access denied.",
            ["reason"],
            registry=self.registry,
        )
        self.report_write_failures = Counter(
            PREFIX + "report_write_failures",
            "Sessions whose report files could not be written (disk full or unwritable).",
            registry=self.registry,
        )
        self.tracking_error = Histogram(
            PREFIX + "tracking_error_pixels",
            "Distance between the reported and the true ball centre, in pixels.",
            buckets=ERROR_BUCKETS_PX,
            registry=self.registry,
        )
        self.latency = Histogram(
            PREFIX + "latency_seconds",
            "Time from frame production to its coordinates arriving, in seconds.",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )

    def count_viewers(self, count: Callable[[], int]) -> None:
        """Read the number of viewers from ``count`` at each scrape."""
        self.viewers.set_function(count)

    def count_slots(self, total: int, free: Callable[[], int]) -> None:
        """Report ``total`` slots, and read the free ones from ``free`` at each scrape."""
        self.session_slots.labels("total").set(total)
        self.session_slots.labels("free").set_function(free)

    def session_started(self) -> None:
        with self._lock:
            self._active += 1
            self.active_sessions.set(self._active)
        self.sessions.inc()

    def session_ended(self) -> None:
        with self._lock:
            self._active = max(0, self._active - 1)
            self.active_sessions.set(self._active)

    def frame_sent(self) -> None:
        self.frames_sent.inc()

    def frame_answered(self, error_px: Optional[float], latency_ms: float) -> None:
        """Count an answered frame and record its error and latency.

        ``error_px`` is None when the client reported no ball: the answer
        still counts and its latency is real, but there is no error to record.
        A NaN or infinite value would turn the histogram's ``_sum`` into NaN
        for the rest of the process, so such a value is not observed (the
        frame still counts as answered). A slightly negative latency can only
        come from clock granularity and is recorded as 0.
        """
        self.frames_answered.inc()
        if error_px is not None and _finite(error_px):
            self.tracking_error.observe(max(0.0, float(error_px)))
        if _finite(latency_ms):
            self.latency.observe(max(0.0, float(latency_ms)) / 1000.0)

    def invalid_message(self, reason: str = "malformed") -> None:
        self.invalid_messages.labels(reason).inc()

    def session_refused(self, reason: str) -> None:
        self.sessions_refused.labels(reason).inc()

    def report_write_failed(self) -> None:
        self.report_write_failures.inc()

    def connection_refused(self, reason: str) -> None:
        self.signaling_refused.labels(reason=reason).inc()


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except (TypeError, OverflowError):
        return False
