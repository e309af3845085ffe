"""``distractors``: other moving shapes that are not the target.

Four shapes bounce around on black like the ball, each on a path of its own
drawn from the seed: a white square, a small white disc, a grey disc of the
ball's size and a white bar. They are drawn first and the ball last, over
them, so the ball's own pixels and the truth are classic's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from server.core.renderer import ball_box
from server.core.scene import BallScene
from server.core.scenes.base import Planes, Scene, coverage
from server.core.scenes.clutter import blend_white


@dataclass(frozen=True)
class Distractor:
    motion: BallScene
    shape: str  # "disc" or "box"
    half_width: float
    half_height: float
    level: float


#: (shape, half width and half height in ball radii, speed in ball speeds, luma)
DISTRACTORS = (
    ("box", 0.8, 0.8, 1.2, 255.0),
    ("disc", 0.5, 0.5, 1.5, 255.0),
    ("disc", 1.0, 1.0, 0.8, 140.0),
    ("box", 1.5, 0.3, 1.0, 255.0),
)


class DistractorsScene(Scene):
    name = "distractors"
    description = "four other moving shapes (a square, discs, a bar) that are not the target"

    def __init__(self, motion: BallScene, fps: float, seed: int) -> None:
        super().__init__(motion, fps, seed)
        self.distractors = [
            Distractor(
                BallScene.from_seed(
                    self.width,
                    self.height,
                    max(half_w, half_h) * self.radius,
                    speed * max(motion.speed, 1.0),
                    # Paths of their own, reproducible from the scene's seed.
                    seed * 7919 + 101 * (number + 1),
                ),
                shape,
                half_w * self.radius,
                half_h * self.radius,
                level,
            )
            for number, (shape, half_w, half_h, speed, level) in enumerate(DISTRACTORS)
        ]

    def render(self, index: int) -> Planes:
        t = index / self.fps
        self._luma.fill(0)
        for distractor in self.distractors:
            draw_distractor(self._luma, distractor, *distractor.motion.position(t))
        drawn = self.ball_alpha(index)
        if drawn is not None:
            box, alpha = drawn
            # blend_white reads the box before it writes: in place is safe.
            blend_white(self._luma, self._luma, box, alpha)
        return self._luma, self._u, self._v


def draw_distractor(luma: np.ndarray, distractor: Distractor, x: float, y: float) -> None:
    height, width = luma.shape
    if distractor.shape == "disc":
        box = ball_box(width, height, x, y, distractor.half_width)
        if box is None:
            return
        top, bottom, left, right = box
        alpha = coverage(box, x, y, distractor.half_width)
        patch = luma[top:bottom, left:right]
        patch[...] = np.maximum(patch, np.rint(alpha * distractor.level).astype(np.uint8))
        return
    top = int(round(max(y - distractor.half_height, 0)))
    bottom = int(round(min(y + distractor.half_height, height)))
    left = int(round(max(x - distractor.half_width, 0)))
    right = int(round(min(x + distractor.half_width, width)))
    luma[top:bottom, left:right] = int(distractor.level)
