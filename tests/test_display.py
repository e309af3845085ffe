"""--display on both programs, under Xvfb, checked on a real screenshot."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.programs import free_port, start_client, start_server
from tests.virtual_display import VirtualDisplay

pytestmark = pytest.mark.timeout(120)


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
            assert client.wait(timeout=30) == 0, client.describe()
        finally:
            client.close()
            server.close()


def test_server_window_shows_truth_and_answer(tmp_path: Path) -> None:
    port = free_port()
    with VirtualDisplay() as screen:
        server = start_server(
            port, "--duration", "6", "--once", "--display", env=screen.environment()
        )
        client = start_client(port)
        try:
            server.wait_for_output("answered", timeout=30)
            shot = screen.screenshot_when(tmp_path / "server.png", server_window_ready, 4.0)
            assert green_pixels(shot) > 50, "no true centre in the server window"
            assert red_pixels(shot) > 20, "no reported centre in the server window"
            assert client.wait(timeout=30) == 0, client.describe()
            assert server.wait(timeout=30) == 0, server.describe()
        finally:
            client.close()
            server.close()
