"""The predictive locator aims where the ball will be when its answer lands."""

import math

from client.detection.detector import CentroidDetector
from client.detection.kalman import RESET_AFTER_S, ConstantVelocityPredictor
from server.core.renderer import render_luma
from server.core.scene import BallScene

FPS = 30.0
LEAD_S = 0.05


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_it_beats_the_centroid_detector_on_error_at_arrival() -> None:
    # 300 px/s along a diagonal, no wall within the run.
    scene = BallScene(640, 480, 15.0, 300.0, 100.0, 100.0, math.radians(30))
    clock = Clock()
    predictor = ConstantVelocityPredictor(lead_s=LEAD_S, clock=clock)
    centroid = CentroidDetector()
    predicted, plain = [], []
    for index in range(30):
        clock.now = index / FPS
        luma = render_luma(640, 480, *scene.position(index / FPS), 15.0)
        ahead = scene.position(index / FPS + LEAD_S)  # where the ball is on arrival
        guess, measured = predictor.detect(luma), centroid.detect(luma)
        assert guess is not None and measured is not None
        if index >= 10:  # once the filter has the speed
            predicted.append(math.dist(guess, ahead))
            plain.append(math.dist(measured, ahead))
    assert max(plain) > 14.0  # 300 px/s x 50 ms = 15 px behind
    assert max(predicted) < 1.0


def test_no_lead_is_a_filtered_centroid_and_no_ball_is_none() -> None:
    clock = Clock()
    predictor = ConstantVelocityPredictor(clock=clock)
    assert predictor.detect(render_luma(320, 240, 100.0, 80.0, 10.0)) is not None
    clock.now = 1 / FPS
    found = predictor.detect(render_luma(320, 240, 110.0, 80.0, 10.0))
    assert found is not None and abs(found[0] - 110.0) < 0.5
    clock.now = 2 / FPS
    blank = render_luma(320, 240, -100.0, -100.0, 10.0)
    assert predictor.detect(blank) is None


def test_a_ball_that_comes_back_elsewhere_starts_afresh() -> None:
    clock = Clock()
    predictor = ConstantVelocityPredictor(lead_s=LEAD_S, clock=clock)
    for index in range(10):
        clock.now = index / FPS
        predictor.detect(render_luma(320, 240, 50.0 + 10 * index, 100.0, 10.0))
    clock.now += RESET_AFTER_S + 0.1
    assert predictor.detect(render_luma(320, 240, -50.0, -50.0, 10.0)) is None
    clock.now += 0.05
    back = predictor.detect(render_luma(320, 240, 200.0, 200.0, 10.0))
    assert back is not None and math.dist(back, (200.0, 200.0)) < 0.5  # no old velocity


def test_the_lead_follows_the_servers_latency() -> None:
    predictor = ConstantVelocityPredictor()
    predictor.set_lead(0.042)
    assert predictor.lead_s == 0.042
    predictor.set_lead(-1.0)
    assert predictor.lead_s == 0.0


def test_frame_times_from_the_pts_win_over_the_clock() -> None:
    # Frames detected in bursts (network jitter): the clock says nothing
    # useful, the capture times say 1/30 s apart.
    scene = BallScene(640, 480, 15.0, 300.0, 100.0, 240.0, 0.0)
    clock = Clock()
    predictor = ConstantVelocityPredictor(lead_s=LEAD_S, clock=clock)
    errors = []
    for index in range(30):
        clock.now = (index // 3) * 0.1  # three frames at once
        predictor.set_frame_time(1000.0 + index / FPS)
        guess = predictor.detect(render_luma(640, 480, *scene.position(index / FPS), 15.0))
        assert guess is not None
        errors.append(math.dist(guess, scene.position(index / FPS + LEAD_S)))
    assert max(errors[10:]) < 1.0
