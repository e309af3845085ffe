import math

import pytest

from server.core.scene import BallScene, reflect


def test_reflect_inside_is_identity() -> None:
    assert reflect(5.25, 0.0, 10.0) == 5.25


def test_reflect_bounces_off_both_walls() -> None:
    assert reflect(12.0, 0.0, 10.0) == pytest.approx(8.0)
    assert reflect(-3.0, 0.0, 10.0) == pytest.approx(3.0)
    assert reflect(25.0, 0.0, 10.0) == pytest.approx(5.0)  # two bounces
    assert reflect(20.0, 0.0, 10.0) == pytest.approx(0.0)


def test_reflect_degenerate_span() -> None:
    assert reflect(7.0, 3.0, 3.0) == 3.0


def make_scene(**overrides: float) -> BallScene:
    values = dict(
        width=640,
        height=480,
        radius=20.0,
        speed=300.0,
        start_x=100.25,
        start_y=200.75,
        heading=math.radians(30),
    )
    values.update(overrides)
    return BallScene(**values)  # type: ignore[arg-type]


def test_position_at_zero_is_start() -> None:
    assert make_scene().position(0.0) == (100.25, 200.75)


def test_subpixel_motion_is_exact() -> None:
    scene = make_scene(heading=0.0, speed=1.0)
    assert scene.position(0.3)[0] == pytest.approx(100.55, abs=1e-12)


def test_ball_stays_inside_forever() -> None:
    scene = BallScene.from_seed(640, 480, 20.0, 900.0, seed=3)
    for step in range(20000):
        x, y = scene.position(step / 7.0)
        assert 19.5 - 1e-9 <= x <= 619.5 + 1e-9
        assert 19.5 - 1e-9 <= y <= 459.5 + 1e-9


def test_bounce_off_right_wall_reverses_x() -> None:
    scene = make_scene(start_x=600.0, heading=0.0, speed=100.0)
    # Wall at 619.5 reached after 0.195 s; 0.3 s later the ball is 10.5 px back.
    assert scene.position(0.3)[0] == pytest.approx(619.5 - 10.5)


def test_corner_bounce_reverses_both_axes() -> None:
    scene = make_scene(start_x=609.5, start_y=449.5, heading=math.radians(45), speed=math.sqrt(200))
    x, y = scene.position(2.0)  # 10 px past the corner on each axis... then back
    assert (x, y) == pytest.approx((609.5, 449.5))
    x, y = scene.position(1.0)
    assert (x, y) == pytest.approx((619.5, 459.5))


def test_long_runs_do_not_drift() -> None:
    scene = make_scene(heading=0.0, speed=123.0)
    span = 2 * (619.5 - 19.5)
    period = span / 123.0
    hours = 3600.0 * 10
    cycles = math.floor(hours / period)
    assert scene.position(cycles * period)[0] == pytest.approx(100.25, abs=1e-6)


def test_seed_is_reproducible_and_heading_avoids_axes() -> None:
    for seed in range(200):
        a = BallScene.from_seed(640, 480, 20.0, 300.0, seed)
        assert a == BallScene.from_seed(640, 480, 20.0, 300.0, seed)
        off_axis = math.degrees(a.heading) % 90
        assert 15 <= off_axis <= 75


def test_reflect_short_span_still_bounces() -> None:
    # A span under one pixel is still a span: only an empty one pins the ball.
    assert reflect(0.75, 0.0, 1.0) == 0.75
    assert reflect(1.5, 0.0, 1.0) == pytest.approx(0.5)


def test_seed_headings_cover_every_quadrant_and_the_whole_range() -> None:
    headings = [
        math.degrees(BallScene.from_seed(640, 480, 20.0, 300.0, s).heading) for s in range(200)
    ]
    assert all(0 <= h < 360 for h in headings)
    assert {int(h // 90) for h in headings} == {0, 1, 2, 3}
    off_axis = [h % 90 for h in headings]
    assert min(off_axis) < 16 and max(off_axis) > 74
