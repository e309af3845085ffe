"""The scene behind the annotation (server/console/backdrop.py): the session's pixels, its scene untouched."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest

from server.console.backdrop import SceneBackdrop, SceneRecipe
from server.core.scene import BallScene
from server.core.scenes import SCENES, Scene, make_scene

WIDTH, HEIGHT, FPS = 320, 240, 30.0


def session_scene(name: str) -> Scene:
    return make_scene(name, BallScene.from_seed(WIDTH, HEIGHT, 20.0, 300.0, 7), FPS, 7)


def as_bgr(planes: tuple[np.ndarray, ...]) -> np.ndarray:
    i420 = np.concatenate([plane.ravel() for plane in planes]).reshape(HEIGHT * 3 // 2, WIDTH)
    return cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)


@pytest.mark.parametrize("name", sorted(SCENES))
def test_the_backdrop_is_the_session_s_frame(name: str) -> None:
    scene = session_scene(name)
    backdrop = SceneBackdrop(SceneRecipe.of(scene))
    for index in (0, 17, 5):  # out of order, as a viewer skips
        assert np.array_equal(backdrop.picture(index), as_bgr(scene.render(index)))


def test_the_session_s_scene_is_left_alone() -> None:
    scene = session_scene("occlusion")
    streamed = scene.render(40)  # the planes the session's scene owns and streams from
    sent = [plane.copy() for plane in streamed]
    SceneBackdrop(SceneRecipe.of(scene)).picture(3)
    # They still hold the session's frame 40, not the backdrop's frame 3.
    assert all(np.array_equal(plane, copy) for plane, copy in zip(streamed, sent))


def test_the_recipe_travels_to_a_worker_process() -> None:
    recipe = SceneRecipe.of(session_scene("clutter"))
    copy = pickle.loads(pickle.dumps(recipe))
    assert copy == recipe
    assert np.array_equal(SceneBackdrop(copy).picture(9), SceneBackdrop(recipe).picture(9))


def test_a_frame_asked_again_is_not_rendered_again() -> None:
    backdrop = SceneBackdrop(SceneRecipe.of(session_scene("noise")))
    first = backdrop.picture(4).copy()
    renders = []
    scene = backdrop._scene
    original = scene.render
    scene.render = lambda index: renders.append(index) or original(index)  # type: ignore[method-assign]
    assert np.array_equal(backdrop.picture(4), first)
    assert renders == []
    backdrop.picture(5)
    assert renders == [5]
