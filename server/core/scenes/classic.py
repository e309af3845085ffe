"""``classic``: a white ball on black, exactly as the server always drew it."""

from __future__ import annotations

from server.core.renderer import BallRenderer, Damage
from server.core.scene import BallScene
from server.core.scenes.base import Planes, Scene


class ClassicScene(Scene):
    name = "classic"
    description = "a white ball on black (the default)"

    def __init__(self, motion: BallScene, fps: float, seed: int) -> None:
        super().__init__(motion, fps, seed)
        # BallRenderer itself, so the pixels stay bit for bit today's.
        self._renderer = BallRenderer(self.width, self.height, self.radius)

    def render(self, index: int) -> Planes:
        truth = self.truth(index)
        return self._renderer.planes(truth.x, truth.y)

    @property
    def damage(self) -> Damage:
        return self._renderer.damage
