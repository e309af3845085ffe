"""CentroidDetector: render with the server's renderer, detect, compare.

Accuracy bounds sit a few times above what the detector measures (noted per
test), so a regression shows up without the tests being flaky.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import pytest

from client.detection.detector import (
    CentroidDetector,
    _algebraic_circle,
    _median,
    _refine_circle,
    _solve,
)
from server.core.renderer import render_luma

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


# --- Mutation testing (bench/mutation.py) pinned these down -------------------


def blob_rect(frame: Frame, threshold: int = 96) -> tuple[int, int, int, int]:
    """left, top, right, bottom (half-open) of what the detector thresholds."""
    left, top, w, h = cv2.boundingRect((frame > threshold).astype(np.uint8))
    return left, top, left + w, top + h


def block(frame: Frame, left: int, top: int, width: int, height: int) -> Frame:
    """A hard-edged white rectangle: its contour and centroid are exact."""
    frame[top : top + height, left : left + width] = 255
    return frame


def blank() -> Frame:
    return np.zeros((HEIGHT, WIDTH), np.uint8)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 20, "floor": 30},
        {"threshold": 30, "floor": 30},
        {"threshold": 255, "floor": 30},
        {"floor": -1},
    ],
)
def test_rejects_bad_threshold_and_floor(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="^need 0 <= floor < threshold < 255$"):
        CentroidDetector(**kwargs)


def test_defaults_are_the_documented_ones() -> None:
    # server/console/web/static/ball_finder.js ports the detector with THRESHOLD 96
    # and FLOOR 28 written out: a change here must be made there too.
    detector = CentroidDetector()
    assert (detector.threshold, detector.floor, detector.pad) == (96, 28, 3)
    assert (detector.min_area, detector.margin) == (3.0, 8.0)


def test_extreme_valid_parameters_are_accepted() -> None:
    CentroidDetector(threshold=254, floor=0, pad=1)
    with pytest.raises(ValueError, match="^pad must be at least 1 pixel$"):
        CentroidDetector(pad=0)


def test_rejected_plane_says_what_it_got() -> None:
    with pytest.raises(
        ValueError, match=r"^expected a 2-D uint8 luma plane, got float32 \(2, 3\)$"
    ):
        CentroidDetector().detect(np.zeros((2, 3), np.float32))


def test_state_before_the_first_frame_and_after_a_ball_in_the_open() -> None:
    detector = CentroidDetector()
    assert detector.used_window is False and detector.method is None
    detector.detect(render_luma(WIDTH, HEIGHT, 100.3, 80.6, 15))
    assert detector.used_window is False and detector.method == "centroid"
    detector.reset()
    assert detector.used_window is False and detector.method is None


def test_smallest_blob_is_min_area() -> None:
    # A 2 x 4 block's contour encloses exactly 3 px^2, the default min_area.
    found = CentroidDetector().detect(block(blank(), 100, 50, 2, 4))
    assert found == pytest.approx((100.5, 51.5))
    assert CentroidDetector().detect(block(blank(), 100, 50, 2, 3)) is None


def test_tracking_window_geometry() -> None:
    # The window reaches two blob radii, the last motion and the margin
    # beyond the blob, clipped to the frame.
    detector = CentroidDetector()
    frame = render_luma(WIDTH, HEIGHT, 100.3, 80.6, 15)
    detector.detect(frame)
    left, top, right, bottom = blob_rect(frame)
    grow = int(np.ceil(max(right - left, bottom - top) + 8.0))
    assert detector._window(WIDTH, HEIGHT) == (left - grow, top - grow, right + grow, bottom + grow)

    frame = render_luma(WIDTH, HEIGHT, 100.3 + 6.3, 80.6 + 8.4, 15)  # moved 10.5 px
    detector.detect(frame)
    left, top, right, bottom = blob_rect(frame)
    grow = int(np.ceil(max(right - left, bottom - top) + 10.5 + 8.0))
    assert detector._window(WIDTH, HEIGHT) == (left - grow, top - grow, right + grow, bottom + grow)

    detector.reset()  # no motion is known after a reset
    detector.detect(render_luma(WIDTH, HEIGHT, 20.3, 15.6, 8))
    left, top, right, bottom = blob_rect(render_luma(WIDTH, HEIGHT, 20.3, 15.6, 8))
    grow = int(np.ceil(max(right - left, bottom - top) + 8.0))
    assert detector._window(WIDTH, HEIGHT) == (0, 0, right + grow, bottom + grow)


def test_no_window_when_it_would_cover_the_frame() -> None:
    detector = CentroidDetector()
    for _ in range(2):
        assert error(detector.detect(render_luma(64, 48, 30.3, 20.6, 10)), 30.3, 20.6) < 0.05
        assert detector.used_window is False


@pytest.mark.parametrize("side", ["left", "right", "top", "bottom"])
def test_ball_cut_by_one_side_of_the_window_is_measured_whole(side: str) -> None:
    detector = CentroidDetector()
    x, y, r = 160.3, 120.6, 10
    detector.detect(render_luma(WIDTH, HEIGHT, x, y, r))
    x0, y0, x1, y1 = detector._window(WIDTH, HEIGHT)  # type: ignore[misc]
    # The new ball's centre sits just inside the window edge: half of it is outside.
    x, y = {
        "left": (x0 + 0.7, y),
        "right": (x1 - 0.7, y),
        "top": (x, y0 + 0.7),
        "bottom": (x, y1 - 0.7),
    }[side]
    assert error(detector.detect(render_luma(WIDTH, HEIGHT, x, y, r)), x, y) < 0.05
    assert detector.used_window is False


# A block 10 px square: radius 5, so the window grows by 18 px around it.
BLOCK = 10
GROW = 18


@pytest.mark.parametrize("side", ["left", "right", "top", "bottom"])
def test_blob_on_an_inner_window_edge_one_pixel_from_the_frame_edge_falls_back(
    side: str,
) -> None:
    near = GROW + 1  # the first block puts the window edge at pixel 1 (or size - 1)
    first = {
        "left": (near, 100),
        "right": (WIDTH - near - BLOCK, 100),
        "top": (100, near),
        "bottom": (100, HEIGHT - near - BLOCK),
    }[side]
    second = {
        "left": (1, 100),
        "right": (WIDTH - 1 - BLOCK, 100),
        "top": (100, 1),
        "bottom": (100, HEIGHT - 1 - BLOCK),
    }[side]
    detector = CentroidDetector()
    detector.detect(block(blank(), *first, BLOCK, BLOCK))
    found = detector.detect(block(blank(), *second, BLOCK, BLOCK))
    assert found == pytest.approx((second[0] + 4.5, second[1] + 4.5))
    assert detector.used_window is False


@pytest.mark.parametrize("side", ["left", "right", "top", "bottom"])
def test_blob_on_the_frame_edge_stays_in_the_window(side: str) -> None:
    corner = {
        "left": (0, 100),
        "right": (WIDTH - BLOCK, 100),
        "top": (100, 0),
        "bottom": (100, HEIGHT - BLOCK),
    }[side]
    detector = CentroidDetector()
    detector.detect(block(blank(), *corner, BLOCK, BLOCK))
    moved = (corner[0], corner[1] + 3) if side in ("left", "right") else (corner[0] + 3, corner[1])
    detector.detect(block(blank(), *moved, BLOCK, BLOCK))
    assert detector.used_window is True


@pytest.mark.parametrize("side", ["left", "right", "top", "bottom"])
def test_speck_just_outside_the_window_is_masked_out(side: str) -> None:
    detector = CentroidDetector()
    detector.detect(block(blank(), 150, 110, BLOCK, BLOCK))
    x0, y0, x1, y1 = detector._window(WIDTH, HEIGHT)  # type: ignore[misc]
    # The ball's blob ends one pixel inside the window edge (its measurement
    # box reaches two pixels beyond it)...
    r = 12.0
    x, y = {
        "left": (x0 + 1 + r - 0.4, 115.3),
        "right": (x1 - 2 - r + 0.4, 115.3),
        "top": (155.3, y0 + 1 + r - 0.4),
        "bottom": (155.3, y1 - 2 - r + 0.4),
    }[side]
    frame = render_luma(WIDTH, HEIGHT, x, y, r)
    left, top, _, _ = blob_rect(frame)
    # ...and a speck outside the window, in a corner of that box: the windowed
    # search does not see it, only the mask keeps it out of the centroid.
    if side in ("left", "right"):
        frame[top - 3 : top + 2, x0 - 1 if side == "left" else x1] = 255
    else:
        frame[y0 - 1 if side == "top" else y1, left - 3 : left + 2] = 255
    # Measured: 0.007 px; with the speck, 0.2 px.
    assert error(detector.detect(frame), x, y) < 0.05
    assert detector.used_window is True


def test_a_quarter_of_the_last_area_is_still_the_ball() -> None:
    # Contour areas: a 9 x 9 block encloses 8 x 8 = 64 px^2, a 5 x 5 one 16.
    detector = CentroidDetector()
    detector.detect(block(blank(), 100, 100, 9, 9))
    detector.detect(block(blank(), 103, 103, 5, 5))  # exactly a quarter
    assert detector.used_window is True
    detector.detect(block(blank(), 100, 100, 9, 9))
    detector.detect(block(blank(), 103, 103, 5, 4))  # 12 px^2: a speck, look again
    assert detector.used_window is False


def test_speck_of_a_few_pixels_in_the_window_loses_to_the_ball_elsewhere() -> None:
    detector = CentroidDetector()
    detector.detect(render_luma(WIDTH, HEIGHT, 80.0, 80.0, 20))
    frame = render_luma(WIDTH, HEIGHT, 260.6, 180.2, 20)
    frame[80:83, 80:83] = 255  # 4 px^2: above min_area, far below the ball's
    assert error(detector.detect(frame), 260.6, 180.2) < 0.05


def test_small_ball_far_from_a_big_one_is_found() -> None:
    detector = CentroidDetector()
    detector.detect(render_luma(WIDTH, HEIGHT, 80.3, 80.6, 40))
    assert error(detector.detect(render_luma(WIDTH, HEIGHT, 280.2, 200.7, 6)), 280.2, 200.7) < 0.05


def test_largest_blob_wins_whichever_comes_first() -> None:
    frame = render_luma(WIDTH, HEIGHT, 60.4, 60.3, 30)
    frame |= render_luma(WIDTH, HEIGHT, 220.0, 150.0, 8)
    assert error(CentroidDetector().detect(frame), 60.4, 60.3) < 0.05


@pytest.mark.parametrize("axis", ["x", "y"])
def test_a_sliver_two_pixels_deep_on_the_frame_edge_is_found(axis: str) -> None:
    r = 20.0
    x, y = (-r + 1.6, 100.3) if axis == "x" else (150.3, -r + 1.6)
    frame = render_luma(WIDTH, HEIGHT, x, y, r)
    assert CentroidDetector().detect(frame) is not None


def test_hard_edged_blob_on_the_frame_edge_falls_back_to_the_centroid() -> None:
    detector = CentroidDetector()
    assert detector.detect(block(blank(), 0, 100, 6, 20)) == pytest.approx((2.5, 109.5))
    assert detector.method == "centroid"


@pytest.mark.parametrize("edge", ["left", "right", "top", "bottom"])
def test_ball_one_pixel_short_of_the_edge_is_not_fitted(edge: str) -> None:
    # Its rim reaches the second row or column, not the first: not clipped,
    # so the plain centroid is exact and no circle is fitted.
    r = 10.0
    x, y = {
        "left": (r + 0.9, 120.3),
        "right": (WIDTH - 1 - r - 0.9, 120.3),
        "top": (160.2, r + 0.9),
        "bottom": (160.2, HEIGHT - 1 - r - 0.9),
    }[edge]
    detector = CentroidDetector()
    assert error(detector.detect(render_luma(WIDTH, HEIGHT, x, y, r)), x, y) < 0.01
    assert detector.method == "centroid"


@pytest.mark.parametrize("edge", ["left", "right", "top", "bottom"])
def test_outermost_row_or_column_is_left_out_of_the_fit(edge: str) -> None:
    # Codecs treat picture borders differently: darken the outermost line.
    # Measured: 0.002 px; using that line costs 0.12 to 0.22 px here.
    r, depth, along = 12.0, -6.1, 101.3
    x, y = {
        "left": (depth, 0.75 * along),
        "right": (WIDTH - 1 - depth, 0.75 * along),
        "top": (along, depth),
        "bottom": (along, HEIGHT - 1 - depth),
    }[edge]
    frame = render_luma(WIDTH, HEIGHT, x, y, r).astype(np.int16)
    line = {"left": (slice(None), 0), "right": (slice(None), -1), "top": (0,), "bottom": (-1,)}[
        edge
    ]
    frame[line] = np.clip(frame[line] - 100, 0, 255)
    detector = CentroidDetector()
    assert error(detector.detect(frame.astype(np.uint8)), x, y) < 0.05
    assert detector.method == "circle"


def test_dim_ball_on_the_edge_next_to_a_bright_speck() -> None:
    # The edge levels are relative to the ball's own brightest pixel, not the
    # speck's. Measured: 0.001 px.
    x, y, r = 5.3, 100.4, 20
    frame = (render_luma(WIDTH, HEIGHT, x, y, r).astype(np.float32) * 180 / 255).round()
    frame = frame.astype(np.uint8)
    _, top, right, _ = blob_rect(frame)
    frame[top - 2 : top, right + 1 : right + 3] = 255  # a corner of the measurement box
    detector = CentroidDetector()
    assert error(detector.detect(frame), x, y) < 0.01
    assert detector.method == "circle"


def test_clipped_ball_with_codec_blur_fits_the_ramp_width() -> None:
    # Measured: mean 0.011 px, max 0.026 px; with the ramp width held at
    # one pixel instead, mean 0.03 px and max 0.13 px.
    rng = np.random.default_rng(5)
    errors = []
    for _ in range(20):
        r = rng.uniform(8, 40)
        x, y = rng.uniform(-0.3 * r, 0.8 * r), rng.uniform(r + 2, HEIGHT - r - 3)
        frame = cv2.GaussianBlur(render_luma(WIDTH, HEIGHT, x, y, r), (0, 0), 1.0)
        errors.append(error(CentroidDetector().detect(frame), x, y))
    assert np.mean(errors) < 0.02
    assert np.max(errors) < 0.06


def test_clipped_ball_with_plain_noise() -> None:
    # Gaussian noise only (sigma 8). Measured: mean 0.008 px, max 0.035 px;
    # without the Tukey weights' noise floor, mean 0.035 px and max 0.23 px.
    rng = np.random.default_rng(12)
    errors = []
    for _ in range(60):
        r = rng.uniform(5.0, 60.0)
        x, y = rng.uniform(0.0, 0.9 * r), rng.uniform(r + 2, HEIGHT - r - 3)
        frame = render_luma(WIDTH, HEIGHT, x, y, r).astype(np.float32)
        frame += rng.normal(0.0, 8.0, frame.shape).astype(np.float32)
        found = CentroidDetector().detect(np.clip(frame, 0, 255).astype(np.uint8))
        errors.append(error(found, x, y))
    assert np.mean(errors) < 0.02
    assert np.max(errors) < 0.1


@pytest.mark.parametrize(
    "x,y,r", [(6.3, 100.4, 25.0), (150.2, 8.7, 30.0), (309.8, 120.6, 28.0), (170.4, 234.9, 22.0)]
)
def test_dark_pixels_inside_a_clipped_ball_are_not_edge_points(
    x: float, y: float, r: float
) -> None:
    # Only pixels near the background count as edge points: 15 % of the
    # interior at a partial level would otherwise pull the fit 7 to 9 px.
    frame = render_luma(WIDTH, HEIGHT, x, y, r)
    rows, cols = np.indices(frame.shape)
    rng = np.random.default_rng(3)
    frame[(np.hypot(cols - x, rows - y) < r - 4) & (rng.random(frame.shape) < 0.15)] = 140
    detector = CentroidDetector()
    assert error(detector.detect(frame), x, y) < 0.01
    assert detector.method == "circle"


@pytest.mark.parametrize(
    "r,x,y,blur,bound",
    [
        # Slivers of small balls in a corner: the fit runs off (thousands of
        # pixels away) and the blob's own centroid is reported instead.
        (4.12, 320.76, 239.77, True, 10.0),
        (6.65, 319.3, -4.59, True, 10.0),
        # Larger arcs: the fit is plausible and kept. Measured: 0.21, 0.31 px.
        (46.11, -3.63, -43.71, False, 1.0),
        (26.52, 333.49, -18.14, False, 1.0),
    ],
)
def test_fits_to_corner_slivers_stay_plausible(
    r: float, x: float, y: float, blur: bool, bound: float
) -> None:
    frame = render_luma(WIDTH, HEIGHT, x, y, r)
    if blur:
        frame = cv2.GaussianBlur(frame, (5, 5), 1.0)
    assert error(CentroidDetector().detect(frame), x, y) < bound


def two_level_disc(x: float, y: float, radius: float) -> Frame:
    """A disc whose rim has just two grey levels, 3/4 and 1/2 of its peak."""
    rows, cols = np.indices((HEIGHT, WIDTH))
    distance = np.hypot(cols - x, rows - y)
    frame = np.zeros((HEIGHT, WIDTH), np.uint8)
    frame[distance < radius + 0.5] = 127
    frame[distance < radius] = 191
    frame[distance < radius - 0.5] = 254
    return frame


@pytest.mark.parametrize("x,y,r", [(5.3, 100.4, 20.0), (-3.2, 60.7, 18.0), (300.6, 120.2, 25.0)])
def test_clipped_disc_with_a_two_level_rim(x: float, y: float, r: float) -> None:
    # Two coverage levels leave the free-width start singular; the one-pixel
    # start takes over (the second case). Measured: 0.017 to 0.065 px.
    detector = CentroidDetector()
    assert error(detector.detect(two_level_disc(x, y, r)), x, y) < 0.1
    assert detector.method == "circle"


# --- The fitting helpers on exact synthetic edges -----------------------------


def ramp_points(
    centre: tuple[float, float], radius: float, width: float, count: int = 60
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points on a 200-degree arc satisfying ``|p - centre| = R - W c`` exactly."""
    angles = np.linspace(-0.3, 3.2, count)
    coverage = np.linspace(0.1, 0.9, count)[np.random.default_rng(0).permutation(count)]
    distance = radius - width * coverage
    u = centre[0] + distance * np.cos(angles)
    v = centre[1] + distance * np.sin(angles)
    return u, v, coverage


