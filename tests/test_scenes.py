"""The scenes: deterministic, exact truth, and each shows what its name says."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from server.core.renderer import BallRenderer
from server.core.scene import BallScene
from server.core.scenes import DEFAULT_SCENE, SCENES, Scene, make_scene
from server.core.scenes.base import Truth
from server.core.scenes.blur import BlurScene
from server.core.scenes.clutter import ClutterScene, background
from server.core.scenes.lighting import LightingScene
from server.core.scenes.noise import BLACK, LUMA_SIGMA, NoiseScene
from server.core.scenes.occlusion import OcclusionScene

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT, RADIUS, SPEED, FPS = 320, 240, 15.0, 300.0, 30.0
#: Frames that include bounces off every wall for the motions used here.
INDICES = (0, 1, 2, 17, 45, 46, 90, 133, 200, 301)


def motion(seed: int = 3) -> BallScene:
    return BallScene.from_seed(WIDTH, HEIGHT, RADIUS, SPEED, seed)


def scene(name: str, seed: int = 3) -> Scene:
    return make_scene(name, motion(seed), FPS, seed)


def planes(scene: Scene, index: int) -> tuple[np.ndarray, ...]:
    return tuple(plane.copy() for plane in scene.render(index))


def centroid(box: tuple[int, int, int, int], weights: np.ndarray) -> tuple[float, float]:
    top, _, left, _ = box
    rows, cols = np.indices(weights.shape, dtype=np.float64)
    total = weights.sum(dtype=np.float64)
    return (
        left + float((cols * weights).sum() / total),
        top + float((rows * weights).sum() / total),
    )


def test_the_default_is_classic_and_every_scene_is_listed() -> None:
    assert DEFAULT_SCENE == "classic"
    assert set(SCENES) == {
        "classic",
        "noise",
        "blur",
        "clutter",
        "distractors",
        "occlusion",
        "lighting",
    }


def test_an_unknown_scene_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown scene 'snow'; choose from classic"):
        make_scene("snow", motion(), FPS, 0)


@pytest.mark.parametrize("name", SCENES)
def test_the_same_seed_gives_the_same_truth_and_pixels(name: str) -> None:
    first, second = scene(name), scene(name)
    for index in INDICES:
        assert first.truth(index) == second.truth(index)
        for a, b in zip(planes(first, index), planes(second, index)):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("name", SCENES)
def test_a_frame_does_not_depend_on_the_frames_drawn_before(name: str) -> None:
    # The renderers redraw only what changed: frame n straight away must
    # equal frame n after a run of others (frames are skipped when late).
    played = scene(name)
    for index in range(0, 50, 3):
        played.render(index)
    fresh = scene(name)
    for a, b in zip(planes(played, 50), planes(fresh, 50)):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("name", SCENES)
def test_a_render_changes_nothing_outside_the_damage_it_reports(name: str) -> None:
    # A frame ring repaints only the damage: anything changed outside it
    # would leave a stale picture on the wire. Skips (index steps of 1 and
    # of 4) are what a late track does.
    played = scene(name)
    before = planes(played, 0)
    for index in (1, 2, 6, 7, 30):
        after = planes(played, index)
        damage = played.damage
        if damage is None:
            before = after
            continue
        assert np.array_equal(before[1], after[1]) and np.array_equal(before[2], after[2])
        outside = np.ones(after[0].shape, dtype=bool)
        for top, bottom, left, right in damage:
            outside[top:bottom, left:right] = False
        assert np.array_equal(before[0][outside], after[0][outside]), index
        before = after


def test_classic_reports_its_damage() -> None:
    played = scene("classic")
    played.render(0)
    played.render(1)
    assert played.damage is not None and len(played.damage) == 2


@pytest.mark.parametrize("name", SCENES)
def test_the_planes_are_i420(name: str) -> None:
    luma, u, v = scene(name).render(5)
    assert luma.shape == (HEIGHT, WIDTH) and luma.dtype == np.uint8
    assert u.shape == v.shape == (HEIGHT // 2, WIDTH // 2)
    assert u.dtype == v.dtype == np.uint8


@pytest.mark.parametrize("name", SCENES)
def test_the_truth_is_the_centroid_of_the_ball_rendered_alone(name: str) -> None:
    subject = scene(name)
    for index in list(INDICES) + list(range(60, 140)):
        truth = subject.truth(index)
        drawn = subject.ball_alpha(index)
        assert drawn is not None
        x, y = centroid(*drawn)
        # 0.02 px: the one-pixel edge ramp approximates a disc's coverage;
        # classic's own ball has always been this close.
        assert math.hypot(x - truth.x, y - truth.y) < 0.02, (name, index, truth, (x, y))


@pytest.mark.parametrize("name", SCENES)
def test_the_ball_moves_as_the_seed_says_in_every_scene(name: str) -> None:
    # One motion for all scenes of a seed: results compare pictures, not paths.
    subject = scene(name)
    for index in (0, 33, 100):
        assert subject.position(index / FPS) == motion().position(index / FPS)
    if name != "blur":
        assert (subject.truth(33).x, subject.truth(33).y) == motion().position(33 / FPS)


def test_classic_is_todays_renderer_bit_for_bit() -> None:
    classic = scene("classic")
    renderer = BallRenderer(WIDTH, HEIGHT, RADIUS)
    for index in range(0, 120, 7):
        x, y = motion().position(index / FPS)
        frame = renderer.render(x, y).to_ndarray()
        luma, u, v = classic.render(index)
        assert np.array_equal(frame[:HEIGHT], luma)
        assert np.array_equal(frame[HEIGHT:].ravel(), np.concatenate((u.ravel(), v.ravel())))


def test_noise_adds_zero_mean_noise_of_the_stated_sigma() -> None:
    noisy = NoiseScene(motion(), FPS, 3)
    clean = noisy.clean(10).astype(np.int16)
    luma, u, v = noisy.render(10)
    difference = luma.astype(np.int16) - clean
    assert abs(float(difference.mean())) < 0.5
    assert float(difference.std()) == pytest.approx(LUMA_SIGMA, rel=0.05)
    assert float(u.astype(np.float64).std()) > 2.0 and float(v.astype(np.float64).std()) > 2.0
    # Different noise in the next frame.
    next_luma = noisy.render(11)[0].astype(np.int16)
    assert float(np.abs(next_luma - difference - clean).mean()) > 5
    assert int(np.median(clean)) == BLACK


def test_blur_smears_along_the_velocity_and_its_truth_is_mid_exposure() -> None:
    blur = BlurScene(motion(), FPS, 3)
    heading = motion().heading
    bounced = 0
    for index in range(0, 300):
        truth = blur.truth(index)
        middle = motion().position(index / FPS)
        if math.hypot(truth.x - middle[0], truth.y - middle[1]) > 1e-6:
            bounced += 1
    # Away from a bounce the truth is the position at mid-exposure, exactly.
    assert bounced < 0.1 * 300
    (top, bottom, left, right), alpha = blur.ball_alpha(10) or ((0, 0, 0, 0), None)
    assert alpha is not None
    luma = blur.render(10)[0]
    assert np.array_equal(luma[top:bottom, left:right], np.rint(alpha * 255).astype(np.uint8))
    assert int(luma.sum()) == int(luma[top:bottom, left:right].sum())
    # The smear is longer along the motion than across it.
    rows, cols = np.nonzero(alpha > 0.02)
    along = cols * math.cos(heading) + rows * math.sin(heading)
    across = -cols * math.sin(heading) + rows * math.cos(heading)
    travel = SPEED / FPS
    assert np.ptp(along) - np.ptp(across) == pytest.approx(travel, abs=2.0)


def test_clutter_draws_the_ball_over_a_busy_static_background() -> None:
    clutter = ClutterScene(motion(), FPS, 3)
    ground = background(WIDTH, HEIGHT, RADIUS, 3)
    assert float(ground.std()) > 20
    assert len(np.unique(clutter.render(0)[1])) > 20  # colour, not grey
    for index in (0, 40):
        luma = clutter.render(index)[0]
        (top, bottom, left, right), alpha = clutter.ball_alpha(index) or ((0, 0, 0, 0), None)
        outside = np.ones(luma.shape, bool)
        outside[top:bottom, left:right] = False
        assert np.array_equal(luma[outside], ground[outside])
        assert (luma[top:bottom, left:right][alpha >= 1.0] == 255).all()


def test_distractors_are_other_moving_shapes_under_the_ball() -> None:
    distractors = scene("distractors")
    first = distractors.render(0)[0].copy()
    later = distractors.render(20)[0]
    count, _ = cv2.connectedComponents((first > 60).astype(np.uint8))
    assert count - 1 >= 3  # the ball and at least two others apart from it
    # They move: the picture without the ball changes between frames.
    for index, luma in ((0, first), (20, later)):
        (top, bottom, left, right), alpha = distractors.ball_alpha(index) or ((0, 0, 0, 0), None)
        assert (luma[top:bottom, left:right][alpha >= 1.0] == 255).all()
    assert not np.array_equal(first, later)


def test_occlusion_hides_the_ball_and_the_truth_says_so() -> None:
    occlusion = OcclusionScene(motion(), FPS, 3)
    seen = {"hidden": 0, "visible": 0, "partly": 0}
    for index in range(600):
        truth = occlusion.truth(index)
        luma = occlusion.render(index)[0]
        bright = int((luma > 200).sum())
        if truth.hidden:
            seen["hidden"] += 1
            assert bright == 0, index
        elif truth.visible:
            seen["visible"] += 1
            assert bright > 0, index
        else:
            seen["partly"] += 1
        # The bar is dark: nothing but the ball is bright.
        assert (luma[:, occlusion.left : occlusion.right] <= 80).all()
    assert seen["hidden"] > 10 and seen["visible"] > 300 and seen["partly"] > 0


def test_truth_visibility_thresholds() -> None:
    assert Truth(1.0, 2.0).visible and not Truth(1.0, 2.0).hidden
    assert Truth(1.0, 2.0, 0.0).hidden and not Truth(1.0, 2.0, 0.0).visible
    partly = Truth(1.0, 2.0, 0.3)
    assert not partly.visible and not partly.hidden


def test_lighting_flickers_and_darkens_the_corners() -> None:
    lighting = LightingScene(motion(), FPS, 3)
    means = [float(lighting.render(index)[0].mean()) for index in range(0, 60, 3)]
    assert max(means) > 1.3 * min(means)
    luma = lighting.render(0)[0].astype(np.float64)
    assert luma[HEIGHT // 2, WIDTH // 2] > 2 * luma[0, 0] or lighting.gain(0.0) < 0.7


def test_the_scenes_import_neither_aiortc_nor_asyncio() -> None:
    for path in sorted((ROOT / "server" / "core").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in ("aiortc", "asyncio"), (path, name)
