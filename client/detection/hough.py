"""A Hough-circle locator (OpenCV's ``HoughCircles``), as a second opinion.

It looks for circle edges rather than bright pixels, so it ignores a flat
bright background and tolerates uneven light, but it lands on whole pixels'
worth of gradient votes: expect tenths of a pixel where the centroid
detector gets thousandths on a clean scene. Load it with
``client.detection.hough:HoughCircleLocator``.
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

Centre = tuple[float, float]


class HoughCircleLocator:
    def __init__(
        self,
        min_radius: int = 5,
        max_radius: int = 80,
        edge_threshold: float = 100.0,
        votes: float = 18.0,
    ) -> None:
        self.min_radius = min_radius
        self.max_radius = max_radius
        self.edge_threshold = edge_threshold
        self.votes = votes
        #: Always searches the whole frame.
        self.used_window = False

    def detect(self, luma: np.ndarray) -> Optional[Centre]:
        # Smoothing first: the accumulator is noisy on a sharp anti-aliased edge.
        smooth = cv2.GaussianBlur(np.ascontiguousarray(luma), (5, 5), 1.5)
        circles = cv2.HoughCircles(
            smooth,
            cv2.HOUGH_GRADIENT,
            dp=1,
            minDist=max(luma.shape),  # one ball: the strongest circle only
            param1=self.edge_threshold,
            param2=self.votes,
            minRadius=self.min_radius,
            maxRadius=self.max_radius,
        )
        if circles is None or not len(circles[0]):
            return None
        x, y = circles[0][0][:2]
        return float(x), float(y)