def test_median_is_the_upper_median() -> None:
    assert _median(np.array([3.0, 1.0, 2.0])) == 2.0
    assert _median(np.array([4.0, 1.0, 3.0, 2.0])) == 3.0
    assert _median(np.array([6.0, 5.0, 4.0, 1.0, 3.0, 2.0])) == 4.0


def test_solve_and_its_failures() -> None:
    solution = _solve(np.array([[2.0, 1.0], [1.0, 3.0]]), np.array([3.0, 5.0]))
    assert solution is not None and solution == pytest.approx([0.8, 1.4])
    assert _solve(np.array([[1.0, 2.0], [2.0, 4.0]]), np.array([1.0, 2.0])) is None
    assert _solve(np.array([[1.0, 0.0], [0.0, np.nan]]), np.array([1.0, 1.0])) is None


@pytest.mark.parametrize("ramp", [None, 0.04])
def test_algebraic_circle_is_exact_on_exact_points(ramp: float | None) -> None:
    u, v, c = ramp_points((0.12, -0.31), 0.8, 0.04 if ramp is not None else 0.07)
    assert _algebraic_circle(u, v, c, ramp) == pytest.approx((0.12, -0.31), abs=1e-9)


@pytest.mark.parametrize("start", [(0.12 + 0.05, -0.31), (0.12, -0.31 - 0.05), (0.2, -0.2)])
def test_refine_circle_converges_from_a_rough_start(start: tuple[float, float]) -> None:
    u, v, c = ramp_points((0.12, -0.31), 0.8, 0.04)
    fixed = _refine_circle(u, v, c, start, 0.04, False, 0.001)
    assert fixed == pytest.approx((0.12, -0.31, 0.8), abs=1e-7)
    # A free ramp width starts at the one given and finds the true one.
    u, v, c = ramp_points((0.12, -0.31), 0.8, 0.07)
    free = _refine_circle(u, v, c, start, 0.04, True, 0.001)
    assert free == pytest.approx((0.12, -0.31, 0.8), abs=1e-7)


def test_refine_circle_ignores_outliers() -> None:
    u, v, c = ramp_points((0.12, -0.31), 0.8, 0.04)
    # Every tenth point sits 30 noise floors farther out.
    du, dv = u - 0.12, v + 0.31
    stretch = 1.0 + np.where(np.arange(u.size) % 10 == 0, 0.03, 0.0) / np.hypot(du, dv)
    u, v = 0.12 + du * stretch, -0.31 + dv * stretch
    fitted = _refine_circle(u, v, c, (0.15, -0.3), 0.04, False, 0.001)
    assert fitted == pytest.approx((0.12, -0.31, 0.8), abs=1e-7)


def test_refine_circle_gives_up_with_too_few_points() -> None:
    u, v, c = ramp_points((0.12, -0.31), 0.8, 0.04, count=4)
    assert _refine_circle(u, v, c, (0.12, -0.31), 0.04, False, 0.001) is None
