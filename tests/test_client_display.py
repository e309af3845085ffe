"""The client window's picture: ``client.display.draw``, without a window."""

from __future__ import annotations

import numpy as np
import pytest

from client.detection.interface import DetectionResult
from client.display import draw
from server.core.renderer import render_luma

WIDTH, HEIGHT, RADIUS = 320, 240, 30.0


def mark_weight(picture: np.ndarray) -> np.ndarray:
    """How red each pixel is: the mark's coverage, on black and on the white ball alike.

    Red (0, 0, 255) blended over grey level g gives R = 255a + g(1 - a) and
    G = g(1 - a), so R - G = 255a whatever the background; the yellow text
    has R == G and weighs nothing.
    """
    return np.clip(picture[:, :, 2].astype(float) - picture[:, :, 1], 0, None)


def centroid(weight: np.ndarray) -> tuple[float, float]:
    """(x, y) of a weight image."""
    rows, cols = np.indices(weight.shape)
    total = weight.sum()
    assert total > 0, "nothing to locate"
    return float((cols * weight).sum() / total), float((rows * weight).sum() / total)


#: Sub-pixel positions, among them half-pixel ones where drawing at the
#: nearest whole pixel would be half a pixel off.
POSITIONS = [(100.0, 80.0), (150.3125, 120.6875), (200.77, 90.21), (61.5, 170.5), (80.5, 99.5)]
POSITIONS += [
    (float(x), float(y))
    for x, y in np.random.default_rng(7).uniform((60, 60), (WIDTH - 60, HEIGHT - 60), (20, 2))
]


@pytest.mark.parametrize("x, y", POSITIONS)
def test_the_mark_is_centred_on_the_detection_to_a_fraction_of_a_pixel(x: float, y: float) -> None:
    luma = render_luma(WIDTH, HEIGHT, x, y, RADIUS)
    picture = draw(luma, DetectionResult(pts=3000, x=x, y=y, detect_ms=0.2))
    weight = mark_weight(picture)
    assert weight.sum() > 255 * 40, "no mark drawn"
    # Measured over 300 random positions: at most 0.10 px off (OpenCV's
    # anti-aliasing at 1/16 px). A mark drawn at the nearest whole pixel is
    # up to 0.5 px off, one with x and y swapped tens of pixels.
    mark_x, mark_y = centroid(weight)
    assert abs(mark_x - x) < 0.25 and abs(mark_y - y) < 0.25, (mark_x, mark_y)


def test_the_picture_is_the_frame_apart_from_the_mark_and_the_text() -> None:
    luma = render_luma(WIDTH, HEIGHT, 100.0, 120.0, RADIUS)
    picture = draw(luma, DetectionResult(pts=0, x=100.0, y=120.0, detect_ms=0.2))
    assert picture.shape == (HEIGHT, WIDTH, 3) and picture.dtype == np.uint8
    # Far from the mark (and below the text) every pixel is the frame's grey.
    untouched = picture[60:, 150:]
    assert (untouched == luma[60:, 150:, None]).all()
    # The mark is red only: the text is drawn in another colour.
    assert not mark_weight(picture)[:40, :].any(), "red outside the mark"
    assert (picture[:40, :, 1] > 100).any(), "no coordinate text"


@pytest.mark.parametrize("detection", [None, DetectionResult(pts=0, x=None, y=None, detect_ms=0.2)])
def test_no_detection_or_no_ball_gives_the_plain_frame(detection: DetectionResult | None) -> None:
    luma = render_luma(WIDTH, HEIGHT, 100.0, 120.0, RADIUS)
    picture = draw(luma, detection)
    assert (picture == luma[:, :, None]).all()


def test_draw_leaves_the_decoded_frame_alone() -> None:
    luma = render_luma(WIDTH, HEIGHT, 100.0, 120.0, RADIUS)
    before = luma.copy()
    draw(luma, DetectionResult(pts=0, x=100.0, y=120.0, detect_ms=0.2))
    assert (luma == before).all()
