"""CentroidDetector: render with the server's renderer, detect, compare.

Accuracy bounds sit a few times above what the detector measures (noted per
test), so a regression shows up without the tests being flaky.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import pytest

from client.detector import CentroidDetector
from server.renderer import render_luma

WIDTH, HEIGHT = 320, 240

Frame = np.ndarray
Maker = Callable[[float, float, float], Frame]


def error(found: tuple[float, float] | None, x: float, y: float) -> float:
    assert found is not None, f"no ball found at ({x}, {y})"
    return float(np.hypot(found[0] - x, found[1] - y))


def random_inside(rng: np.random.Generator, count: int) -> list[tuple[float, float, float]]:
    cases = []
    for _ in range(count):
        radius = rng.uniform(5.0, 60.0)
        x = rng.uniform(radius + 2.0, WIDTH - radius - 3.0)
        y = rng.uniform(radius + 2.0, HEIGHT - radius - 3.0)
        cases.append((x, y, radius))
    return cases


def noisy(rng: np.random.Generator) -> Maker:
    """Gaussian noise (sigma 8) plus 60 single-pixel white specks."""

    def make(x: float, y: float, radius: float) -> Frame:
        luma = render_luma(WIDTH, HEIGHT, x, y, radius).astype(np.float32)
        luma += rng.normal(0.0, 8.0, luma.shape).astype(np.float32)
        frame = np.clip(luma, 0, 255).astype(np.uint8)
        frame[rng.integers(0, HEIGHT, 60), rng.integers(0, WIDTH, 60)] = 255
        return frame

    return make


def blurred(x: float, y: float, radius: float) -> Frame:
    """Roughly what a lossy codec does to a sharp edge."""
    return cv2.GaussianBlur(render_luma(WIDTH, HEIGHT, x, y, radius), (5, 5), 1.0)


def test_clean_frames_many_positions_and_radii() -> None:
    # Measured over 1000 frames: mean 0.004 px, max 0.025 px.
    rng = np.random.default_rng(1)
    errors = [
        error(CentroidDetector().detect(render_luma(WIDTH, HEIGHT, x, y, r)), x, y)
        for x, y, r in random_inside(rng, 200)
    ]
    assert np.mean(errors) < 0.02
    assert np.max(errors) < 0.05


def test_gaussian_noise_and_salt_specks() -> None:
    # Measured over 500 frames: mean 0.014 px, max 0.10 px (small radii).
    rng = np.random.default_rng(2)
    make = noisy(rng)
    errors = [
        error(CentroidDetector().detect(make(x, y, r)), x, y) for x, y, r in random_inside(rng, 60)
    ]
    assert np.mean(errors) < 0.05
    assert np.max(errors) < 0.2


def test_codec_like_blur() -> None:
    # Measured over 500 frames: mean 0.004 px, max 0.023 px.
    rng = np.random.default_rng(3)
    errors = [
        error(CentroidDetector().detect(blurred(x, y, r)), x, y)
        for x, y, r in random_inside(rng, 100)
    ]
    assert np.max(errors) < 0.05


EDGES = {
    "left": (1, 0, 0, 0),
    "right": (0, 1, 0, 0),
    "top": (0, 0, 1, 0),
    "bottom": (0, 0, 0, 1),
    "top-left": (1, 0, 1, 0),
    "top-right": (0, 1, 1, 0),
    "bottom-left": (1, 0, 0, 1),
    "bottom-right": (0, 1, 0, 1),
}


def clipped_cases(
    rng: np.random.Generator, edge: str, count: int, outside: float, min_radius: float = 5.0
) -> list[tuple[float, float, float]]:
    """Balls cut by ``edge``: the centre from ``outside`` radii beyond the
    edge to 0.9 radii inside it, so between a sliver and a graze is cut."""
    left, right, top, bottom = EDGES[edge]
    cases = []
    for _ in range(count):
        radius = rng.uniform(min_radius, 60.0)
        x = rng.uniform(radius + 2.0, WIDTH - radius - 3.0)
        y = rng.uniform(radius + 2.0, HEIGHT - radius - 3.0)
        depth_x, depth_y = rng.uniform(-outside * radius, 0.9 * radius, size=2)
        if left:
            x = depth_x
        if right:
            x = WIDTH - 1 - depth_x
        if top:
            y = depth_y
        if bottom:
            y = HEIGHT - 1 - depth_y
        cases.append((x, y, radius))
    return cases


@pytest.mark.parametrize("edge", EDGES)
def test_ball_clipped_by_edge_or_corner(edge: str) -> None:
    # Centre inside the frame. Measured over 480 balls: mean 0.0005 px, max
    # 0.007 px; the plain centroid of the visible part is off by up to about
    # 0.4 radii here.
    rng = np.random.default_rng(10)
    for x, y, r in clipped_cases(rng, edge, 25, outside=0.0):
        detector = CentroidDetector()
        assert error(detector.detect(render_luma(WIDTH, HEIGHT, x, y, r)), x, y) < 0.05
        assert detector.method == "circle"


@pytest.mark.parametrize("edge", EDGES)
def test_ball_mostly_outside_the_frame(edge: str) -> None:
    # Centre up to 0.5 radii outside (radius >= 10). Measured: max 0.03 px.
    rng = np.random.default_rng(11)
    for x, y, r in clipped_cases(rng, edge, 25, outside=0.5, min_radius=10.0):
        assert error(CentroidDetector().detect(render_luma(WIDTH, HEIGHT, x, y, r)), x, y) < 0.2


@pytest.mark.parametrize("edge", EDGES)
def test_clipped_ball_with_noise(edge: str) -> None:
    # Centre inside the frame. Measured over 480 balls: mean 0.016 px, max
    # 0.27 px.
    rng = np.random.default_rng(12)
    make = noisy(rng)
    errors = [
        error(CentroidDetector().detect(make(x, y, r)), x, y)
        for x, y, r in clipped_cases(rng, edge, 15, outside=0.0)
    ]
    assert np.mean(errors) < 0.1
    assert np.max(errors) < 0.5


@pytest.mark.parametrize("edge", EDGES)
def test_clipped_ball_with_blur(edge: str) -> None:
    # Centre inside the frame. Measured over 480 balls: mean 0.014 px, max
    # 0.2 px (a small ball in a corner).
    rng = np.random.default_rng(13)
    errors = [
        error(CentroidDetector().detect(blurred(x, y, r)), x, y)
        for x, y, r in clipped_cases(rng, edge, 15, outside=0.0)
    ]
    assert np.mean(errors) < 0.1
    assert np.max(errors) < 0.5


def test_no_ball() -> None:
    detector = CentroidDetector()
    assert detector.detect(np.zeros((HEIGHT, WIDTH), np.uint8)) is None
    assert detector.method is None


def test_no_ball_only_noise_and_specks() -> None:
    rng = np.random.default_rng(4)
    frame = np.clip(rng.normal(0.0, 8.0, (HEIGHT, WIDTH)), 0, 255).astype(np.uint8)
    frame[rng.integers(0, HEIGHT, 60), rng.integers(0, WIDTH, 60)] = 255
    assert CentroidDetector().detect(frame) is None


def test_ball_lost_then_found_again() -> None:
    detector = CentroidDetector()
    assert detector.detect(render_luma(WIDTH, HEIGHT, 100.3, 80.6, 12)) is not None
    assert detector.detect(np.zeros((HEIGHT, WIDTH), np.uint8)) is None
    found = detector.detect(render_luma(WIDTH, HEIGHT, 250.2, 190.7, 12))
    assert error(found, 250.2, 190.7) < 0.05


def test_tracking_window_then_full_frame_fallback() -> None:
    detector = CentroidDetector()
    x, y = 60.25, 50.75
    assert error(detector.detect(render_luma(WIDTH, HEIGHT, x, y, 15)), x, y) < 0.05
    assert not detector.used_window  # nothing to track yet

    for _ in range(10):  # small steps: every frame is found in the window
        x, y = x + 6.3, y + 3.1
        assert error(detector.detect(render_luma(WIDTH, HEIGHT, x, y, 15)), x, y) < 0.05
        assert detector.used_window

    x, y = 280.4, 200.2  # a jump far outside the window
    assert error(detector.detect(render_luma(WIDTH, HEIGHT, x, y, 15)), x, y) < 0.05
    assert not detector.used_window
    assert error(detector.detect(render_luma(WIDTH, HEIGHT, x - 2, y, 15)), x - 2, y) < 0.05
    assert detector.used_window

    detector.reset()
    assert error(detector.detect(render_luma(WIDTH, HEIGHT, x, y, 15)), x, y) < 0.05
    assert not detector.used_window


def test_window_cutting_the_ball_falls_back() -> None:
    """A ball that grew past the window must not be measured in pieces."""
    detector = CentroidDetector()
    detector.detect(render_luma(WIDTH, HEIGHT, 160.0, 120.0, 5))
    found = detector.detect(render_luma(WIDTH, HEIGHT, 160.3, 120.4, 60))
    assert error(found, 160.3, 120.4) < 0.05


def test_speck_in_window_does_not_hide_the_jump() -> None:
    """A speck left near the old position loses to the ball elsewhere."""
    detector = CentroidDetector()
    detector.detect(render_luma(WIDTH, HEIGHT, 80.0, 80.0, 20))
    frame = render_luma(WIDTH, HEIGHT, 260.6, 180.2, 20)
    frame[80:82, 80:82] = 255
    assert error(detector.detect(frame), 260.6, 180.2) < 0.05


def test_largest_blob_wins() -> None:
    frame = render_luma(WIDTH, HEIGHT, 220.4, 150.3, 30)
    frame |= render_luma(WIDTH, HEIGHT, 60.0, 60.0, 8)
    assert error(CentroidDetector().detect(frame), 220.4, 150.3) < 0.05


def test_neighbouring_blob_in_the_box_is_masked_out() -> None:
    frame = render_luma(WIDTH, HEIGHT, 150.4, 120.3, 25)
    frame[95:98, 176:179] = 255  # a speck just off the ball, inside its box
    assert error(CentroidDetector().detect(frame), 150.4, 120.3) < 0.05


def test_strided_views() -> None:
    buffer = np.zeros((HEIGHT, WIDTH + 64), np.uint8)
    buffer[:, :WIDTH] = render_luma(WIDTH, HEIGHT, 101.7, 77.2, 18)
    buffer[:, WIDTH:] = 255  # row padding must never be read as picture
    view = buffer[:, :WIDTH]
    assert not view.flags.c_contiguous
    detector = CentroidDetector()
    assert error(detector.detect(view), 101.7, 77.2) < 0.05
    assert error(detector.detect(view), 101.7, 77.2) < 0.05  # windowed path too

    clipped = np.zeros((HEIGHT, WIDTH + 64), np.uint8)
    clipped[:, :WIDTH] = render_luma(WIDTH, HEIGHT, WIDTH - 5.3, 100.6, 20)
    clipped[:, WIDTH:] = 255
    assert error(CentroidDetector().detect(clipped[:, :WIDTH]), WIDTH - 5.3, 100.6) < 0.05


def test_frame_size_change_resets_tracking() -> None:
    detector = CentroidDetector()
    detector.detect(render_luma(WIDTH, HEIGHT, 100.5, 100.5, 10))
    assert error(detector.detect(render_luma(640, 480, 500.2, 400.9, 10)), 500.2, 400.9) < 0.05
    assert not detector.used_window


def test_rejects_what_is_not_a_luma_plane() -> None:
    detector = CentroidDetector()
    with pytest.raises(ValueError):
        detector.detect(np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    with pytest.raises(ValueError):
        detector.detect(np.zeros((HEIGHT, WIDTH), np.float32))
    with pytest.raises(ValueError):
        CentroidDetector(threshold=20, floor=30)
