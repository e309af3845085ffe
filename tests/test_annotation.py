"""The annotated picture (server/console/annotation.py): marks, trails and text where they belong."""

from __future__ import annotations

from collections import deque
from typing import Optional

import cv2
import numpy as np
import pytest

from server.console.annotation import (
    ANSWER_COLOUR,
    STALE_AFTER_S,
    TRAIL_LENGTH,
    TRUTH_COLOUR,
    WAITING_TEXT,
    SessionAnnotator,
    describe,
    draw_answer,
    draw_truth,
    newest,
    text_band,
)
from server.console.backdrop import SceneRecipe
from server.core.ledger import FrameRecord
from server.core.scene import BallScene
from server.core.scenes import SCENES, make_scene

WIDTH, HEIGHT, RADIUS, FPS = 320, 240, 20.0, 30.0
#: The ball starts at (160, 150) and moves 3 px a frame to the right.
MOTION = BallScene(WIDTH, HEIGHT, RADIUS, 90.0, 160.0, 150.0, 0.0)


def record(
    index: int,
    truth: tuple[float, float],
    reported: Optional[tuple[float, float]] = None,
    latency_ms: float = 7.06,
) -> FrameRecord:
    entry = FrameRecord(index, index * 3000, truth[0], truth[1], 0.0, True, latency_ms=latency_ms)
    if reported is not None:
        entry.reported_x, entry.reported_y = reported
        entry.error_px = float(np.hypot(reported[0] - truth[0], reported[1] - truth[1]))
    return entry


def annotator(scene: str = "classic") -> SessionAnnotator:
    return SessionAnnotator(SceneRecipe(scene, MOTION, FPS, 1), "session-test")


def ball(index: int) -> tuple[float, float]:
    """Where the scene has the ball in frame ``index``."""
    return MOTION.position(index / FPS)


def pixel(image: np.ndarray, point: tuple[float, float]) -> tuple[int, int, int]:
    x, y = point
    b, g, r = image[round(y), round(x)]
    return int(b), int(g), int(r)


