"""``blur``: motion blur along the velocity, as a shutter open for a whole frame.

The exposure of frame ``n`` spans ``EXPOSURE_FRAMES / fps`` seconds centred on
``n / fps``. The ball is drawn at ``samples`` instants spread evenly and
symmetrically over it, and the picture is their average: at 300 px/s and
30 fps a 10 px smear.

The truth is the mean of the sampled positions, which is the centroid of the
smeared ball. Where the exposure holds no bounce, the positions lie on a
line symmetric about mid-exposure, so their mean *is* the position at
mid-exposure, exactly; in a frame whose exposure spans a bounce, the smear
folds back and the truth is where its centre is.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from server.core.renderer import Box, ball_box
from server.core.scene import BallScene
from server.core.scenes.base import Planes, Scene, Truth

#: How long the shutter stays open, in frame intervals.
EXPOSURE_FRAMES = 1.0
#: Sampled instants per pixel of travel during the exposure.
SAMPLES_PER_PX = 2.0
MAX_SAMPLES = 64


class BlurScene(Scene):
    name = "blur"
    description = "motion blur along the velocity over a whole-frame exposure"

    def __init__(self, motion: BallScene, fps: float, seed: int) -> None:
        super().__init__(motion, fps, seed)
        self._exposure_s = EXPOSURE_FRAMES / fps
        travel = motion.speed * self._exposure_s
        self._samples = min(max(2, math.ceil(travel * SAMPLES_PER_PX)), MAX_SAMPLES)

    def _positions(self, index: int) -> list[tuple[float, float]]:
        middle = index / self.fps
        count = self._samples
        return [
            self.position(middle + self._exposure_s * ((k + 0.5) / count - 0.5))
            for k in range(count)
        ]

    def truth(self, index: int) -> Truth:
        positions = self._positions(index)
        return Truth(
            math.fsum(p[0] for p in positions) / len(positions),
            math.fsum(p[1] for p in positions) / len(positions),
        )

    def ball_alpha(self, index: int) -> Optional[tuple[Box, np.ndarray]]:
        positions = self._positions(index)
        boxes = [ball_box(self.width, self.height, x, y, self.radius) for x, y in positions]
        known = [b for b in boxes if b is not None]
        if not known:
            return None
        box = (
            min(b[0] for b in known),
            max(b[1] for b in known),
            min(b[2] for b in known),
            max(b[3] for b in known),
        )
        # All instants at once: (samples, rows, columns), then their mean.
        top, bottom, left, right = box
        xs = np.array([p[0] for p in positions], dtype=np.float32)[:, None, None]
        ys = np.array([p[1] for p in positions], dtype=np.float32)[:, None, None]
        rows = np.arange(top, bottom, dtype=np.float32)[None, :, None] - ys
        cols = np.arange(left, right, dtype=np.float32)[None, None, :] - xs
        distance = np.sqrt(rows * rows + cols * cols)
        each = np.clip(np.float32(self.radius + 0.5) - distance, 0.0, 1.0)
        return box, each.mean(axis=0, dtype=np.float32)

    def render(self, index: int) -> Planes:
        self.draw_ball_on_black(index)
        return self._luma, self._u, self._v
