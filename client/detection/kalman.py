"""A predictive locator: a constant-velocity Kalman filter over another locator.

The answer to a frame arrives at the server ``latency`` after the frame was
produced, and by then the ball has moved on. This locator filters the
centres another locator measures (the centroid detector by default) with a
constant-velocity model per axis, and reports where the ball will be
``lead_s`` after the frame: set ``lead_s`` to the latency the server reports
(``protocol.coordinates.LatencyFeedback``) and the answer aims where the ball
is when it lands, which is what the error at arrival measures.

Time between frames is the difference of their capture times, which the
detector passes in (``set_frame_time``, from the frame's pts) before each
``detect``; without them it is read from ``clock`` at each detection, which
adds the network's jitter. A gap longer than
``RESET_AFTER_S`` without a ball starts the filter afresh, so a ball that
reappears elsewhere is not dragged from where it vanished. With no ball in a
frame it answers None, like the locator it wraps.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import numpy as np

Centre = tuple[float, float]

#: A ball missing this long is a new ball when it comes back.
RESET_AFTER_S = 0.25
#: Measurement noise (px^2) and process noise (acceleration, px/s^2 squared).
MEASUREMENT_VARIANCE = 0.25
ACCELERATION_VARIANCE = 300.0**2


class ConstantVelocityPredictor:
    def __init__(
        self,
        locator: Optional[Any] = None,
        lead_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if locator is None:
            from client.detection.detector import CentroidDetector

            locator = CentroidDetector()
        self._locator = locator
        self.lead_s = lead_s
        self._clock = clock
        self._state: Optional[np.ndarray] = None  # rows x and y: (position, velocity)
        self._covariance = np.zeros((2, 2, 2))
        self._last_seen: Optional[float] = None
        self._frame_time: Optional[float] = None
        self.used_window = False

    def set_lead(self, seconds: float) -> None:
        """Aim this far ahead of each frame (the latency the server measures)."""
        self.lead_s = max(seconds, 0.0)

    def set_frame_time(self, seconds: float) -> None:
        """The capture time of the frame ``detect`` gets next (its pts in seconds)."""
        self._frame_time = seconds

    def detect(self, luma: np.ndarray) -> Optional[Centre]:
        now = self._frame_time if self._frame_time is not None else self._clock()
        self._frame_time = None
        measured = self._locator.detect(luma)
        self.used_window = bool(getattr(self._locator, "used_window", False))
        if measured is None:
            if self._last_seen is not None and now - self._last_seen > RESET_AFTER_S:
                self._state = None
            return None
        z = np.array(measured, dtype=np.float64)
        if self._state is None or self._last_seen is None:
            self._state = np.stack((z, np.zeros(2)), axis=1)
            self._covariance = np.tile(np.diag([MEASUREMENT_VARIANCE, 1e6]), (2, 1, 1))
        else:
            self._step(z, max(now - self._last_seen, 1e-4))
        self._last_seen = now
        position, velocity = self._state[:, 0], self._state[:, 1]
        ahead = position + velocity * self.lead_s
        return float(ahead[0]), float(ahead[1])

    def _step(self, z: np.ndarray, dt: float) -> None:
        assert self._state is not None
        transition = np.array([[1.0, dt], [0.0, 1.0]])
        noise = ACCELERATION_VARIANCE * np.array(
            [[dt**4 / 4, dt**3 / 2], [dt**3 / 2, dt**2]], dtype=np.float64
        )
        for axis in range(2):
            state = transition @ self._state[axis]
            covariance = transition @ self._covariance[axis] @ transition.T + noise
            innovation = z[axis] - state[0]
            gain = covariance[:, 0] / (covariance[0, 0] + MEASUREMENT_VARIANCE)
            self._state[axis] = state + gain * innovation
            self._covariance[axis] = covariance - np.outer(gain, covariance[0, :])
