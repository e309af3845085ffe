"""``lighting``: brightness that flickers over time and falls off to the corners.

The picture is a dim background (luma ``AMBIENT``) with the ball (luma
``BALL``, so the brightest flicker does not clip it) laid over it by its coverage, then multiplied, pixel by pixel, by a gain and a
vignette:

- the gain flickers as ``1 + 0.3 sin(2 pi 1.3 t + a) + 0.15 sin(2 pi 7.1 t + b)``,
  phases ``a, b`` drawn from the seed;
- the vignette is ``1 - 0.65 (d / d_max)^2``, ``d`` the distance from the centre,
  so the ball is at about a third of its brightness in a corner, and at its
darkest (a corner, the flicker's low) about 30 against a background of 10.

The light changes what the ball's pixels look like, not where the ball is:
the truth is the centre of its coverage, as in ``classic``.
"""

from __future__ import annotations

import math

import numpy as np

from server.core.scene import BallScene
from server.core.scenes.base import Planes, Scene, rng_for
from server.core.scenes.clutter import blend_white

AMBIENT = 50
BALL = 170
VIGNETTE_DEPTH = 0.65


class LightingScene(Scene):
    name = "lighting"
    description = "brightness flicker and a vignette"

    def __init__(self, motion: BallScene, fps: float, seed: int) -> None:
        super().__init__(motion, fps, seed)
        rng = rng_for(seed, "lighting")
        self._phases = (rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi))
        rows, cols = np.indices((self.height, self.width), dtype=np.float32)
        dy, dx = rows - (self.height - 1) / 2, cols - (self.width - 1) / 2
        reach = (dx * dx + dy * dy) / float(dx.max() ** 2 + dy.max() ** 2)
        self._vignette = (1.0 - VIGNETTE_DEPTH * reach).astype(np.float32)
        self._ambient = np.full_like(self._luma, AMBIENT)
        self._base = self._ambient.copy()
        self._lit = np.empty((self.height, self.width), dtype=np.float32)

    def gain(self, t: float) -> float:
        """The flicker's brightness factor at scene time ``t``."""
        a, b = self._phases
        return (
            1.0
            + 0.3 * math.sin(2 * math.pi * 1.3 * t + a)
            + 0.15 * math.sin(2 * math.pi * 7.1 * t + b)
        )

    def render(self, index: int) -> Planes:
        base = self._base
        base[...] = AMBIENT
        drawn = self.ball_alpha(index)
        if drawn is not None:
            blend_white(base, self._ambient, *drawn, level=BALL)
        np.multiply(self._vignette, np.float32(self.gain(index / self.fps)), out=self._lit)
        np.multiply(self._lit, base, out=self._lit)
        np.clip(self._lit, 0, 255, out=self._lit)
        np.rint(self._lit, out=self._lit)
        self._luma[...] = self._lit
        return self._luma, self._u, self._v
