"""The picture of a session's tracking: ball, true and reported centres, trails, numbers.

One drawing code for the server's OpenCV window (``server/console/display.py``) and the
browser viewer (``server/console/viewer.py``), so both show the same marks in the same
colours: the true centre as a green ring at the ball's radius with a green dot
in its middle, the client's answer as a red cross. The dot is drawn over the
cross, so when the answer is right (0.01 px off) both stay visible: a red cross
with a green centre.

Everything a picture shows belongs to one frame, the newest answered one: the
session's scene is rendered as that frame was sent (``server/console/backdrop.py``),
the marks are that frame's truth and answer, the numbers are its error and latency.

Pure numpy and OpenCV, no aiortc: tested in microseconds. Marks are drawn with
fixed-point coordinates (OpenCV's ``shift``) so they sit on the exact sub-pixel
position, not on the nearest pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import cv2
import numpy as np

from server.console.backdrop import SceneBackdrop, SceneRecipe
from server.core.ledger import FrameRecord

Colour = tuple[int, int, int]  # BGR

TRUTH_COLOUR: Colour = (0, 255, 0)  # green
ANSWER_COLOUR: Colour = (0, 0, 255)  # red
#: White text with a black outline (``draw_caption``): legible over the ball and any scene.
TEXT_COLOUR: Colour = (255, 255, 255)

SUBPIXEL_BITS = 4
_ONE = 1 << SUBPIXEL_BITS

TRUTH_DOT_RADIUS_PX = 2.0
CROSS_ARM_PX = 8.0
CROSS_THICKNESS_PX = 2

#: Answered frames in each trail, the newest included.
TRAIL_LENGTH = 15
#: Trail points further apart than this many frames are not joined: the ball
#: may have bounced in between, and a straight segment would invent a path.
TRAIL_MAX_GAP_FRAMES = 3
TRUTH_TRAIL_THICKNESS_PX = 3
ANSWER_TRAIL_THICKNESS_PX = 1
#: The oldest trail segment keeps this much of its colour; newer ones more.
TRAIL_FADE_FLOOR = 0.3

FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.5
TEXT_LEFT_PX = 8
LINE_HEIGHT_PX = 20
TEXT_THICKNESS_PX = 1
#: The outline reaches one pixel beyond the text's ink in every direction.
OUTLINE_KERNEL = np.ones((3, 3), np.uint8)

WAITING_TEXT = "waiting for answers"
#: An answer older than this is called out: the picture is frozen on it.
STALE_AFTER_S = 1.0


def _fixed(x: float, y: float) -> tuple[int, int]:
    """A point in OpenCV's fixed-point coordinates (pixel centres at integers)."""
    return round(x * _ONE), round(y * _ONE)


def draw_truth(canvas: np.ndarray, x: float, y: float, radius: float) -> None:
    """The true centre: a ring at the ball's edge and a dot on the centre."""
    centre = _fixed(x, y)
    cv2.circle(canvas, centre, round(radius * _ONE), TRUTH_COLOUR, 1, cv2.LINE_AA, SUBPIXEL_BITS)
    cv2.circle(
        canvas,
        centre,
        round(TRUTH_DOT_RADIUS_PX * _ONE),
        TRUTH_COLOUR,
        -1,
        cv2.LINE_AA,
        SUBPIXEL_BITS,
    )


def draw_answer(canvas: np.ndarray, x: float, y: float) -> None:
    """The client's reported centre: a cross (``cv2.drawMarker`` has no sub-pixel shift)."""
    arm = CROSS_ARM_PX
    for (x0, y0), (x1, y1) in (((x - arm, y), (x + arm, y)), ((x, y - arm), (x, y + arm))):
        cv2.line(
            canvas,
            _fixed(x0, y0),
            _fixed(x1, y1),
            ANSWER_COLOUR,
            CROSS_THICKNESS_PX,
            cv2.LINE_AA,
            SUBPIXEL_BITS,
        )


def draw_record(canvas: np.ndarray, record: FrameRecord, radius: float) -> None:
    """One frame's marks: its answer (if the client found a ball), then its truth."""
    if record.reported_x is not None and record.reported_y is not None:
        draw_answer(canvas, record.reported_x, record.reported_y)
    draw_truth(canvas, record.true_x, record.true_y, radius)


def _faded(colour: Colour, weight: float) -> Colour:
    b, g, r = colour
    return round(b * weight), round(g * weight), round(r * weight)


def _draw_trail(
    canvas: np.ndarray,
    points: Sequence[tuple[int, float, float]],
    colour: Colour,
    thickness: int,
) -> None:
    """Join consecutive (frame index, x, y) points, older segments dimmer."""
    segments = len(points) - 1
    for n in range(segments):
        (index_a, xa, ya), (index_b, xb, yb) = points[n], points[n + 1]
        if index_b - index_a > TRAIL_MAX_GAP_FRAMES:
            continue
        weight = TRAIL_FADE_FLOOR + (1.0 - TRAIL_FADE_FLOOR) * (n + 1) / segments
        cv2.line(
            canvas,
            _fixed(xa, ya),
            _fixed(xb, yb),
            _faded(colour, weight),
            thickness,
            cv2.LINE_AA,
            SUBPIXEL_BITS,
        )


