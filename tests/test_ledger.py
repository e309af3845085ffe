import pytest

from server.core.ledger import FrameLedger, frame_pts


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


# --- RTP timestamps: pts plus the sender's origin, modulo 2**32 ------------------


@pytest.mark.parametrize("origin", [0, 123_456_789, 2**32 - 1, 2**32 - 6000])
@pytest.mark.parametrize("shift", [-1, 0, 1])
def test_rtp_timestamp_matches_through_the_origin(origin: int, shift: int) -> None:
    ledger = filled()
    for index in range(10):
        wire = (frame_pts(index, 30) + origin + shift) % 2**32
        entry = ledger.match_rtp_timestamp(wire, origin)
        assert entry is not None and entry.index == index


def test_rtp_timestamp_off_by_more_than_a_tick_or_unsent_does_not_match() -> None:
    ledger = filled()
    origin = 1_000_000
    assert ledger.match_rtp_timestamp(origin + 6002, origin) is None
    assert ledger.match_rtp_timestamp(origin + frame_pts(10, 30), origin) is None
    assert ledger.match_rtp_timestamp(origin - 3000, origin) is None  # before frame 0
    assert FrameLedger(30, 8).match_rtp_timestamp(origin, origin) is None  # nothing sent


def test_rtp_timestamp_matches_after_the_32_bit_clock_wrapped() -> None:
    # 13.25 hours of frames: pts beyond 2**32, the wire timestamps wrapped.
    ledger = FrameLedger(30, capacity=8)
    first = 2**32 // 3000 - 4
    for index in range(first, first + 8):
        ledger.record(index, float(index), 0.0, 0.0)
    origin = 77
    for index in range(first, first + 8):
        wire = (frame_pts(index, 30) + origin) % 2**32
        entry = ledger.match_rtp_timestamp(wire, origin)
        assert entry is not None and entry.index == index


def test_capacity_message_and_a_ledger_of_one() -> None:
    with pytest.raises(ValueError, match="^capacity must be positive$"):
        FrameLedger(30, -1)
    ledger = FrameLedger(30, capacity=1)
    ledger.record(0, 0.0, 0.0, 0.0)
    _, evicted = ledger.record(1, 0.0, 0.0, 0.0)
    assert [r.index for r in evicted] == [0] and len(ledger) == 1


def test_record_keeps_the_ground_truth_and_the_send_time() -> None:
    entry, evicted = FrameLedger(30, 4).record(7, 1.5, -2.5, 12.25)
    assert (entry.index, entry.pts, entry.true_x, entry.true_y) == (7, 21000, 1.5, -2.5)
    assert entry.produced_at == 12.25 and not entry.answered and evicted == []


def test_rtp_timestamp_matches_with_a_single_frame_sent() -> None:
    ledger = FrameLedger(30, 8)
    ledger.record(0, 0.0, 0.0, 0.0)
    entry = ledger.match_rtp_timestamp(123, 123)
    assert entry is not None and entry.index == 0


def test_rtp_timestamp_means_the_pts_nearest_the_newest_frame() -> None:
    # Frames 2**31 ticks apart (absurdly slow, so the ledger spans half the
    # 32-bit clock): exactly half a clock back is read as the past...
    ledger = FrameLedger(90000 / 2**31, 8)
    ledger.record(0, 0.0, 0.0, 0.0)
    ledger.record(1, 1.0, 0.0, 0.0)
    entry = ledger.match_rtp_timestamp(5, 5)
    assert entry is not None and entry.index == 0
    # ...but more than half a clock back it is the future, and unknown.
    ledger = FrameLedger(90000 / 2_500_000_000, 8)
    ledger.record(0, 0.0, 0.0, 0.0)
    ledger.record(1, 1.0, 0.0, 0.0)
    assert ledger.match_rtp_timestamp(5, 5) is None
