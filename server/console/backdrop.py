"""The session's own picture behind the annotation: its scene, rendered again.

A viewer or a recording must show what the client was given, not a white
ball on black: noise, blur, clutter, other shapes, the occluder, the light.
Scenes are deterministic in (name, motion, fps, seed) and a frame depends
only on its index, so a second ``Scene`` made from the same recipe draws the
very pixels the session streamed, without touching the session's own scene
(whose planes it overwrites on every frame it sends).

Pure numpy and OpenCV, no aiortc.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from server.core.scene import BallScene
from server.core.scenes import Scene, make_scene


@dataclass(frozen=True)
class SceneRecipe:
    """What makes a scene: small and picklable, for a recorder's worker process."""

    name: str
    motion: BallScene
    fps: float
    seed: int

    @classmethod
    def of(cls, scene: Scene) -> SceneRecipe:
        return cls(scene.name, scene.motion, scene.fps, scene.seed)

    def make(self) -> Scene:
        """A new scene drawing the same pixels as the one this recipe came from."""
        return make_scene(self.name, self.motion, self.fps, self.seed)


class SceneBackdrop:
    """Frame ``index`` of a scene as a BGR picture, from a scene of its own.

    The picture of the last index asked for is kept, so a viewer frozen on
    one answer (a stalled client) renders its scene once, not 30 times a
    second. The array returned belongs to the backdrop: copy it before
    drawing on it.
    """

    def __init__(self, recipe: SceneRecipe) -> None:
        self._scene = recipe.make()
        self.width = self._scene.width
        self.height = self._scene.height
        self.radius = self._scene.radius
        self.fps = self._scene.fps
        # OpenCV converts I420 from one contiguous buffer: Y, then U, then V.
        self._i420 = np.empty((self.height * 3 // 2, self.width), np.uint8)
        self._bgr = np.empty((self.height, self.width, 3), np.uint8)
        self._index: Optional[int] = None

    def picture(self, index: int) -> np.ndarray:
        """The BGR picture of frame ``index`` (valid until the next call)."""
        if index != self._index:
            self._convert(*self._scene.render(index))
            self._index = index
        return self._bgr

    def _convert(self, luma: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
        flat = self._i420.reshape(-1)
        luma_size, chroma_size = luma.size, u.size
        flat[:luma_size].reshape(luma.shape)[...] = luma
        flat[luma_size : luma_size + chroma_size].reshape(u.shape)[...] = u
        flat[luma_size + chroma_size :].reshape(v.shape)[...] = v
        cv2.cvtColor(self._i420, cv2.COLOR_YUV2BGR_I420, dst=self._bgr)
