"""Found when visible, false positives when hidden, and re-acquisition."""

from __future__ import annotations

from typing import Optional

import pytest

from server.core.ledger import FrameRecord
from server.core.visibility import VisibilityTally


def frame(
    index: int, visibility: float, found: Optional[float] = None, answered: bool = True
) -> FrameRecord:
    """Frame ``index``; ``found`` is the answer's error in px, None for "not found"."""
    record = FrameRecord(index, index * 3000, 100.0, 100.0, index / 30, visibility=visibility)
    record.answered = answered
    if found is not None:
        record.reported_x, record.reported_y, record.error_px = 100.0 + found, 100.0, found
    return record


def tally(frames: list[FrameRecord]) -> VisibilityTally:
    result = VisibilityTally(fps=30.0, acquired_within_px=20.0)
    for record in frames:
        result.add(record)
    return result


def test_visible_hidden_and_partly_hidden_frames_are_told_apart() -> None:
    result = tally(
        [
            frame(0, 1.0, found=0.1),
            frame(1, 1.0),  # missed while visible
            frame(2, 0.3, found=2.0),  # partly hidden: neither share
            frame(3, 0.0),  # hidden, rightly not found
            frame(4, 0.0, found=5.0),  # hidden, yet found: a false positive
            frame(5, 0.0, answered=False),
            frame(6, 0.5, found=0.2),  # half in view counts as visible
        ]
    )
    summary = result.summary()
    assert summary["frames_visible"] == 3
    assert summary["frames_partly_hidden"] == 1
    assert summary["frames_hidden"] == 3
    assert summary["found_when_visible_ratio"] == pytest.approx(2 / 3)
    assert summary["hidden_frames_answered"] == 2
    assert summary["false_positives_when_hidden"] == 1


def test_reacquisition_time_runs_from_reappearance_to_the_first_good_answer() -> None:
    frames = [frame(0, 1.0, found=0.1), frame(1, 0.0), frame(2, 0.0), frame(3, 0.2)]
    # Reappears at 4; the tracker finds it again at 7, three frames later.
    frames += [frame(4, 1.0), frame(5, 1.0, found=50.0), frame(6, 1.0), frame(7, 1.0, found=1.0)]
    # Hidden again, back at 9 and found at once.
    frames += [frame(8, 0.0), frame(9, 1.0, found=0.5), frame(10, 1.0, found=0.5)]
    summary = tally(frames).summary()
    assert summary["reacquisitions"] == 2
    assert summary["reacquisitions_missed"] == 0
    assert summary["reacquire_ms"]["max"] == pytest.approx(100.0)  # 3 frames at 30 fps
    assert summary["reacquire_ms"]["mean"] == pytest.approx(50.0)


def test_a_ball_that_hides_again_before_it_is_found_is_a_missed_reacquisition() -> None:
    frames = [frame(0, 0.0), frame(1, 1.0), frame(2, 1.0), frame(3, 0.0), frame(4, 1.0)]
    summary = tally(frames).summary()
    assert summary["reacquisitions"] == 0 and summary["reacquisitions_missed"] == 1


def test_a_scene_that_never_hides_has_no_reacquisitions() -> None:
    summary = tally([frame(i, 1.0, found=0.1) for i in range(10)]).summary()
    assert summary["frames_hidden"] == 0 and summary["reacquisitions"] == 0
    assert summary["found_when_visible_ratio"] == 1.0
    assert summary["reacquire_ms"]["mean"] is None
