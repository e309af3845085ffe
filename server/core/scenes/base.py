"""What every scene is: a ball whose truth is exact, drawn into I420 planes.

A scene owns the picture; the ball's motion is a ``BallScene`` (closed-form
bounces), the same for every scene of a seed, so results on two scenes are
about the picture and not about the path. A scene adds to the picture only
what its name says (noise, blur, a background, other shapes, an occluder,
light), each drawn deterministically from the seed and the frame index.

The truth of a frame is the centre of the ball's own pixels: ``ball_alpha``
is the ball's coverage, rendered alone (no background, no distractor, no
light), and its centroid is the truth's ``x, y``. What the rest of the picture
does to those pixels (covers them, darkens them, adds noise) is the
challenge, not a change of truth.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np

from server.core.renderer import Box, Damage, ball_box
from server.core.scene import BallScene
from server.core.visibility import VISIBLE_FROM

Planes = tuple[np.ndarray, np.ndarray, np.ndarray]
"""The Y, U and V planes of an I420 frame (uint8; U and V at half size)."""


@dataclass(frozen=True)
class Truth:
    """Where the ball is in one frame, and how much of it can be seen."""

    x: float
    y: float
    #: Share of the ball's coverage not hidden behind something (0..1).
    visibility: float = 1.0

    @property
    def visible(self) -> bool:
        """Enough of the ball shows that a tracker should find it."""
        return self.visibility >= VISIBLE_FROM

    @property
    def hidden(self) -> bool:
        """Nothing of the ball shows: "not found" is the right answer."""
        return self.visibility <= 0.0


def coverage(box: Box, x: float, y: float, radius: float) -> np.ndarray:
    """The disc's coverage of each pixel in ``box`` (float32, 0..1).

    The same one-pixel ramp as ``server.core.renderer.draw_ball``, so a
    scene's ball is today's ball.
    """
    top, bottom, left, right = box
    rows = np.arange(top, bottom, dtype=np.float32)[:, None] - np.float32(y)
    cols = np.arange(left, right, dtype=np.float32)[None, :] - np.float32(x)
    distance = np.sqrt(rows * rows + cols * cols)
    return np.clip(np.float32(radius + 0.5) - distance, 0.0, 1.0)


def rng_for(seed: int, purpose: str) -> random.Random:
    """An independent, reproducible random stream for one part of a scene."""
    return random.Random(f"{seed}:{purpose}")


class Scene(ABC):
    """A scene of ``motion`` at ``fps``, its decorations drawn from ``seed``.

    ``render`` returns planes the scene owns and overwrites on the next call.
    """

    name: ClassVar[str]
    #: One line for ``--help`` and the docs.
    description: ClassVar[str]

    def __init__(self, motion: BallScene, fps: float, seed: int) -> None:
        if motion.width % 2 or motion.height % 2:
            raise ValueError("I420 needs an even width and height")
        self.motion = motion
        self.fps = fps
        self.seed = seed
        self.width = motion.width
        self.height = motion.height
        self.radius = motion.radius
        self._luma = np.zeros((self.height, self.width), dtype=np.uint8)
        self._u = np.full((self.height // 2, self.width // 2), 128, dtype=np.uint8)
        self._v = np.full((self.height // 2, self.width // 2), 128, dtype=np.uint8)
        #: Where ``draw_ball_on_black`` drew last, so that only that box is cleared.
        self._ball_drawn: Optional[Box] = None

    def position(self, t: float) -> tuple[float, float]:
        """The ball's centre at scene time ``t`` (seconds), exact."""
        return self.motion.position(t)

    def truth(self, index: int) -> Truth:
        """The truth of frame ``index`` (shown at scene time ``index / fps``)."""
        x, y = self.position(index / self.fps)
        return Truth(x, y)

    def ball_alpha(self, index: int) -> Optional[tuple[Box, np.ndarray]]:
        """The ball of frame ``index`` rendered alone: its box and coverage in it."""
        x, y = self.position(index / self.fps)
        box = ball_box(self.width, self.height, x, y, self.radius)
        if box is None:
            return None
        return box, coverage(box, x, y, self.radius)

    def draw_ball_on_black(self, index: int) -> None:
        """Draw frame ``index``'s ball (``ball_alpha``) into the black luma plane.

        The previous frame's ball is cleared first, box only: a scene that
        draws nothing else there never repaints the whole plane.
        """
        if self._ball_drawn is not None:
            top, bottom, left, right = self._ball_drawn
            self._luma[top:bottom, left:right] = 0
            self._ball_drawn = None
        drawn = self.ball_alpha(index)
        if drawn is not None:
            box, alpha = drawn
            top, bottom, left, right = box
            self._luma[top:bottom, left:right] = np.rint(alpha * 255.0).astype(np.uint8)
            self._ball_drawn = box

    @abstractmethod
    def render(self, index: int) -> Planes:
        """The planes of frame ``index``."""

    @property
    def damage(self) -> Damage:
        """What the last ``render`` changed in the planes (a ``FrameRing``
        repaints only that); ``None``, this default: it may have been anything."""
        return None
