"""``noise``: the ball under sensor noise, in luma and chroma.

The ball (luma ``BALL``) lies on a black level of ``BLACK``, as on a real
sensor, so the noise is not clipped away on either side. Gaussian noise (sigma ``LUMA_SIGMA`` in luma, ``CHROMA_SIGMA`` in chroma),
different in every frame. Drawing 300 000 normal numbers per frame would cost
milliseconds, so one noise field a little larger than the frame is drawn
once from the seed, and each frame adds a window of it at an offset drawn
from the seed and the frame index: the same frame always gets the same noise.
The ball's pixels are ``BLACK + (BALL - BLACK) * coverage``: the truth is
the centre of its coverage, as in ``classic``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from server.core.renderer import Box
from server.core.scene import BallScene
from server.core.scenes.base import Planes, Scene

BLACK = 40
BALL = 215
LUMA_SIGMA = 16.0
CHROMA_SIGMA = 4.0
#: How far a frame's window may move inside the noise field, in pixels.
MARGIN = 64


class NoiseScene(Scene):
    name = "noise"
    description = "the ball on a black level under Gaussian sensor noise (sigma 16 in luma)"

    def __init__(self, motion: BallScene, fps: float, seed: int) -> None:
        super().__init__(motion, fps, seed)
        self._clean = np.full((self.height, self.width), BLACK, dtype=np.uint8)
        self._previous: Optional[Box] = None
        rng = np.random.default_rng([seed, 1])
        h, w = self.height, self.width
        self._luma_noise = _field(rng, (h + MARGIN, w + MARGIN), LUMA_SIGMA)
        self._u_noise = _field(rng, (h // 2 + MARGIN, w // 2 + MARGIN), CHROMA_SIGMA)
        self._v_noise = _field(rng, (h // 2 + MARGIN, w // 2 + MARGIN), CHROMA_SIGMA)
        self._sum = np.empty((h, w), dtype=np.int16)
        self._chroma_sum = np.empty((h // 2, w // 2), dtype=np.int16)
        self._neutral = np.full((h // 2, w // 2), 128, dtype=np.uint8)

    def render(self, index: int) -> Planes:
        clean = self.clean(index)
        dy, dx, uy, ux, vy, vx = np.random.default_rng([self.seed, 2, index]).integers(0, MARGIN, 6)
        _add(clean, _window(self._luma_noise, dy, dx, clean.shape), self._sum, self._luma)
        neutral = self._neutral
        _add(neutral, _window(self._u_noise, uy, ux, self._u.shape), self._chroma_sum, self._u)
        _add(neutral, _window(self._v_noise, vy, vx, self._v.shape), self._chroma_sum, self._v)
        return self._luma, self._u, self._v

    def clean(self, index: int) -> np.ndarray:
        """Frame ``index`` before the noise (overwritten by the next call)."""
        if self._previous is not None:
            top, bottom, left, right = self._previous
            self._clean[top:bottom, left:right] = BLACK
        drawn = self.ball_alpha(index)
        self._previous = None
        if drawn is not None:
            (top, bottom, left, right), alpha = drawn
            level = np.rint(BLACK + (BALL - BLACK) * alpha).astype(np.uint8)
            self._clean[top:bottom, left:right] = level
            self._previous = (top, bottom, left, right)
        return self._clean


def _field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    return np.rint(rng.normal(0.0, sigma, shape)).astype(np.int16)


def _window(field: np.ndarray, top: int, left: int, shape: tuple[int, ...]) -> np.ndarray:
    return field[top : top + shape[0], left : left + shape[1]]


def _add(clean: np.ndarray, noise: np.ndarray, scratch: np.ndarray, out: np.ndarray) -> None:
    """``out = clip(clean + noise, 0, 255)`` without a temporary per frame."""
    np.add(clean, noise, out=scratch, dtype=np.int16)
    np.clip(scratch, 0, 255, out=scratch)
    out[...] = scratch
