"""The client's window: the received video with the detected centre on it.

``draw`` is a pure function: a picture of one frame with that frame's own
detection on it. ``ClientDisplay.show`` only puts a picture on screen. The
session pairs each picture with the detection of the same pts (see
``client/session.py``), so the mark sits on the ball, not one frame behind.

The process must have imported cv2 before PyAV (see client.py); then HighGUI
works from the event loop's thread. ``waitKey(1)`` pumps the window's events
and costs about a millisecond, which is why the window is opt-in.
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from client.detection.interface import DetectionResult

WINDOW_TITLE = "ball tracker - client"
MARK_COLOUR = (0, 0, 255)  # BGR red
#: The coordinate text is not red, so that red on screen is the mark alone.
TEXT_COLOUR = (0, 255, 255)  # BGR yellow
SUBPIXEL_BITS = 4  # draw at 1/16 px so the mark does not snap to the grid
CROSS_HALF_LENGTH = 12
CIRCLE_RADIUS = 6


def draw(luma: np.ndarray, detection: Optional[DetectionResult]) -> np.ndarray:
    """A BGR picture of ``luma`` with ``detection``'s centre marked on it.

    The mark (a cross and a small circle, both centred on the detection to
    1/16 px) is red; the coordinates are written in yellow at the top left.
    No detection, or one without a ball, gives the plain picture.
    """
    picture = cv2.cvtColor(luma, cv2.COLOR_GRAY2BGR)
    if detection is None or detection.x is None or detection.y is None:
        return picture
    scale = 1 << SUBPIXEL_BITS
    x, y = detection.x * scale, detection.y * scale
    centre = (round(x), round(y))
    arm = CROSS_HALF_LENGTH * scale
    for start, end in (
        ((round(x - arm), centre[1]), (round(x + arm), centre[1])),
        ((centre[0], round(y - arm)), (centre[0], round(y + arm))),
    ):
        cv2.line(picture, start, end, MARK_COLOUR, 2, cv2.LINE_AA, SUBPIXEL_BITS)
    cv2.circle(picture, centre, CIRCLE_RADIUS * scale, MARK_COLOUR, 2, cv2.LINE_AA, SUBPIXEL_BITS)
    cv2.putText(
        picture,
        f"({detection.x:.2f}, {detection.y:.2f})",
        (10, 24),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.7,
        TEXT_COLOUR,
        2,
    )
    return picture


class ClientDisplay:
    def __init__(self, title: str = WINDOW_TITLE) -> None:
        self._title = title
        self._open = False

    def start(self) -> None:
        cv2.namedWindow(self._title, cv2.WINDOW_AUTOSIZE)
        self._open = True

    def show(self, picture: np.ndarray) -> None:
        """Put a picture (from ``draw``) on screen."""
        if not self._open:
            return
        cv2.imshow(self._title, picture)
        cv2.waitKey(1)

    def close(self) -> None:
        if self._open:
            cv2.destroyWindow(self._title)
            cv2.waitKey(1)
            self._open = False
