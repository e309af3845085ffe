import pytest

from server.ledger import FrameLedger, frame_pts


def test_frame_pts_on_the_90khz_clock() -> None:
    assert [frame_pts(i, 30) for i in range(3)] == [0, 3000, 6000]
    assert frame_pts(1, 60) == 1500
    assert frame_pts(3, 7) == round(3 * 90000 / 7)


def filled(fps: float = 30, count: int = 10, capacity: int = 100) -> FrameLedger:
    ledger = FrameLedger(fps, capacity)
    for index in range(count):
        ledger.record(index, float(index), float(-index), 0.1 * index)
    return ledger


def test_exact_pts_matches() -> None:
    entry = filled().match(6000)
    assert entry is not None and entry.index == 2 and entry.true_x == 2.0


@pytest.mark.parametrize("shift", [-1, 1])
def test_one_tick_off_still_matches(shift: int) -> None:
    entry = filled().match(9000 + shift)
    assert entry is not None and entry.index == 3


@pytest.mark.parametrize("pts", [9002, 8998, 1500, 10**12])
def test_unknown_pts_does_not_match(pts: int) -> None:
    assert filled().match(pts) is None


def test_non_integral_frame_interval_matches() -> None:
    ledger = filled(fps=7)
    for index in range(10):
        entry = ledger.match(frame_pts(index, 7) - 1)
        assert entry is not None and entry.index == index


def test_capacity_bounds_memory_and_evicts_oldest() -> None:
    ledger = FrameLedger(30, capacity=4)
    evicted_indices = []
    for index in range(10):
        _, evicted = ledger.record(index, 0.0, 0.0, 0.0)
        evicted_indices += [r.index for r in evicted]
    assert len(ledger) == 4
    assert evicted_indices == list(range(6))
    assert ledger.match(0) is None
    assert ledger.match(frame_pts(9, 30)) is not None


def test_drain_returns_oldest_first_and_empties() -> None:
    ledger = filled(count=3)
    assert [r.index for r in ledger.drain()] == [0, 1, 2]
    assert len(ledger) == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FrameLedger(30, 0)
