"""--display on both programs, under Xvfb, checked on a real screenshot."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import pytest

from lab.programs import free_port, start_client, start_server
from lab.virtual_display import VirtualDisplay

pytestmark = [pytest.mark.e2e, pytest.mark.display, pytest.mark.timeout(120)]


def ball_blobs(image: np.ndarray, radius: float) -> list[float]:
    """Areas of white, ball-sized, round blobs in a screenshot."""
    white = cv2.inRange(image, (200, 200, 200), (255, 255, 255))
    contours, _ = cv2.findContours(white, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    expected = np.pi * radius**2
    found = []
    for contour in contours:
        area = cv2.contourArea(contour)
        (_, _), enclosing = cv2.minEnclosingCircle(contour)
        if 0.6 * expected < area < 1.4 * expected and abs(enclosing - radius) < 4:
            found.append(area)
    return found


def red_pixels(image: np.ndarray) -> int:
    return int(cv2.inRange(image, (0, 0, 180), (80, 80, 255)).sum() // 255)


def green_pixels(image: np.ndarray) -> int:
    return int(cv2.inRange(image, (0, 150, 0), (80, 255, 80)).sum() // 255)


def client_window_ready(shot: np.ndarray) -> bool:
    return len(ball_blobs(shot, 30)) == 1 and red_pixels(shot) > 30


def ball_and_mark_centres(
    image: np.ndarray, radius: float
) -> Optional[tuple[tuple[float, float], tuple[float, float]]]:
    """The ball's centre and the red mark's centre, (x, y) each, in a screenshot.

    The client's picture is grey (GRAY2BGR of the luma plane): G == B
    everywhere except where it drew in colour. Its red mark, blended over
    grey g with coverage a, gives R = 255a + g(1 - a), G = B = g(1 - a); its
    yellow text G > B. So among the pixels with G == B, R is the picture's
    own brightness (the ball, mark or not) and R - G the mark's coverage.
    The ball's centroid is taken over its own blob (the window's light grey
    bars are bright too), the mark's in a square around it; nothing else on
    the screen counts. None unless there is exactly one ball, marked.
    """
    blue, green, red = (image[:, :, c].astype(np.float64) for c in range(3))
    grey = np.abs(green - blue) < 8
    brightness = np.where(grey, red, 0.0)
    blobs = cv2.inRange(brightness.astype(np.uint8), 128, 255)
    contours, _ = cv2.findContours(blobs, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    expected = np.pi * radius**2
    balls = [c for c in contours if 0.7 * expected < cv2.contourArea(c) < 1.3 * expected]
    if len(balls) != 1:
        return None
    (x, y), _ = cv2.minEnclosingCircle(balls[0])
    reach = int(radius + 16)
    top, left = max(int(y) - reach, 0), max(int(x) - reach, 0)
    window = (slice(top, int(y) + reach + 1), slice(left, int(x) + reach + 1))
    blob = np.zeros(blobs.shape, np.uint8)
    cv2.drawContours(blob, balls, 0, 255, cv2.FILLED)
    # Its anti-aliased rim, and a floor against the codec's faint ringing.
    blob = cv2.dilate(blob, np.ones((5, 5), np.uint8))[window] > 0
    ball = np.where(blob, np.clip(brightness[window] - 40.0, 0.0, None), 0.0)
    mark = np.where(grey[window], np.clip(red[window] - green[window], 0.0, None), 0.0)
    if ball.sum() == 0 or mark.sum() < 255 * 20:
        return None
    rows, cols = np.indices(ball.shape)

    def centroid(weight: np.ndarray) -> tuple[float, float]:
        total = weight.sum()
        return left + (cols * weight).sum() / total, top + (rows * weight).sum() / total

    return centroid(ball), centroid(mark)


#: How far the mark may sit from the ball's centre on screen. The detection
#: itself is within 0.1 px and the drawing within 0.1 px (test_client_display);
#: the ball moves 10 px a frame at 300 px/s and 30 fps, so a mark from the
#: previous frame's detection sits about 10 px off.
MARK_OFFSET_LIMIT_PX = 1.5
#: Screenshots checked, each a different moment of the stream.
MARK_SHOTS = 8


def server_window_ready(shot: np.ndarray) -> bool:
    return green_pixels(shot) > 50 and red_pixels(shot) > 20


def test_client_window_shows_the_ball_and_the_detection(tmp_path: Path) -> None:
    port = free_port()
    with VirtualDisplay() as screen:
        server = start_server(port, "--duration", "8", "--once", "--radius", "30")
        client = start_client(port, "--display", env=screen.environment())
        try:
            server.wait_for_output("answered", timeout=30)
            shot = screen.screenshot_when(tmp_path / "client.png", client_window_ready, 5.0)
            assert len(ball_blobs(shot, 30)) == 1, "no ball in the client window"
            assert red_pixels(shot) > 30, "no detection mark in the client window"
            # Every picture carries its own frame's detection: the mark sits
            # on the ball's centre, in every shot, while the ball moves.
            # A shot may miss the ball where it touches the window's bottom
            # bar (one blob then), so take a few more than needed.
            offsets = []
            for index in range(3 * MARK_SHOTS):
                shot = screen.screenshot(tmp_path / f"client-{index}.png")
                centres = ball_and_mark_centres(shot, 30)
                if centres is not None:
                    (ball_x, ball_y), (mark_x, mark_y) = centres
                    offsets.append(float(np.hypot(mark_x - ball_x, mark_y - ball_y)))
                if len(offsets) == MARK_SHOTS:
                    break
                time.sleep(0.2)
            assert len(offsets) == MARK_SHOTS, f"a marked ball in {len(offsets)} shots only"
            print(f"\nmark to ball centre, px: {', '.join(f'{o:.2f}' for o in offsets)}")
            assert max(offsets) < MARK_OFFSET_LIMIT_PX, offsets
            assert client.wait(timeout=30) == 0, client.describe()
        finally:
            client.close()
            server.close()


def test_server_window_shows_truth_and_answer(tmp_path: Path) -> None:
    port = free_port()
    with VirtualDisplay() as screen:
        # The window can take seconds to map on a loaded machine (one clean-clone
        # run saw none within 4 s of the first answer): a session long enough
        # to wait 10 s for it.
        server = start_server(
            port, "--duration", "14", "--once", "--display", env=screen.environment()
        )
        client = start_client(port)
        try:
            server.wait_for_output("answered", timeout=30)
            shot = screen.screenshot_when(tmp_path / "server.png", server_window_ready, 10.0)
            assert green_pixels(shot) > 50, "no true centre in the server window"
            assert red_pixels(shot) > 20, "no reported centre in the server window"
            assert client.wait(timeout=30) == 0, client.describe()
            assert server.wait(timeout=30) == 0, server.describe()
        finally:
            client.close()
            server.close()
