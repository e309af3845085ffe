"""``clutter``: the ball over a static textured, coloured background with shapes.

The background is a luma gradient (30 to 130) with a fine sinusoidal texture,
colour gradients in chroma, and ``SHAPES`` static shapes drawn from the seed:
grey and near-white rectangles and discs of other sizes than the ball. It is
built once; each frame copies it and lays the ball over it with its coverage
as alpha, so the ball's own pixels, and the truth, are classic's.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from server.core.renderer import Box, ball_box
from server.core.scene import BallScene
from server.core.scenes.base import Planes, Scene, coverage, rng_for

SHAPES = 8


class ClutterScene(Scene):
    name = "clutter"
    description = "a textured, coloured background with static shapes"

    def __init__(self, motion: BallScene, fps: float, seed: int) -> None:
        super().__init__(motion, fps, seed)
        self._background = background(self.width, self.height, self.radius, seed)
        h, w = self.height // 2, self.width // 2
        rows, cols = np.indices((h, w), dtype=np.float32)
        self._u[...] = np.rint(100 + 56 * cols / max(w - 1, 1)).astype(np.uint8)
        self._v[...] = np.rint(150 - 40 * rows / max(h - 1, 1)).astype(np.uint8)
        self._luma[...] = self._background
        self._previous: Optional[Box] = None

    def render(self, index: int) -> Planes:
        if self._previous is not None:
            top, bottom, left, right = self._previous
            self._luma[top:bottom, left:right] = self._background[top:bottom, left:right]
        drawn = self.ball_alpha(index)
        self._previous = None
        if drawn is not None:
            box, alpha = drawn
            blend_white(self._luma, self._background, box, alpha)
            self._previous = box
        return self._luma, self._u, self._v


def blend_white(
    luma: np.ndarray, under: np.ndarray, box: Box, alpha: np.ndarray, level: float = 255.0
) -> None:
    """Lay a ball of luma ``level`` with coverage ``alpha`` over ``under`` inside ``box``."""
    top, bottom, left, right = box
    below = under[top:bottom, left:right].astype(np.float32)
    luma[top:bottom, left:right] = np.rint(below + (level - below) * alpha).astype(np.uint8)


def background(width: int, height: int, radius: float, seed: int) -> np.ndarray:
    """The luma of the static background: gradient, texture and shapes."""
    rows, cols = np.indices((height, width), dtype=np.float32)
    luma = 30 + 70 * cols / width + 30 * rows / height
    luma += 10 * np.sin(cols * 0.9) * np.sin(rows * 0.7)
    rng = rng_for(seed, "clutter")
    for _ in range(SHAPES):
        level = rng.choice((90.0, 150.0, 200.0, 235.0))
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        if rng.random() < 0.5:
            half_w = rng.uniform(0.3, 2.0) * radius
            half_h = rng.uniform(0.3, 2.0) * radius
            top, bottom = int(max(y - half_h, 0)), int(min(y + half_h, height))
            left, right = int(max(x - half_w, 0)), int(min(x + half_w, width))
            luma[top:bottom, left:right] = level
        else:
            # Never the ball's own size: a disc of the same radius would be a second ball.
            size = radius * rng.choice((0.35, 0.6, 1.6, 2.2))
            box = ball_box(width, height, x, y, size)
            if box is not None:
                top, bottom, left, right = box
                alpha = coverage(box, x, y, size)
                patch = luma[top:bottom, left:right]
                patch += (level - patch) * alpha
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)
