import json
import math

import pytest

from server.core.ledger import FrameRecord
from server.core.scene import BallScene
from server.core.scoreboard import Interval, Scoreboard


def board(retired: list[FrameRecord] | None = None, capacity: int = 64) -> Scoreboard:
    scoreboard = Scoreboard(30, capacity, retired.append if retired is not None else None)
    for index in range(5):
        scoreboard.frame_sent(index, 100.0 + index, 200.0, produced_at=1.0 + index / 30)
    return scoreboard


def message(pts: int, x: float | None, y: float | None) -> str:
    return json.dumps({"pts": pts, "x": x, "y": y})


def test_answer_scores_error_and_latency_against_that_frame() -> None:
    scoreboard = board()
    entry = scoreboard.answer(message(6000, 105.0, 204.0), arrival=1.0 + 2 / 30 + 0.012)
    assert entry is not None and entry.index == 2
    assert entry.error_px == pytest.approx(5.0)
    assert entry.latency_ms == pytest.approx(12.0)
    summary = scoreboard.summary()
    assert summary["frames_sent"] == 5 and summary["frames_answered"] == 1
    assert summary["error_px"]["mean"] == pytest.approx(5.0)


def test_no_ball_counts_as_answered_without_error() -> None:
    scoreboard = board()
    assert scoreboard.answer(message(0, None, None), arrival=2.0) is not None
    assert scoreboard.frames_answered == 1 and scoreboard.frames_found == 0
    assert scoreboard.error_px.count == 0


@pytest.mark.parametrize(
    "raw,reason",
    [
        ("not json", "malformed"),
        (message(0, float("nan"), 1.0).replace("NaN", "NaN"), "malformed"),
        (json.dumps({"pts": "0", "x": 1, "y": 2}), "malformed"),
        ("x" * 10000, "malformed"),
        (message(123456, 1.0, 2.0), "unknown_frame"),
    ],
)
def test_invalid_messages_are_counted_and_change_nothing(raw: str, reason: str) -> None:
    scoreboard = board()
    assert scoreboard.answer(raw, arrival=2.0) is None
    assert scoreboard.invalid[reason] == 1
    assert scoreboard.frames_answered == 0 and scoreboard.error_px.count == 0


def test_duplicate_answer_is_invalid_and_first_one_stands() -> None:
    scoreboard = board()
    scoreboard.answer(message(3000, 101.0, 200.0), arrival=2.0)
    assert scoreboard.answer(message(3000, 500.0, 500.0), arrival=2.1) is None
    assert scoreboard.invalid["duplicate"] == 1
    assert scoreboard.error_px.max == 0.0


def test_retired_frames_reach_the_report_once() -> None:
    retired: list[FrameRecord] = []
    scoreboard = board(retired, capacity=2)
    assert [r.index for r in retired] == [0, 1, 2]
    scoreboard.close()
    assert [r.index for r in retired] == [0, 1, 2, 3, 4]


def test_interval_resets_after_each_progress_line() -> None:
    scoreboard = board()
    scoreboard.answer(message(0, 100.0, 200.0), arrival=1.01)
    first = scoreboard.take_interval()
    assert first.frames_sent == 5 and first.frames_answered == 1
    assert "answered 1" in first.describe()
    second = scoreboard.take_interval()
    assert second.frames_sent == 0 and second.describe().endswith("latency p50 - ms")


def test_summary_is_json_serialisable() -> None:
    scoreboard = board()
    scoreboard.answer(message(0, 100.5, 200.0), arrival=1.02)
    summary = json.loads(json.dumps(scoreboard.summary()))
    assert math.isclose(summary["answered_ratio"], 0.2)


def rtp_message(rtp_timestamp: int, x: float | None, y: float | None, **extra: int) -> str:
    return json.dumps({"rtp_timestamp": rtp_timestamp, **extra, "x": x, "y": y})


def test_rtp_timestamp_answers_are_matched_through_the_senders_origin() -> None:
    origin = 4_000_000_000  # frame 2's wire timestamp wraps past 2**32
    scoreboard = Scoreboard(30, 64, rtp_origin=lambda: origin)
    for index in range(5):
        scoreboard.frame_sent(index, 100.0 + index, 200.0, produced_at=1.0 + index / 30)
    wire = (6000 + origin) % 2**32
    entry = scoreboard.answer(rtp_message(wire, 102.0, 200.0), arrival=2.0)
    assert entry is not None and entry.index == 2 and entry.error_px == 0.0


def test_with_both_keys_the_rtp_timestamp_wins() -> None:
    origin = 90_000
    scoreboard = Scoreboard(30, 64, rtp_origin=lambda: origin)
    for index in range(5):
        scoreboard.frame_sent(index, 100.0 + index, 200.0, produced_at=1.0)
    # A client whose first frame was lost reports pts one frame early.
    entry = scoreboard.answer(rtp_message(origin + 9000, 103.0, 200.0, pts=6000), arrival=2.0)
    assert entry is not None and entry.index == 3 and entry.error_px == 0.0


def test_rtp_timestamp_answer_before_the_origin_is_known_names_no_frame() -> None:
    scoreboard = board()  # rtp_origin: never known
    assert scoreboard.answer(rtp_message(6000, 102.0, 200.0), arrival=2.0) is None
    assert scoreboard.invalid == {"unknown_frame": 1}


