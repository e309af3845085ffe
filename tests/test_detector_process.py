"""DetectorProcess: a real spawned worker fed rendered frames."""

from __future__ import annotations

import os
import select
import signal
import time
from typing import Iterator

import numpy as np
import pytest

from client.detection.detector_process import DetectorProcess
from client.detection.interface import DetectionResult, DetectorFailed
from lab.own_resources import open_fds, own_shm
from server.core.renderer import render_luma

WIDTH, HEIGHT = 640, 480


def wait_results(
    detector: DetectorProcess, count: int, timeout: float = 5.0
) -> list[DetectionResult]:
    results: list[DetectionResult] = []
    deadline = time.monotonic() + timeout
    while len(results) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(results)} of {count} results arrived"
        select.select([detector.result_fd], [], [], remaining)
        results += detector.collect()
    return results


def off_by(result: DetectionResult, x: float, y: float) -> float:
    assert result.x is not None and result.y is not None, f"no ball in frame {result.pts}"
    return float(np.hypot(result.x - x, result.y - y))


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def detector() -> Iterator[DetectorProcess]:
    shm_before = own_shm()
    process = DetectorProcess(WIDTH, HEIGHT)
    process.start()
    assert process.wait_ready(20.0), "the worker never became ready"
    yield process
    process.close()
    assert own_shm() <= shm_before
    assert process.shared_memory_name not in os.listdir("/dev/shm")


def test_frames_one_at_a_time(detector: DetectorProcess) -> None:
    x, y = 100.25, 200.75
    for index in range(10):
        x, y = x + 7.1, y - 3.3
        pts = index * 3000
        detector.submit(pts, render_luma(WIDTH, HEIGHT, x, y, 20))
        (result,) = wait_results(detector, 1)
        assert result.pts == pts
        assert off_by(result, x, y) < 0.05
        assert result.detect_ms > 0
    stats = detector.stats()
    assert (stats.submitted, stats.detected, stats.found, stats.dropped) == (10, 10, 10, 0)
    assert stats.windowed == 9  # all but the first frame were tracked
    assert 0 < stats.p50_ms <= stats.p99_ms
    assert stats.mean_ms > 0


def test_strided_frame_and_no_ball(detector: DetectorProcess) -> None:
    wide = np.zeros((HEIGHT, WIDTH + 32), np.uint8)
    wide[:, :WIDTH] = render_luma(WIDTH, HEIGHT, 321.6, 99.4, 15)
    detector.submit(1, wide[:, :WIDTH])
    (result,) = wait_results(detector, 1)
    assert off_by(result, 321.6, 99.4) < 0.05
    detector.submit(2, np.zeros((HEIGHT, WIDTH), np.uint8))
    (result,) = wait_results(detector, 1)
    assert (result.pts, result.x, result.y) == (2, None, None)


def test_burst_latest_wins(detector: DetectorProcess) -> None:
    # Big balls make each detection slower than a submit, so frames pile up.
    frames = [render_luma(WIDTH, HEIGHT, 100.0 + i, 240.5, 60) for i in range(200)]
    for pts, luma in enumerate(frames):
        detector.submit(pts, luma)
    deadline = time.monotonic() + 5.0
    last = wait_results(detector, 1)[-1]
    while last.pts != 199:
        assert time.monotonic() < deadline, "the last frame was never detected"
        last = wait_results(detector, 1)[-1]
    assert off_by(last, 100.0 + 199, 240.5) < 0.05
    stats = detector.stats()
    assert stats.submitted == 200
    assert stats.dropped > 0
    assert stats.detected + stats.dropped + stats.results_lost == 200


def test_burst_paced_by_wait_taken_loses_nothing(detector: DetectorProcess) -> None:
    """What the client does with a burst of decoded frames after a gap."""
    frames = [render_luma(WIDTH, HEIGHT, 100.0 + i, 240.5, 20) for i in range(30)]
    results: list[DetectionResult] = []
    for pts, luma in enumerate(frames):
        assert detector.wait_taken(1.0)
        results += detector.collect()  # as the client sends them on
        detector.submit(pts, luma)
    results += wait_results(detector, 30 - len(results))
    assert [r.pts for r in results] == list(range(30))
    assert detector.stats().dropped == 0


