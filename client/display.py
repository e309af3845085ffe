"""The client's window: the received video with the detected centre on it.

The process must have imported cv2 before PyAV (see client.py); then HighGUI
works from the event loop's thread. ``waitKey(1)`` pumps the window's events
and costs about a millisecond, which is why the window is opt-in.
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from client.frame_exchange import DetectionResult

WINDOW_TITLE = "ball tracker - client"
MARK_COLOUR = (0, 0, 255)  # BGR red
SUBPIXEL_BITS = 4  # draw at 1/16 px so the mark does not snap to the grid


class ClientDisplay:
    def __init__(self, title: str = WINDOW_TITLE) -> None:
        self._title = title
        self._open = False

    def start(self) -> None:
        cv2.namedWindow(self._title, cv2.WINDOW_AUTOSIZE)
        self._open = True

    def show(self, luma: np.ndarray, detection: Optional[DetectionResult]) -> None:
        if not self._open:
            return
        picture = cv2.cvtColor(luma, cv2.COLOR_GRAY2BGR)
        if detection is not None and detection.x is not None and detection.y is not None:
            scale = 1 << SUBPIXEL_BITS
            centre = (round(detection.x * scale), round(detection.y * scale))
            cv2.drawMarker(
                picture,
                (round(detection.x), round(detection.y)),
                MARK_COLOUR,
                cv2.MARKER_CROSS,
                24,
                2,
            )
            cv2.circle(picture, centre, 6 * scale, MARK_COLOUR, 2, cv2.LINE_AA, SUBPIXEL_BITS)
            cv2.putText(
                picture,
                f"({detection.x:.2f}, {detection.y:.2f})",
                (10, 24),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.7,
                MARK_COLOUR,
                2,
            )
        cv2.imshow(self._title, picture)
        cv2.waitKey(1)

    def close(self) -> None:
        if self._open:
            cv2.destroyWindow(self._title)
            cv2.waitKey(1)
            self._open = False
