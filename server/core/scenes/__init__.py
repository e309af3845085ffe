"""The scenes a session can stream, by name (``--scene``).

Each is a ``Scene`` (``server.core.scenes.base``) in a module of its own. All
share the ball's motion for a seed; they differ in what else is in the
picture. Pure: numpy only, no aiortc, no asyncio.
"""

from __future__ import annotations

from server.core.scene import BallScene
from server.core.scenes.base import VISIBLE_FROM, Planes, Scene, Truth
from server.core.scenes.blur import BlurScene
from server.core.scenes.classic import ClassicScene
from server.core.scenes.clutter import ClutterScene
from server.core.scenes.distractors import DistractorsScene
from server.core.scenes.lighting import LightingScene
from server.core.scenes.noise import NoiseScene
from server.core.scenes.occlusion import OcclusionScene

__all__ = ["DEFAULT_SCENE", "SCENES", "VISIBLE_FROM", "Planes", "Scene", "Truth", "make_scene"]

SCENES: dict[str, type[Scene]] = {
    scene.name: scene
    for scene in (
        ClassicScene,
        NoiseScene,
        BlurScene,
        ClutterScene,
        DistractorsScene,
        OcclusionScene,
        LightingScene,
    )
}

DEFAULT_SCENE = ClassicScene.name


def make_scene(name: str, motion: BallScene, fps: float, seed: int) -> Scene:
    """The scene called ``name``; raises ``ValueError`` for an unknown name."""
    try:
        kind = SCENES[name]
    except KeyError:
        raise ValueError(f"unknown scene {name!r}; choose from {', '.join(SCENES)}") from None
    return kind(motion, fps, seed)