def test_counters_count_every_answer_and_every_rejection() -> None:
    scoreboard = board()
    for pts, x in ((0, 100.0), (3000, 104.0), (6000, None)):
        y = None if x is None else 200.0
        assert scoreboard.answer(message(pts, x, y), arrival=2.0) is not None
    for raw in ("not json", "{", message(123456, 1.0, 2.0), message(7, 1.0, 2.0)):
        scoreboard.answer(raw, arrival=2.0)
    scoreboard.answer(message(0, 1.0, 1.0), arrival=2.0)
    scoreboard.answer(message(3000, 1.0, 1.0), arrival=2.0)
    assert (scoreboard.frames_answered, scoreboard.frames_found) == (3, 2)
    assert scoreboard.invalid == {"malformed": 2, "unknown_frame": 2, "duplicate": 2}
    assert scoreboard.invalid_messages == 6
    interval = scoreboard.take_interval()
    assert interval.frames_answered == 3 and interval.errors == [0.0, 3.0]


def test_interval_describes_mean_error_and_median_latency() -> None:
    interval = Interval(frames_sent=5, frames_answered=2, errors=[1.0, 4.0], latencies=[12.0, 20.0])
    assert interval.describe() == "sent 5 answered 2 error 2.500 px latency p50 16.0 ms"
    assert Interval().describe() == "sent 0 answered 0 error - px latency p50 - ms"


def test_sub_millisecond_and_early_latencies_are_kept_and_clamped() -> None:
    scoreboard = board()
    scoreboard.answer(message(0, 100.0, 200.0), arrival=1.0005)
    scoreboard.answer(message(3000, 101.0, 200.0), arrival=1.0)  # before it was sent
    assert scoreboard.latency_ms.min == 0.0
    assert scoreboard.latency_ms.max == pytest.approx(0.5)


def test_summary_keys_and_an_empty_session() -> None:
    summary = Scoreboard(30, 8).summary()
    assert summary == {
        "frames_sent": 0,
        "frames_answered": 0,
        "frames_found": 0,
        "answered_ratio": None,
        "invalid_messages": 0,
        "invalid_by_reason": {},
        "error_px": {"mean": None, "max": None, "p50": None, "p95": None},
        "latency_ms": {"mean": None, "max": None, "p50": None, "p95": None, "p99": None},
        "error_at_arrival_px": {"mean": None, "max": None, "p50": None, "p95": None},
        "visibility": {
            "frames_visible": 0,
            "frames_partly_hidden": 0,
            "frames_hidden": 0,
            "found_when_visible_ratio": None,
            "hidden_frames_answered": 0,
            "false_positives_when_hidden": 0,
            "reacquisitions": 0,
            "reacquisitions_missed": 0,
            "reacquire_ms": {"mean": None, "max": None, "p50": None, "p95": None},
        },
    }


def fast_scene() -> BallScene:
    # 300 px/s along +x from the middle: no wall within a second.
    return BallScene(640, 480, 20.0, 300.0, 100.0, 240.0, 0.0)


@pytest.mark.parametrize("delay_s", [0.0, 0.005, 0.05, 0.2])
def test_the_error_at_arrival_grows_with_the_delay_as_physics_says(delay_s: float) -> None:
    scene = fast_scene()
    scoreboard = Scoreboard(30, 64, position_at=scene.position)
    produced_at = 10.0
    x, y = scene.position(3 / 30)
    scoreboard.frame_sent(3, x, y, produced_at)
    # A perfect answer about frame 3, arriving delay_s after it was produced.
    entry = scoreboard.answer(message(9000, x, y), arrival=produced_at + delay_s)
    assert entry is not None and entry.error_px == 0.0
    assert entry.error_at_arrival_px == pytest.approx(300.0 * delay_s, abs=1e-9)
    assert (entry.arrival_true_x, entry.arrival_true_y) == pytest.approx(
        scene.position(3 / 30 + delay_s)
    )
    assert scoreboard.summary()["error_at_arrival_px"]["max"] == pytest.approx(
        300.0 * delay_s, abs=1e-9
    )


def test_a_not_found_answer_has_no_error_at_arrival() -> None:
    scene = fast_scene()
    scoreboard = Scoreboard(30, 64, position_at=scene.position)
    scoreboard.frame_sent(0, *scene.position(0.0), produced_at=1.0)
    entry = scoreboard.answer(message(0, None, None), arrival=1.04)
    assert entry is not None and entry.error_at_arrival_px is None
    assert entry.arrival_true_x == pytest.approx(scene.position(0.04)[0])
    assert scoreboard.error_at_arrival_px.count == 0


def test_without_a_scene_there_is_no_error_at_arrival() -> None:
    scoreboard = board()
    entry = scoreboard.answer(message(0, 100.0, 200.0), arrival=1.05)
    assert entry is not None and entry.error_at_arrival_px is None


def test_retired_frames_feed_the_visibility_tally_in_order() -> None:
    scoreboard = Scoreboard(30, 8, acquired_within_px=5.0)
    visibility = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    for index, share in enumerate(visibility):
        scoreboard.frame_sent(index, 50.0, 50.0, produced_at=index / 30, visibility=share)
    scoreboard.answer(message(3000, 60.0, 50.0), arrival=1.0)  # hidden, found: false positive
    scoreboard.answer(message(12000, 51.0, 50.0), arrival=1.0)  # found one frame after it is back
    scoreboard.close()
    summary = scoreboard.summary()["visibility"]
    assert summary["frames_hidden"] == 2 and summary["frames_visible"] == 4
    assert summary["false_positives_when_hidden"] == 1
    assert summary["reacquisitions"] == 1
    assert summary["reacquire_ms"]["max"] == pytest.approx(1000 / 30)
