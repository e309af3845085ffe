import math

import numpy as np

from client.detection.hough import HoughCircleLocator
from server.core.renderer import render_luma


def test_finds_the_ball_to_a_fraction_of_a_pixel() -> None:
    locator = HoughCircleLocator()
    for x, y, r in ((100.3, 80.6, 20.0), (400.7, 300.2, 15.0), (250.0, 200.5, 30.0)):
        found = locator.detect(render_luma(640, 480, x, y, r))
        assert found is not None
        assert math.hypot(found[0] - x, found[1] - y) < 1.0, (found, x, y)


def test_an_empty_frame_has_no_ball() -> None:
    assert HoughCircleLocator().detect(np.zeros((480, 640), np.uint8)) is None


def test_a_flat_bright_background_is_no_ball() -> None:
    assert HoughCircleLocator().detect(np.full((480, 640), 200, np.uint8)) is None
