"""The detector interface: both detectors implement it, the tally counts."""

from __future__ import annotations

import pytest

from client.detection.detector import CentroidDetector
from client.detection.detector_process import DetectorProcess
from client.detection.inline_detector import InlineDetector
from client.detection.interface import BallLocator, DetectionResult, DetectionTally, Detector


def protocol_members(protocol: type) -> set[str]:
    return {
        name
        for name in vars(protocol)
        if not name.startswith("_") or name in ("__enter__", "__exit__")
    } | set(getattr(protocol, "__annotations__", {}))


@pytest.mark.parametrize("detector", [DetectorProcess, InlineDetector])
def test_both_detectors_have_every_member_of_the_interface(detector: type) -> None:
    # mypy checks the signatures (tests/test_code_style.py); this, that none is missing.
    missing = {name for name in protocol_members(Detector) if not hasattr(detector, name)}
    assert not missing


def test_the_centroid_detector_is_a_ball_locator() -> None:
    locator: BallLocator = CentroidDetector()
    missing = {name for name in protocol_members(BallLocator) if not hasattr(locator, name)}
    assert not missing


def test_the_tally_counts_results_and_times() -> None:
    tally = DetectionTally(window=2)
    tally.submitted = 3
    for ms, x in ((1.0, 5.0), (2.0, None), (4.0, 7.0)):
        tally.add(DetectionResult(pts=0, x=x, y=x, detect_ms=ms, windowed=x == 7.0))
    stats = tally.stats(dropped=1, results_lost=0)
    assert (stats.submitted, stats.detected, stats.found, stats.windowed) == (3, 3, 2, 1)
    assert stats.mean_ms == pytest.approx(7.0 / 3)
    assert stats.window == 2 and stats.p50_ms == pytest.approx(3.0)
    assert stats.dropped == 1


def test_a_frame_the_session_skips_counts_as_dropped_for_the_process_too() -> None:
    with DetectorProcess() as detector:
        detector.skip()
        assert detector.stats().dropped == 1
