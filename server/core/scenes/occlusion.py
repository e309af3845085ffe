"""``occlusion``: the ball passes behind an occluder, and the truth says when.

A full-height grey bar, ``OCCLUDER_RADII`` ball radii wide, stands at an x
drawn from the seed, in the middle half of the frame; it is drawn over the
ball. The truth keeps the ball's centre while it is hidden and says how much
of the ball's coverage is in view (``Truth.visibility``): at 0 the ball is
hidden and "not found" is the right answer. The bar is dark (luma 60 and 80
stripes), so it is never mistaken for the ball by brightness alone.
"""

from __future__ import annotations

import numpy as np

from server.core.renderer import Box
from server.core.scene import BallScene
from server.core.scenes.base import Planes, Scene, Truth, rng_for

#: The bar's width in ball radii: more than a diameter, so the ball can vanish.
OCCLUDER_RADII = 5.0


class OcclusionScene(Scene):
    name = "occlusion"
    description = "a bar the ball passes behind; hidden frames expect no answer"

    def __init__(self, motion: BallScene, fps: float, seed: int) -> None:
        super().__init__(motion, fps, seed)
        rng = rng_for(seed, "occlusion")
        bar = int(round(OCCLUDER_RADII * self.radius))
        centre = rng.uniform(0.25, 0.75) * self.width
        self.left = int(max(round(centre - bar / 2), 0))
        self.right = int(min(self.left + bar, self.width))
        stripes = np.where((np.arange(self.height) // 8) % 2 == 0, 60, 80).astype(np.uint8)
        self._bar = np.repeat(stripes[:, None], self.right - self.left, axis=1)

    def visibility(self, box: Box, alpha: np.ndarray) -> float:
        """Share of the ball's coverage outside the bar."""
        total = float(alpha.sum())
        if total <= 0:
            return 0.0
        _, _, left, right = box
        start = min(max(self.left - left, 0), right - left)
        stop = min(max(self.right - left, 0), right - left)
        hidden = float(alpha[:, start:stop].sum())
        return max(0.0, (total - hidden) / total)

    def truth(self, index: int) -> Truth:
        plain = super().truth(index)
        drawn = self.ball_alpha(index)
        if drawn is None:
            return Truth(plain.x, plain.y, 0.0)
        return Truth(plain.x, plain.y, self.visibility(*drawn))

    def render(self, index: int) -> Planes:
        self.draw_ball_on_black(index)
        self._luma[:, self.left : self.right] = self._bar
        return self._luma, self._u, self._v