def test_wait_taken_gives_up_after_its_timeout(detector: DetectorProcess) -> None:
    assert detector.pid is not None
    os.kill(detector.pid, signal.SIGSTOP)  # a worker that takes nothing
    try:
        detector.submit(0, render_luma(WIDTH, HEIGHT, 100.0, 100.0, 20))
        started = time.monotonic()
        assert detector.wait_taken(0.01) is False
        assert 0.009 < time.monotonic() - started < 0.5
    finally:
        os.kill(detector.pid, signal.SIGCONT)
    assert detector.wait_taken(1.0)


def test_submit_never_waits_for_detection(detector: DetectorProcess) -> None:
    luma = render_luma(WIDTH, HEIGHT, 320.0, 240.0, 60)
    started = time.perf_counter()
    for pts in range(100):
        detector.submit(pts, luma)
    per_frame_ms = (time.perf_counter() - started) * 10.0
    assert per_frame_ms < 5.0  # a copy into shared memory, about 0.05 ms


def test_worker_imports_neither_av_nor_aiortc(detector: DetectorProcess) -> None:
    assert detector.pid is not None
    with open(f"/proc/{detector.pid}/maps") as maps:
        mapped = maps.read()
    assert "site-packages/av/" not in mapped
    assert "site-packages/aiortc/" not in mapped


def test_stop_and_close_leave_nothing_behind() -> None:
    shm_before, fds_before = own_shm(), open_fds()
    detector = DetectorProcess(WIDTH, HEIGHT)
    detector.start()
    assert detector.wait_ready(20.0)
    pid = detector.pid
    assert pid is not None and process_exists(pid)
    detector.submit(0, render_luma(WIDTH, HEIGHT, 10.5, 10.5, 8))
    wait_results(detector, 1)
    detector.stop()
    detector.stop()  # idempotent
    assert not process_exists(pid)
    assert not detector.is_alive() and not detector.failed
    detector.close()
    detector.close()  # idempotent
    assert own_shm() <= shm_before
    assert detector.shared_memory_name not in os.listdir("/dev/shm")
    assert open_fds() <= fds_before
    assert detector.stats().detected == 1
    with pytest.raises(RuntimeError):
        detector.submit(1, render_luma(WIDTH, HEIGHT, 10.5, 10.5, 8))


def test_context_manager() -> None:
    shm_before = own_shm()
    with DetectorProcess(WIDTH, HEIGHT) as detector:
        detector.submit(5, render_luma(WIDTH, HEIGHT, 200.3, 100.6, 25))
        (result,) = wait_results(detector, 1, timeout=20.0)
        assert result.pts == 5
        pid = detector.pid
    assert pid is not None and not process_exists(pid)
    assert own_shm() <= shm_before


def test_killed_worker_is_detected(detector: DetectorProcess) -> None:
    assert detector.pid is not None
    os.kill(detector.pid, signal.SIGKILL)
    # Its end of the result pipe closes with it: an event loop watching
    # result_fd wakes up, and collect() says what happened.
    assert select.select([detector.result_fd], [], [], 5.0)[0]
    deadline = time.monotonic() + 5.0
    while not detector.failed:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(DetectorFailed, match="exit code -9"):
        detector.collect()
    with pytest.raises(DetectorFailed):
        detector.submit(1, render_luma(WIDTH, HEIGHT, 100.0, 100.0, 10))


def test_misuse() -> None:
    detector = DetectorProcess(WIDTH, HEIGHT)
    try:
        with pytest.raises(RuntimeError, match="not started"):
            detector.submit(0, np.zeros((HEIGHT, WIDTH), np.uint8))
        detector.start()
        with pytest.raises(RuntimeError, match="already started"):
            detector.start()
        with pytest.raises(ValueError, match="exceeds"):
            detector.submit(0, np.zeros((HEIGHT, WIDTH + 2), np.uint8))
    finally:
        detector.close()
    with pytest.raises(ValueError):
        DetectorProcess(WIDTH, HEIGHT, threshold=10, floor=20)
