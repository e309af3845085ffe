"""Detection on the client's event loop (client.detection.inline_detector)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from client.detection.detector import CentroidDetector
from client.detection.inline_detector import InlineDetector
from client.session import ClientSession
from protocol.coordinates import decode_report
from server.core.renderer import BallRenderer


def luma(x: float, y: float, padding: int = 0) -> np.ndarray:
    """A rendered ball's luma plane; with ``padding``, a strided view as a decoder gives."""
    plane = BallRenderer(320, 240, 20.0).render(x, y).to_ndarray()[:240]
    if not padding:
        return plane
    rows = np.zeros((240, 320 + padding), dtype=np.uint8)
    rows[:, :320] = plane
    return rows[:, :320]


def test_results_are_ready_when_submit_returns() -> None:
    ticks = iter([10.0, 10.0002, 11.0, 11.0003])
    with InlineDetector(clock=lambda: next(ticks)) as detector:
        assert detector.result_fd is None and not detector.pending and not detector.failed
        assert detector.wait_ready(1.0) and detector.wait_taken(0.0)
        detector.submit(3000, luma(100.25, 80.5, padding=64))
        detector.submit(6000, np.zeros((240, 320), dtype=np.uint8))
        first, second = detector.collect()
        assert detector.collect() == []
    assert first.pts == 3000 and first.found
    assert first.x == pytest.approx(100.25, abs=0.05) and first.y == pytest.approx(80.5, abs=0.05)
    assert (first.started_at, first.finished_at) == (10.0, 10.0002)
    assert first.detect_ms == pytest.approx(0.2)
    assert second.pts == 6000 and not second.found


def test_the_same_centres_as_the_detector_itself() -> None:
    reference, detector = CentroidDetector(), InlineDetector()
    for x in (50.0, 53.5, 57.25):
        plane = luma(x, 120.0)
        detector.submit(0, plane)
        [result] = detector.collect()
        assert (result.x, result.y) == reference.detect(plane)


def test_stats_count_detections_and_skipped_frames() -> None:
    detector = InlineDetector(stats_window=2)
    for x in (50.0, 60.0, 70.0):
        detector.submit(0, luma(x, 120.0))
    detector.skip()
    stats = detector.stats()
    assert (stats.submitted, stats.detected, stats.found, stats.dropped) == (3, 3, 3, 1)
    assert stats.window == 2 and stats.mean_ms > 0 and stats.results_lost == 0
    assert stats.windowed == 2  # the first frame is searched whole


def test_a_closed_detector_takes_nothing() -> None:
    detector = InlineDetector()
    detector.close()
    assert not detector.wait_ready(1.0)
    with pytest.raises(RuntimeError, match="closed"):
        detector.submit(0, luma(50.0, 50.0))
    with pytest.raises(RuntimeError, match="closed"):
        detector.start()


class FakeTrack:
    """Hands out frames, then ends like a remote track does."""

    def __init__(self, frames: list) -> None:  # type: ignore[type-arg]
        self._frames = frames

    async def recv(self):  # type: ignore[no-untyped-def]
        if not self._frames:
            raise MediaStreamError
        return self._frames.pop(0)


class FakeChannel:
    readyState = "open"

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, message: str) -> None:
        self.sent.append(message)


def test_the_session_answers_a_short_backlog_in_full_and_skips_a_long_one() -> None:
    renderer = BallRenderer(320, 240, 20.0)
    frames = []
    for index in range(6):
        frame = renderer.render(60.0 + 5 * index, 120.0)
        frame.pts = 3000 * index
        frames.append(frame)
    # What the decoder reports waiting behind each frame as the session takes it.
    backlogs = iter([0, 5, 4, 3, 2, 0])
    detector = InlineDetector()
    session = ClientSession(SimpleNamespace(), detector)  # type: ignore[arg-type]
    channel = FakeChannel()
    session._channel = channel  # type: ignore[assignment]

    def backlog() -> int:
        return next(backlogs)

    session._detection_backlog = backlog  # type: ignore[method-assign]
    asyncio.run(session._consume(FakeTrack(frames)))  # type: ignore[arg-type]
    answered = [decode_report(message).pts for message in channel.sent]
    assert answered == [0, 9000, 12000, 15000]  # 3000 and 6000 had 5 and 4 behind them
    assert detector.stats().dropped == 2 and session.results_sent == 4


USER_MODULE = """
class FailsEveryOther:
    '''Finds a fixed centre, except that every other frame raises.'''

    def __init__(self):
        self.calls = 0

    def detect(self, luma):
        self.calls += 1
        if self.calls % 2 == 0:
            raise RuntimeError("this frame is too hard")
        return (12.5, 7.25)
"""


def test_a_users_locator_that_raises_is_counted_not_fatal_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "user_inline_h23.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    detector = InlineDetector(locator="user_inline_h23:FailsEveryOther")
    with caplog.at_level(logging.WARNING, logger="client.detection.plugin"):
        for pts in range(4):
            detector.submit(pts, luma(50.0, 50.0))
    # The same guard as in the detector process: "no ball" for the failed
    # frames, one log line, and the session goes on.
    assert [(r.pts, r.x, r.y) for r in detector.collect()] == [
        (0, 12.5, 7.25),
        (1, None, None),
        (2, 12.5, 7.25),
        (3, None, None),
    ]
    assert caplog.text.count("the detector failed on a frame") == 1
    stats = detector.stats()
    assert (stats.submitted, stats.detected, stats.found, stats.failed) == (4, 4, 2, 2)
