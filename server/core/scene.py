"""Where the ball is at any instant: closed-form bounces, no integration.

Each axis is a triangle wave between the two walls, so the position at time
``t`` is computed directly from ``t`` and never accumulates rounding. Ground
truth for frame ``n`` is ``position(n / fps)``, exact however long the run.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


def reflect(unbounded: float, low: float, high: float) -> float:
    """Fold a coordinate moving freely into ``[low, high]`` as if it bounced."""
    span = high - low
    if span <= 0:
        return low
    phase = (unbounded - low) % (2 * span)
    return low + (phase if phase <= span else 2 * span - phase)


@dataclass(frozen=True)
class BallScene:
    """A ball of ``radius`` px moving at ``speed`` px/s inside ``width`` x ``height``.

    Pixel centres sit at integer coordinates, so the visible area spans
    ``[-0.5, width - 0.5]``; the ball's edge touches a wall when it bounces.
    """

    width: int
    height: int
    radius: float
    speed: float
    start_x: float
    start_y: float
    heading: float  # radians, 0 = +x

    @classmethod
    def from_seed(
        cls, width: int, height: int, radius: float, speed: float, seed: int
    ) -> "BallScene":
        """A reproducible start position and a heading away from the axes.

        Headings near an axis would make the ball skim one wall forever, so
        they are kept at least 15 degrees away from 0, 90, 180 and 270.
        """
        rng = random.Random(seed)
        low_x, high_x = cls.bounds(width, radius)
        low_y, high_y = cls.bounds(height, radius)
        quadrant = rng.randrange(4)
        heading = math.radians(90 * quadrant + rng.uniform(15, 75))
        return cls(
            width=width,
            height=height,
            radius=radius,
            speed=speed,
            start_x=rng.uniform(low_x, high_x),
            start_y=rng.uniform(low_y, high_y),
            heading=heading,
        )

    @staticmethod
    def bounds(extent: int, radius: float) -> tuple[float, float]:
        """Range of the centre along one axis of ``extent`` pixels."""
        return -0.5 + radius, extent - 0.5 - radius

    def position(self, t: float) -> tuple[float, float]:
        """The ball's centre at ``t`` seconds after the scene starts."""
        x = self.start_x + self.speed * math.cos(self.heading) * t
        y = self.start_y + self.speed * math.sin(self.heading) * t
        return (
            reflect(x, *self.bounds(self.width, self.radius)),
            reflect(y, *self.bounds(self.height, self.radius)),
        )