def colour_weight(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """How much of ``colour`` each pixel shows over the grey picture beneath it."""
    channel = int(np.argmax(colour))
    others = [c for c in range(3) if c != channel]
    own = image[:, :, channel].astype(np.float64)
    return np.clip(own - image[:, :, others].max(axis=2), 0, None)


def centroid(weight: np.ndarray, around: tuple[float, float], reach: int) -> tuple[float, float]:
    """Weighted centre (x, y) of ``weight`` in a square around a point."""
    x, y = round(around[0]), round(around[1])
    window = weight[y - reach : y + reach + 1, x - reach : x + reach + 1]
    rows, cols = np.indices(window.shape)
    total = window.sum()
    return x - reach + (cols * window).sum() / total, y - reach + (rows * window).sum() / total


def coloured(image: np.ndarray) -> np.ndarray:
    """Mask of pixels that are not grey (marks and trails, not ball or text)."""
    return (image.max(axis=2).astype(int) - image.min(axis=2).astype(int)) > 40


# ---------------------------------------------------------------- marks


def test_truth_and_answer_marks_sit_at_their_pixels() -> None:
    truth, reported = ball(7), (250.0, 70.0)
    image = annotator().annotate([record(7, truth, reported)], 0)
    assert pixel(image, truth) == TRUTH_COLOUR  # the dot, on the ball
    assert pixel(image, reported) == ANSWER_COLOUR  # the cross's centre
    assert pixel(image, (reported[0] + 6, reported[1])) == ANSWER_COLOUR  # an arm
    assert pixel(image, (reported[0], reported[1] - 6)) == ANSWER_COLOUR
    # The ring lies on the ball's edge.
    ring = colour_weight(image, TRUTH_COLOUR)
    assert ring[round(truth[1]), round(truth[0] + RADIUS)] > 150
    assert ring[round(truth[1] - RADIUS), round(truth[0])] > 150
    # The ball itself, white, is drawn where the scene had it in that frame.
    assert pixel(image, (truth[0], truth[1] + 12)) == (255, 255, 255)
    assert pixel(image, (truth[0] + 12, truth[1])) == (255, 255, 255)


@pytest.mark.parametrize("offset", [0.0, 0.25, 0.5, 0.8])
def test_marks_are_drawn_at_sub_pixel_positions(offset: float) -> None:
    truth = (120.0 + offset, 140.0 - offset)
    reported = (220.0 + offset, 90.0 + offset)
    image = annotator().annotate([record(1, truth, reported)], 0)
    cross = centroid(colour_weight(image, ANSWER_COLOUR), reported, 10)
    assert cross == pytest.approx(reported, abs=0.1)
    # The dot's centre, inside the ring (radius 20), on the white ball.
    dot = centroid(colour_weight(image, TRUTH_COLOUR), truth, 4)
    assert dot == pytest.approx(truth, abs=0.1)


def test_a_right_answer_leaves_both_marks_visible() -> None:
    truth = ball(3)
    image = annotator().annotate([record(3, truth, (truth[0] + 0.004, truth[1] + 0.003))], 0)
    assert pixel(image, truth) == TRUTH_COLOUR  # the dot is drawn over the cross
    assert pixel(image, (truth[0] + 6, truth[1])) == ANSWER_COLOUR


def test_an_answer_without_a_ball_shows_the_truth_only() -> None:
    image = annotator().annotate([record(3, (160.0, 150.0), None)], 0)
    assert colour_weight(image, ANSWER_COLOUR).max() == 0
    assert pixel(image, (160.0, 150.0)) == TRUTH_COLOUR
    assert describe(record(3, (160.0, 150.0), None)) == "frame 3  no ball found  latency 7.1 ms"


def test_draw_functions_mark_a_blank_canvas() -> None:
    canvas = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    draw_truth(canvas, 50.5, 60.5, 10.0)
    draw_answer(canvas, 200.25, 100.75)
    assert centroid(colour_weight(canvas, ANSWER_COLOUR), (200.25, 100.75), 10) == pytest.approx(
        (200.25, 100.75), abs=0.1
    )
    assert centroid(colour_weight(canvas, TRUTH_COLOUR), (50.5, 60.5), 12) == pytest.approx(
        (50.5, 60.5), abs=0.1
    )


# ---------------------------------------------------------------- trails


def moving(count: int, start: int = 0, reported_dy: float = 0.0) -> list[FrameRecord]:
    """Frames of a ball moving right 8 px a frame along y = 180."""
    return [
        record(i, (40.0 + 8 * i, 180.0), (40.0 + 8 * i, 180.0 + reported_dy))
        for i in range(start, start + count)
    ]


def test_trails_follow_the_last_answered_frames() -> None:
    records = moving(TRAIL_LENGTH + 10, reported_dy=30.0)
    image = annotator().annotate(records, 0)
    recent = records[-TRAIL_LENGTH:]
    green, red = colour_weight(image, TRUTH_COLOUR), colour_weight(image, ANSWER_COLOUR)
    # Between two of the trail's older frames: both trails, each on its own path.
    older = (recent[2].true_x + 4, 180.0)
    assert green[180, round(older[0])] > 50
    assert red[210, round(older[0])] > 50
    # Before the trail's first frame: nothing.
    before = round(recent[0].true_x - 4)
    assert green[180, before] == 0 and red[210, before] == 0
    # Newer segments are brighter than older ones.
    newer = round(recent[-3].true_x + 4)
    assert image[180, newer, 1] > image[180, round(older[0]), 1]


def test_trail_skips_gaps_where_frames_went_unanswered() -> None:
    records = moving(3, reported_dy=30) + moving(3, start=10, reported_dy=30)  # 3..9 unanswered
    image = annotator().annotate(records, 0)
    green = colour_weight(image, TRUTH_COLOUR)
    assert green[180, round(40 + 8 * 1 + 4)] > 50  # within the first run: joined
    assert green[180, round(40 + 8 * 6)] == 0  # across the gap: not joined


def test_trail_of_answers_lies_on_the_truth_trail_when_answers_are_right() -> None:
    image = annotator().annotate(moving(TRAIL_LENGTH), 0)
    x = round(40.0 + 8 * 3 + 4)
    assert image[180, x, 2] > 100  # the answer trail, on top
    assert image[179, x, 1] > 100 or image[181, x, 1] > 100  # the truth trail around it


# ---------------------------------------------------------------- text


def text_pixels(image: np.ndarray) -> np.ndarray:
    return (image > 200).all(axis=2)


def test_caption_is_drawn_in_its_band_and_nowhere_else() -> None:
    truth = ball(5)
    first = annotator().annotate([record(5, truth, (201.0, 181.0))], 0).copy()
    white = text_pixels(first)
    top, bottom = text_band(2)
    assert white[top:bottom].sum() > 200
    # Below the band the only white is the ball.
    ball_rows = np.zeros_like(white)
    ball_rows[round(truth[1] - RADIUS) - 1 : round(truth[1] + RADIUS) + 2, :] = True
    assert not (white[bottom:] & ~ball_rows[bottom:]).any()
    # Different numbers, different text.
    second = annotator().annotate([record(5, truth, (203.0, 181.0))], 0)
    assert (text_pixels(second)[top:bottom] != white[top:bottom]).any()


def test_describe_shows_error_and_latency_to_their_precision() -> None:
    entry = record(42, (100.0, 100.0), (100.003, 100.004), latency_ms=7.149)
    assert describe(entry) == "frame 42  error 0.005 px  latency 7.1 ms"


def test_a_stale_answer_adds_a_line() -> None:
    answers = [record(5, (200.0, 180.0), (201.0, 181.0))]
    fresh = annotator().annotate(answers, 0, answer_age_s=0.1).copy()
    stale = annotator().annotate(answers, 0, answer_age_s=STALE_AFTER_S + 2)
    two, three = text_band(2)[1], text_band(3)[1]
    assert not text_pixels(fresh)[two:three].any()
    assert text_pixels(stale)[two:three].sum() > 50


# ---------------------------------------------------------------- no answer yet


def test_before_any_answer_the_scene_is_shown_waiting() -> None:
    image = annotator().annotate(deque(), 11)
    assert not coloured(image).any(), "no marks without an answer"
    luma = image[:, :, 0].astype(np.float64)
    luma[: text_band(2)[1]] = 0  # the caption
    rows, cols = np.indices(luma.shape)
    x, y = ball(11)  # (193, 150): between pixels
    assert (cols * luma).sum() / luma.sum() == pytest.approx(x, abs=0.02)
    assert (rows * luma).sum() / luma.sum() == pytest.approx(y, abs=0.02)
    assert text_pixels(image)[: text_band(2)[1]].sum() > 100
    assert WAITING_TEXT == "waiting for answers"


def test_the_previous_ball_is_cleared() -> None:
    drawing = annotator()
    drawing.annotate([], 0)
    image = drawing.annotate([], 30)
    assert pixel(image, ball(0)) == (0, 0, 0)
    assert pixel(image, ball(30)) == (255, 255, 255)


def test_newest_takes_the_tail_of_a_deque_oldest_first() -> None:
    records = deque(moving(40), maxlen=900)
    assert [r.index for r in newest(records, 3)] == [37, 38, 39]
    assert [r.index for r in newest(deque(moving(2)), 5)] == [0, 1]
    assert newest(deque(), 5) == []


# ---------------------------------------------------------------- the session's scene


@pytest.mark.parametrize("name", sorted(SCENES))
def test_the_marks_are_drawn_over_the_session_s_own_scene(name: str) -> None:
    """Away from marks and caption, the picture is the scene's frame as sent."""
    index = 12
    truth = ball(index)
    image = annotator(name).annotate([record(index, truth, (truth[0] + 1, truth[1]))], 0)
    y, u, v = make_scene(name, MOTION, FPS, 1).render(index)
    i420 = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(HEIGHT * 3 // 2, WIDTH)
    sent = cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)
    untouched = np.ones((HEIGHT, WIDTH), bool)
    untouched[: text_band(2)[1]] = False
    x0, y0 = round(truth[0]), round(truth[1])
    reach = round(RADIUS) + 4
    untouched[y0 - reach : y0 + reach, x0 - reach : x0 + reach] = False
    assert np.array_equal(image[untouched], sent[untouched])


def test_an_occluded_ball_is_shown_behind_the_bar() -> None:
    # A frame where the ball is wholly behind the bar: hidden, as the client saw it.
    occlusion = make_scene("occlusion", MOTION, FPS, 1)
    hidden = next(i for i in range(0, 90) if occlusion.truth(i).hidden)
    truth = ball(hidden)
    image = annotator("occlusion").annotate([record(hidden, truth, None)], 0)
    below_dot = image[round(truth[1]) + 8, round(truth[0])]
    assert below_dot.max() < 90, below_dot  # the bar's grey, not the white ball
