import pytest

from server.core.frame_phases import FramePhases


def test_the_first_session_starts_at_once() -> None:
    phases = FramePhases(30)
    assert phases.claim("a", 100.0) == pytest.approx(100.0)


def test_sessions_started_together_are_spread_over_the_interval() -> None:
    phases = FramePhases(25, start_spacing_s=0.0)  # a 40 ms interval; no start spacing
    starts = [phases.claim(f"s{n}", 10.0) for n in range(4)]
    assert starts[0] == pytest.approx(10.0)
    # Each new one takes the middle of the widest gap: half, then quarters.
    offsets = sorted(round((start - 10.0) * 1000, 6) for start in starts)
    assert offsets == [0.0, 10.0, 20.0, 30.0]
    assert all(10.0 <= start < 10.04 for start in starts)


def test_many_sessions_keep_the_smallest_distance_near_the_ideal() -> None:
    phases = FramePhases(30)
    for n in range(18):
        phases.claim(f"s{n}", 5.0 + n * 0.0001)
    used = phases.phases()
    gaps = [b - a for a, b in zip(used, used[1:])] + [used[0] + phases.interval - used[-1]]
    # Bisection gives gaps of interval/32 at worst for 18 sessions (ideal: /18).
    assert min(gaps) >= phases.interval / 32 - 1e-9


def test_a_start_is_never_before_now_and_keeps_the_phase() -> None:
    phases = FramePhases(30)
    phases.claim("a", 1.0)
    start = phases.claim("b", 7.3)
    assert 7.3 <= start < 7.3 + phases.interval
    assert (start - 1.0) % phases.interval == pytest.approx(phases.interval / 2)


def test_a_released_phase_is_reused() -> None:
    phases = FramePhases(30)
    phases.claim("a", 0.0)
    phases.claim("b", 0.0)
    phases.release("b")
    phases.release("unknown")  # ignored
    assert phases.phases() == [0.0]
    phases.claim("c", 0.0)
    assert phases.phases() == pytest.approx([0.0, phases.interval / 2])


def test_claiming_again_keeps_the_same_grid() -> None:
    phases = FramePhases(30)
    phases.claim("a", 0.0)
    first = phases.claim("b", 0.0)
    again = phases.claim("b", 1.0)
    assert (again - first) % phases.interval == pytest.approx(0.0, abs=1e-9) or (
        again - first
    ) % phases.interval == pytest.approx(phases.interval)
    assert len(phases.phases()) == 2


def test_a_crowd_starts_one_stream_per_interval_each_on_its_own_phase() -> None:
    phases = FramePhases(25)  # a 40 ms interval, and first frames 40 ms apart
    starts = [phases.claim(f"s{n}", 10.0) for n in range(6)]
    assert starts[0] == pytest.approx(10.0)
    # Each waits for the spacing, then less than one interval for its phase.
    assert all(0.040 - 1e-9 <= b - a < 0.080 for a, b in zip(starts, starts[1:]))
    # Each start lies on a claimed phase's grid, and the phases are spread
    # as without spacing: six distinct ones.
    for start in starts:
        offsets = [(start - phase) % 0.040 for phase in phases.phases()]
        assert min(min(offset, 0.040 - offset) for offset in offsets) < 1e-9
    assert len(set(round(p, 9) for p in phases.phases())) == 6


def test_a_session_arriving_alone_does_not_wait_for_the_spacing() -> None:
    phases = FramePhases(30)
    phases.claim("a", 1.0)
    start = phases.claim("b", 5.0)  # long after a's start
    assert 5.0 <= start < 5.0 + phases.interval


def test_the_spacing_can_be_set_and_must_not_be_negative() -> None:
    phases = FramePhases(30, start_spacing_s=0.1)
    first, second = phases.claim("a", 0.0), phases.claim("b", 0.0)
    assert second - first >= 0.1 - 1e-9
    with pytest.raises(ValueError):
        FramePhases(30, start_spacing_s=-0.01)


def test_a_frame_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FramePhases(0)
