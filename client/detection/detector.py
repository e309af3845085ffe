"""Sub-pixel centre of a bright ball on a dark luma plane.

The server draws the ball with a one-pixel linear coverage ramp,
``clip(radius + 0.5 - distance, 0, 1) * 255``, pixel centres at integer
coordinates. Two estimators follow from that profile:

- **Weighted centroid.** The profile is radially symmetric about the true
  centre, so the intensity-weighted centroid of the whole ball is the centre.
  Subtracting a constant ``floor`` first keeps the profile symmetric while
  zeroing codec ringing and background noise that would otherwise pull the
  centroid towards the middle of the box.
- **Ramp circle fit**, for a ball cut by the frame edge, where the centroid of
  what is left is biased inwards. Every partly covered pixel at ``p`` with
  normalised value ``c`` satisfies ``|p - centre| = R - W * c`` (``W`` = 1 px
  for the renderer, wider after codec blur): each edge pixel is a sub-pixel
  distance measurement, so no edge has to be located first. Squared, the
  equation is linear in five unknowns, which gives a start with no guess;
  a few robust Gauss-Newton steps on the unsquared distances then finish the
  fit. Leaving ``W`` free makes it indifferent to blur and to the contrast.

Detection itself is a threshold plus ``cv2.findContours`` (largest external
contour), first inside a window around the previous ball, then over the whole
frame if the window has nothing or cuts the blob.
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

Rect = tuple[int, int, int, int]  # left, top, right, bottom: half-open, frame pixels
Contour = np.ndarray  # (N, 1, 2) int32 points, frame coordinates

#: Fewer edge pixels than this cannot pin a circle (three unknowns) down.
_MIN_FIT_POINTS = 5
#: From this many edge pixels on, the ramp width is fitted rather than assumed.
_FREE_WIDTH_POINTS = 24
#: Gauss-Newton iterations at most; it usually converges in three or four.
_REFINE_ITERATIONS = 8
#: Per-pixel distance noise assumed even on a clean frame (quantisation).
_NOISE_FLOOR_PX = 0.05


class CentroidDetector:
    """Finds the ball in successive luma planes, remembering where it was.

    ``threshold`` separates the ball from the background (it only decides
    *which* pixels belong to the blob, never the sub-pixel position); ``floor``
    is removed from every intensity before weighting; ``pad`` is how far the
    measurement box and mask reach beyond the thresholded blob, enough to hold
    the anti-aliased (or blurred) edge; ``min_area`` rejects noise specks when
    there is no ball; ``margin`` is the slack, in pixels, added to the search
    window on top of two radii and the last frame-to-frame motion.
    """

    def __init__(
        self,
        threshold: int = 96,
        floor: int = 28,
        pad: int = 3,
        min_area: float = 3.0,
        margin: float = 8.0,
    ) -> None:
        if not 0 <= floor < threshold < 255:
            raise ValueError("need 0 <= floor < threshold < 255")
        if pad < 1:
            raise ValueError("pad must be at least 1 pixel")
        self.threshold = threshold
        self.floor = floor
        self.pad = pad
        self.min_area = min_area
        self.margin = margin
        # Reused threshold output: a full-frame array per call would cost more
        # than the detection itself at 1080p.
        self._binary: Optional[np.ndarray] = None
        self._last_rect: Optional[Rect] = None
        self._last_area = 0.0
        self._last_centre: Optional[tuple[float, float]] = None
        self._motion = 0.0
        #: True when the last call found the ball inside the tracking window,
        #: False when it searched (or fell back to) the full frame.
        self.used_window = False
        #: "centroid", "circle" or None (no ball) for the last call.
        self.method: Optional[str] = None

    def reset(self) -> None:
        """Forget the previous position: the next call searches the full frame."""
        self._last_rect = None
        self._last_area = 0.0
        self._last_centre = None
        self._motion = 0.0
        self.used_window = False
        self.method = None

    def detect(self, luma: np.ndarray) -> Optional[tuple[float, float]]:
        """The ball's centre ``(x, y)`` in pixel coordinates, or None.

        ``luma`` is a 2-D uint8 array; a view with padded rows (a decoder's
        line size) is used as is, never copied.
        """
        if luma.ndim != 2 or luma.dtype != np.uint8:
            raise ValueError(f"expected a 2-D uint8 luma plane, got {luma.dtype} {luma.shape}")
        height, width = luma.shape
        binary = self._binary_buffer(height, width)
        self.used_window = False
        self.method = None

        blob = None
        window = self._window(width, height)
        if window is not None:
            blob = self._search(luma, binary, window, in_window=True)
            self.used_window = blob is not None
        if blob is None:
            blob = self._search(luma, binary, (0, 0, width, height), in_window=False)
        if blob is None:
            self.reset()
            return None

        contour, rect, area, crowded = blob
        centre = self._measure(luma, contour, rect, crowded)
        if self._last_centre is not None:
            self._motion = float(
                np.hypot(centre[0] - self._last_centre[0], centre[1] - self._last_centre[1])
            )
        self._last_centre = centre
        self._last_rect = rect
        self._last_area = area
        return centre

    # -- finding the blob --------------------------------------------------

    def _binary_buffer(self, height: int, width: int) -> np.ndarray:
        if self._binary is None or self._binary.shape != (height, width):
            self._binary = np.empty((height, width), dtype=np.uint8)
            self.reset()  # a new frame size makes the old window meaningless
        return self._binary

    def _window(self, width: int, height: int) -> Optional[Rect]:
        if self._last_rect is None:
            return None
        left, top, right, bottom = self._last_rect
        radius = max(right - left, bottom - top) / 2.0
        grow = int(np.ceil(2.0 * radius + self._motion + self.margin))
        window = (
            max(left - grow, 0),
            max(top - grow, 0),
            min(right + grow, width),
            min(bottom + grow, height),
        )
        if window == (0, 0, width, height):
            return None  # the window is the frame: search once, not twice
        return window

    def _search(
        self, luma: np.ndarray, binary: np.ndarray, region: Rect, in_window: bool
    ) -> Optional[tuple[Contour, Rect, float, bool]]:
        """The largest blob in ``region``: contour, bounding rect, area, and
        whether anything else might share its measurement box."""
        x0, y0, x1, y1 = region
        view = binary[y0:y1, x0:x1]
        cv2.threshold(luma[y0:y1, x0:x1], self.threshold, 255, cv2.THRESH_BINARY, dst=view)
        contours, _ = cv2.findContours(
            view, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0)
        )
        if not contours:
            return None
        if len(contours) == 1:
            best = contours[0]
            best_area = cv2.contourArea(best)
        else:
            areas = [cv2.contourArea(c) for c in contours]
            index = int(np.argmax(areas))
            best, best_area = contours[index], areas[index]
        if best_area < self.min_area:
            return None
        left, top, w, h = cv2.boundingRect(best)
        rect = (left, top, left + w, top + h)
        height, width = luma.shape
        if in_window:
            # A blob touching an inner window edge may continue outside it;
            # a much smaller blob than last time is likely a speck while the
            # ball has left the window. Either way the full frame decides.
            cut = (
                (left == x0 and x0 > 0)
                or (top == y0 and y0 > 0)
                or (rect[2] == x1 and x1 < width)
                or (rect[3] == y1 and y1 < height)
            )
            if cut or best_area < 0.25 * self._last_area:
                return None
        pad = self.pad
        crowded = len(contours) > 1 or not (
            max(left - pad, 0) >= x0
            and max(top - pad, 0) >= y0
            and min(rect[2] + pad, width) <= x1
            and min(rect[3] + pad, height) <= y1
        )
        return best, rect, best_area, crowded

    # -- measuring the centre ----------------------------------------------

    def _measure(
        self, luma: np.ndarray, contour: Contour, rect: Rect, crowded: bool
    ) -> tuple[float, float]:
        height, width = luma.shape
        pad = self.pad
        x0, y0 = max(rect[0] - pad, 0), max(rect[1] - pad, 0)
        x1, y1 = min(rect[2] + pad, width), min(rect[3] + pad, height)
        roi = luma[y0:y1, x0:x1]
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * pad + 1, 2 * pad + 1))

        # When other blobs may share the box, only the blob grown by ``pad``
        # counts: its own anti-aliased edge is in, the others are out. A lone
        # blob skips the mask: drawing it costs more than all the rest.
        mask: Optional[np.ndarray] = None
        if crowded:
            mask = np.zeros(roi.shape, dtype=np.uint8)
            cv2.drawContours(mask, (contour,), -1, 255, cv2.FILLED, offset=(-x0, -y0))
            cv2.dilate(mask, kernel, dst=mask)
            weights = np.zeros(roi.shape, dtype=np.uint8)
            cv2.subtract(roi, self.floor, dst=weights, mask=mask)  # type: ignore[call-overload]
        else:
            weights = cv2.subtract(roi, self.floor)  # type: ignore[call-overload]

        if _touches_frame_edge(weights, x0, y0, x1, y1, width, height):
            # The edge band: pixels within ``pad`` of a background pixel.
            # Unlike a band around the contour, it leaves out the ball's
            # interior along the frame edge, where one noisy pixel would pose
            # as an edge point on the wrong side of the ball.
            band = cv2.threshold(roi, self.threshold, 255, cv2.THRESH_BINARY_INV)[1]
            cv2.dilate(band, kernel, dst=band)
            if mask is not None:
                cv2.bitwise_and(band, mask, dst=band)
            centre = self._fit_circle(roi, band, rect, x0, y0, x1, y1, width, height)
            if centre is not None:
                self.method = "circle"
                return centre

        moments = cv2.moments(weights)
        self.method = "centroid"
        return (x0 + moments["m10"] / moments["m00"], y0 + moments["m01"] / moments["m00"])

    def _edge_points(
        self,
        roi: np.ndarray,
        band: np.ndarray,
        top_level: float,
        box: Rect,
        width: int,
        height: int,
    ) -> Optional[np.ndarray]:
        """Pixel coordinates ``(N, 2)`` in ``roi`` of the partly covered pixels.

        Saturated pixels (inside the ball, or background) only say "closer or
        farther than the edge", so they carry no distance. Pixels within
        ``floor`` of either level are left out too, since noise alone puts
        pixels there; a tiny arc left with too few points gets half that
        margin. The frame's outermost rows and columns go while there are
        enough others: codecs treat picture borders differently.
        """
        x0, y0, x1, y1 = box
        on_frame_edge = x0 == 0 or y0 == 0 or x1 == width or y1 == height
        for margin in (self.floor, self.floor // 2):
            partial = cv2.inRange(roi, margin + 1, int(top_level) - margin - 1)
            cv2.bitwise_and(partial, band, dst=partial)
            candidates = [partial]
            if on_frame_edge:
                inner = partial.copy()
                if x0 == 0:
                    inner[:, 0] = 0
                if y0 == 0:
                    inner[0, :] = 0
                if x1 == width:
                    inner[:, -1] = 0
                if y1 == height:
                    inner[-1, :] = 0
                candidates.insert(0, inner)
            for candidate in candidates:
                points = cv2.findNonZero(candidate)
                if points is not None and len(points) >= _MIN_FIT_POINTS:
                    return points.reshape(-1, 2)  # (N, 1, 2) in OpenCV 4, (N, 2) in 5
        return None

    def _fit_circle(
        self,
        roi: np.ndarray,
        band: np.ndarray,
        rect: Rect,
        x0: int,
        y0: int,
        x1: int,
        y1: int,
        width: int,
        height: int,
    ) -> Optional[tuple[float, float]]:
        top_level = float(cv2.minMaxLoc(roi, band)[1])
        if top_level <= 2 * self.floor:
            return None
        points = self._edge_points(roi, band, top_level, (x0, y0, x1, y1), width, height)
        if points is None:
            return None
        xs = points[:, 0]
        ys = points[:, 1]
        coverage = roi[ys, xs].astype(np.float64) / top_level
        # Centre and scale the coordinates so the normal equations are well
        # conditioned whatever the ball's size and position.
        cx0, cy0 = (roi.shape[1] - 1) / 2.0, (roi.shape[0] - 1) / 2.0
        scale = max(roi.shape) / 2.0
        u = (xs - cx0) / scale
        v = (ys - cy0) / scale
        one_pixel = 1.0 / scale
        # A short arc cannot separate the edge width from the radius, so it
        # keeps the renderer's one-pixel ramp; a longer one fits the width
        # too, which absorbs codec blur.
        free_width = xs.size >= _FREE_WIDTH_POINTS
        start = _algebraic_circle(u, v, coverage, None if free_width else one_pixel)
        if start is None and free_width:
            free_width = False
            start = _algebraic_circle(u, v, coverage, one_pixel)
        if start is None:
            return None
        params = _refine_circle(
            u, v, coverage, start, one_pixel, free_width, _NOISE_FLOOR_PX * one_pixel
        )
        if params is None:
            return None
        centre_u, centre_v, radius = params
        x = x0 + cx0 + centre_u * scale
        y = y0 + cy0 + centre_v * scale
        radius *= scale
        # A sliver of a ball in a corner can let the fit run off to a huge or
        # far-away circle; the blob it came from bounds what is plausible.
        left, top, right, bottom = rect
        reach = radius + 1.0
        if not (
            0.5 <= radius <= 4.0 * max(right - left, bottom - top) + 4.0
            and left - reach <= x <= right + reach
            and top - reach <= y <= bottom + reach
        ):
            return None
        return (float(x), float(y))


def _touches_frame_edge(
    weights: np.ndarray, x0: int, y0: int, x1: int, y1: int, width: int, height: int
) -> bool:
    """Whether any of the ball's weight sits on the frame's outermost pixels."""
    return bool(
        (x0 == 0 and weights[:, 0].any())
        or (y0 == 0 and weights[0, :].any())
        or (x1 == width and weights[:, -1].any())
        or (y1 == height and weights[-1, :].any())
    )


def _algebraic_circle(
    u: np.ndarray, v: np.ndarray, c: np.ndarray, ramp: Optional[float]
) -> Optional[tuple[float, float]]:
    """A starting centre from ``(u-cu)^2 + (v-cv)^2 = (R - W c)^2``, linearised.

    With the ramp width ``W`` free the squared equation is linear in
    ``cu, cv, K = R^2 - cu^2 - cv^2, P = 2RW, Q = W^2``:
    ``u^2 + v^2 = 2u cu + 2v cv + K - P c + Q c^2``. With ``W = ramp`` given,
    ``u^2 + v^2 - (W c)^2 = 2u cu + 2v cv + K - 2R (W c)``. One solve, no
    start needed; but ``K`` and ``R`` are not tied together and squaring
    weights points unevenly, so noise and outliers move it: only a start.
    """
    target = u * u + v * v
    design = np.empty((u.size, 5 if ramp is None else 4))
    design[:, 0] = 2.0 * u
    design[:, 1] = 2.0 * v
    design[:, 2] = 1.0
    if ramp is None:
        design[:, 3] = -c
        design[:, 4] = c * c
    else:
        wc = ramp * c
        target -= wc * wc
        design[:, 3] = -2.0 * wc
    params = _solve(design.T @ design, design.T @ target)
    if params is None:
        return None
    return float(params[0]), float(params[1])


def _refine_circle(
    u: np.ndarray,
    v: np.ndarray,
    c: np.ndarray,
    start: tuple[float, float],
    ramp: float,
    free_width: bool,
    noise_floor: float,
) -> Optional[tuple[float, float, float]]:
    """Geometric fit of ``|p - centre| = R - W c`` by robust Gauss-Newton.

    Returns the centre and ``R``, the radius of the zero-coverage circle.

    Tukey weights make a stray pixel in the band (a noise spike, a speck, a
    ringing lobe) lose its vote instead of dragging the circle;
    ``noise_floor`` keeps the weight scale from collapsing on clean frames.
    """
    cu, cv = start
    w = ramp
    r = _median(np.hypot(u - cu, v - cv) + w * c)
    columns = 4 if free_width else 3
    for _ in range(_REFINE_ITERATIONS):
        dx = u - cu
        dy = v - cv
        dist = np.maximum(np.hypot(dx, dy), 1e-12)
        residual = dist - (r - w * c)
        sigma = max(1.4826 * _median(np.abs(residual)), noise_floor)
        t = residual / (4.685 * sigma)
        weight = np.clip(1.0 - t * t, 0.0, None) ** 2
        if np.count_nonzero(weight) < _MIN_FIT_POINTS:
            return None
        jacobian = np.empty((u.size, columns))
        jacobian[:, 0] = -dx / dist
        jacobian[:, 1] = -dy / dist
        jacobian[:, 2] = -1.0
        if free_width:
            jacobian[:, 3] = c
        weighted = jacobian * weight[:, None]
        step = _solve(weighted.T @ jacobian, -(weighted.T @ residual))
        if step is None:
            return None
        cu += step[0]
        cv += step[1]
        r += step[2]
        if free_width:
            w += step[3]
        if abs(step[0]) + abs(step[1]) < 1e-4 * ramp:
            break
    if not np.all(np.isfinite((cu, cv, r))) or r <= 0.0:
        return None
    return cu, cv, r


def _median(values: np.ndarray) -> float:
    """The (upper) median; ``np.median`` costs several times more for 100 values."""
    middle = values.size // 2
    return float(np.partition(values, middle)[middle])


def _solve(matrix: np.ndarray, rhs: np.ndarray) -> Optional[np.ndarray]:
    """Solve a small normal-equation system; None if singular or not finite.

    ``cv2.solve`` because ``np.linalg.solve`` spends more on its checks than
    on a 5 x 5 solve.
    """
    ok, solution = cv2.solve(matrix, rhs.reshape(-1, 1), flags=cv2.DECOMP_LU)
    if not ok or not np.all(np.isfinite(solution)):
        return None
    return solution.ravel()