def draw_trails(canvas: np.ndarray, records: Sequence[FrameRecord]) -> None:
    """Where truth and answers went over ``records`` (oldest first).

    The answer trail is thinner and drawn on top, so where the client is right
    it shows as a red line inside a green band.
    """
    truths = [(r.index, r.true_x, r.true_y) for r in records]
    answers = [
        (r.index, r.reported_x, r.reported_y)
        for r in records
        if r.reported_x is not None and r.reported_y is not None
    ]
    _draw_trail(canvas, truths, TRUTH_COLOUR, TRUTH_TRAIL_THICKNESS_PX)
    _draw_trail(canvas, answers, ANSWER_COLOUR, ANSWER_TRAIL_THICKNESS_PX)


def describe(record: FrameRecord) -> str:
    """The frame's numbers as shown on the picture."""
    if record.error_px is None:
        found = "no ball found"
    else:
        found = f"error {record.error_px:.3f} px"
    latency = "" if record.latency_ms is None else f"  latency {record.latency_ms:.1f} ms"
    return f"frame {record.index}  {found}{latency}"


def text_band(lines: int) -> tuple[int, int]:
    """Rows ``[top, bottom)`` that ``lines`` caption lines may touch."""
    return 0, lines * LINE_HEIGHT_PX + LINE_HEIGHT_PX // 2


def draw_caption(canvas: np.ndarray, lines: Sequence[str]) -> None:
    """Text lines at the top left, each outlined in black.

    The outline is the text's own anti-aliased ink widened by a pixel
    (a dilation), darkening what is under it; then the text goes on top in
    white. A thicker black stroke would be one call, but OpenCV advances
    each letter by the stroke's thickness too, so its letters drift off the
    white ones and show as a dark ghost over a bright scene; eight shifted
    copies of the text would cost four times as much.
    """
    top, bottom = text_band(len(lines))
    widest = max(
        (cv2.getTextSize(t, FONT, FONT_SCALE, TEXT_THICKNESS_PX)[0][0] for t in lines), default=0
    )
    band = canvas[top:bottom, : TEXT_LEFT_PX + widest + 2]  # only where ink may fall
    ink = np.zeros(band.shape[:2], np.uint8)
    origins = [(TEXT_LEFT_PX, (n + 1) * LINE_HEIGHT_PX) for n in range(len(lines))]
    for text, (x, y) in zip(lines, origins):
        cv2.putText(ink, text, (x, y - top), FONT, FONT_SCALE, 255, TEXT_THICKNESS_PX, cv2.LINE_AA)
    light = cv2.cvtColor(255 - cv2.dilate(ink, OUTLINE_KERNEL), cv2.COLOR_GRAY2BGR)
    cv2.multiply(band, light, dst=band, scale=1 / 255)
    for text, origin in zip(lines, origins):
        cv2.putText(
            canvas, text, origin, FONT, FONT_SCALE, TEXT_COLOUR, TEXT_THICKNESS_PX, cv2.LINE_AA
        )


def newest(records: Sequence[FrameRecord], count: int) -> list[FrameRecord]:
    """The last ``count`` of ``records`` (oldest first), without copying the rest.

    ``records`` may be a long deque: indexing its middle is O(n), iterating
    from its end is not.
    """
    taken: list[FrameRecord] = []
    for record in reversed(records):
        if len(taken) == count:
            break
        taken.append(record)
    taken.reverse()
    return taken


class SessionAnnotator:
    """Draws successive annotated BGR pictures of one session over its own scene.

    The picture under the marks is the session's scene (``SceneBackdrop``):
    the very pixels the client was sent for that frame, noise, clutter or
    occluder included. One BGR buffer is overwritten by each call: the
    picture returned is valid until the next call.
    """

    def __init__(self, scene: SceneRecipe, title: str, trail_length: int = TRAIL_LENGTH) -> None:
        self._backdrop = SceneBackdrop(scene)
        self.width = self._backdrop.width
        self.height = self._backdrop.height
        self.radius = self._backdrop.radius
        self.title = title
        self.trail_length = trail_length
        self._bgr = np.zeros((self.height, self.width, 3), np.uint8)

    def annotate(
        self,
        answers: Sequence[FrameRecord],
        waiting_index: int,
        answer_age_s: Optional[float] = None,
    ) -> np.ndarray:
        """The picture for the newest of ``answers`` (answered records, newest last).

        With no answers yet, the scene's frame ``waiting_index`` is shown with
        a "waiting for answers" caption. ``answer_age_s``, how long ago the
        newest answered frame was produced, adds a warning once it is stale.
        """
        recent = newest(answers, self.trail_length)
        lines = [self.title]
        if recent:
            record = recent[-1]
            np.copyto(self._bgr, self._backdrop.picture(record.index))
            draw_trails(self._bgr, recent)
            draw_record(self._bgr, record, self.radius)
            lines.append(describe(record))
            if answer_age_s is not None and answer_age_s > STALE_AFTER_S:
                lines.append(f"no newer answer for {answer_age_s:.1f} s")
        else:
            np.copyto(self._bgr, self._backdrop.picture(waiting_index))
            lines.append(WAITING_TEXT)
        draw_caption(self._bgr, lines)
        return self._bgr
