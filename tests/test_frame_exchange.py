"""FrameExchange: latest-wins frames one way, a result ring the other.

Most tests play both sides in one process; the protocol is the same across
processes, which the spawned-consumer tests at the end check.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import select
import signal
import time
from typing import Iterator

import numpy as np
import pytest

from client.detection.frame_exchange import (
    RESULT_RING,
    ExchangeError,
    FrameExchange,
    luma_view,
)
from client.detection.interface import DetectionResult
from lab.own_resources import open_fds, own_shm

WIDTH, HEIGHT = 64, 48


def frame(value: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A frame whose every pixel says which frame it is, plus a gradient."""
    pixels = np.full((height, width), value % 256, dtype=np.uint8)
    pixels[0, : min(width, 256)] = np.arange(min(width, 256), dtype=np.uint8)
    return pixels


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


@pytest.fixture
def exchange() -> Iterator[FrameExchange]:
    with FrameExchange(WIDTH, HEIGHT) as fx:
        yield fx


def test_frame_round_trip(exchange: FrameExchange) -> None:
    assert exchange.publish(3000, frame(7)) == 1
    taken = exchange.wait_latest(0.1)
    assert taken is not None
    pts, luma = taken
    assert pts == 3000
    np.testing.assert_array_equal(luma, frame(7))
    del taken, luma
    exchange.release()


def test_strided_input_is_copied_row_by_row(exchange: FrameExchange) -> None:
    wide = np.zeros((HEIGHT, WIDTH + 16), np.uint8)
    wide[:, :WIDTH] = frame(9)
    wide[:, WIDTH:] = 255
    exchange.publish(1, wide[:, :WIDTH])
    taken = exchange.wait_latest(0.1)
    assert taken is not None
    np.testing.assert_array_equal(taken[1], frame(9))


def test_smaller_frames_fit(exchange: FrameExchange) -> None:
    exchange.publish(1, frame(3, width=10, height=6))
    taken = exchange.wait_latest(0.1)
    assert taken is not None
    assert taken[1].shape == (6, 10)
    np.testing.assert_array_equal(taken[1], frame(3, width=10, height=6))


def test_latest_wins_and_drops_are_counted(exchange: FrameExchange) -> None:
    for pts in range(5):
        exchange.publish(pts, frame(pts))
    taken = exchange.wait_latest(0.1)
    assert taken is not None
    assert taken[0] == 4
    np.testing.assert_array_equal(taken[1], frame(4))
    assert exchange.published == 5
    assert exchange.dropped == 4


def test_a_frame_is_taken_once(exchange: FrameExchange) -> None:
    assert not exchange.pending
    exchange.publish(1, frame(1))
    assert exchange.pending
    assert exchange.wait_latest(0.1) is not None
    assert not exchange.pending
    exchange.release()
    started = time.monotonic()
    assert exchange.wait_latest(0.05) is None
    assert time.monotonic() - started >= 0.04
    assert exchange.dropped == 0


def test_frame_being_read_is_never_overwritten(exchange: FrameExchange) -> None:
    exchange.publish(1, frame(1))
    taken = exchange.wait_latest(0.1)
    assert taken is not None
    for pts in range(2, 50):  # far more frames than slots
        exchange.publish(pts, frame(pts))
    np.testing.assert_array_equal(taken[1], frame(1))
    exchange.release()
    newest = exchange.wait_latest(0.1)
    assert newest is not None and newest[0] == 49


def test_frame_too_large_or_not_luma(exchange: FrameExchange) -> None:
    with pytest.raises(ValueError, match="exceeds"):
        exchange.publish(1, np.zeros((HEIGHT, WIDTH + 1), np.uint8))
    with pytest.raises(ValueError, match="exceeds"):
        exchange.publish(1, np.zeros((HEIGHT + 1, WIDTH), np.uint8))
    with pytest.raises(ValueError):
        exchange.publish(1, np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    with pytest.raises(ValueError):
        exchange.publish(1, np.zeros((HEIGHT, WIDTH), np.uint16))
    assert exchange.published == 0


def test_results_in_order_with_wake_up(exchange: FrameExchange) -> None:
    assert not readable(exchange.result_fd)
    exchange.post_result(3000, (10.5, 20.25), 0.12, windowed=True)
    exchange.post_result(6000, None, 0.08)
    assert readable(exchange.result_fd)
    assert exchange.collect_results() == [
        DetectionResult(3000, 10.5, 20.25, 0.12, windowed=True),
        DetectionResult(6000, None, None, 0.08),
    ]
    assert not readable(exchange.result_fd)
    assert exchange.collect_results() == []


def test_result_ring_overflow_loses_the_oldest(exchange: FrameExchange) -> None:
    for pts in range(RESULT_RING + 4):
        exchange.post_result(pts, (float(pts), 0.0), 0.1)
    results = exchange.collect_results()
    assert [r.pts for r in results] == list(range(4, RESULT_RING + 4))
    assert exchange.results_lost == 4
    exchange.post_result(99, (1.0, 2.0), 0.1)
    assert [r.pts for r in exchange.collect_results()] == [99]
    assert exchange.results_lost == 4


def test_large_pts_survive(exchange: FrameExchange) -> None:
    pts = (1 << 62) + 12345
    exchange.publish(pts, frame(0))
    taken = exchange.wait_latest(0.1)
    assert taken is not None and taken[0] == pts
    exchange.post_result(pts, (1.0, 2.0), 0.1)
    assert exchange.collect_results()[0].pts == pts


def test_stop_request_wakes_the_consumer(exchange: FrameExchange) -> None:
    assert not exchange.stop_requested
    exchange.request_stop()
    started = time.monotonic()
    assert exchange.wait_latest(5.0) is None
    assert time.monotonic() - started < 1.0
    assert exchange.stop_requested


def test_close_and_unlink_leave_nothing_behind() -> None:
    shm_before, fds_before = own_shm(), open_fds()
    exchange = FrameExchange(WIDTH, HEIGHT)
    semaphore = "sem." + exchange._lock._semlock.name.lstrip("/")  # type: ignore[attr-defined]
    assert {exchange.name, semaphore} <= set(os.listdir("/dev/shm"))
    exchange.publish(1, frame(1))
    taken = exchange.wait_latest(0.1)
    del taken
    exchange.close()
    exchange.close()  # idempotent
    exchange.unlink()
    exchange.unlink()  # idempotent
    assert own_shm() <= shm_before
    assert exchange.name not in os.listdir("/dev/shm")
    assert semaphore not in os.listdir("/dev/shm")
    assert open_fds() == fds_before
    with pytest.raises(ExchangeError):
        exchange.publish(2, frame(2))
    with pytest.raises(ExchangeError):
        exchange.wait_latest(0.0)


def test_pickling_only_while_spawning(exchange: FrameExchange) -> None:
    with pytest.raises(RuntimeError):
        pickle.dumps(exchange)


def test_luma_view_of_a_decoded_style_frame() -> None:
    av = pytest.importorskip("av")
    luma = frame(5, width=70, height=40)  # 70 is not a multiple of the row alignment
    yuv = np.full((60, 70), 128, np.uint8)
    yuv[:40] = luma
    video_frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
    view = luma_view(video_frame)
    assert view.shape == (40, 70)
    assert not view.flags.c_contiguous  # rows padded to line_size, no copy
    np.testing.assert_array_equal(view, luma)


# -- across a real process boundary -------------------------------------------


def echo_consumer(exchange: FrameExchange) -> None:
    """Report each frame's pixel sum as x and its first pixel as y."""
    exchange.mark_ready()
    while not exchange.stop_requested:
        taken = exchange.wait_latest(1.0)
        if taken is None:
            continue
        pts, luma = taken
        total, first = float(luma.sum(dtype=np.int64)), float(luma[0, 0])
        del taken, luma
        exchange.release()
        exchange.post_result(pts, (total, first), 0.0)
    exchange.close()


def start_consumer(exchange: FrameExchange) -> multiprocessing.process.BaseProcess:
    process = multiprocessing.get_context("spawn").Process(
        target=echo_consumer, args=(exchange,), daemon=True
    )
    process.start()
    exchange.detach_consumer()
    deadline = time.monotonic() + 20.0
    while not exchange.consumer_ready:
        assert time.monotonic() < deadline, "consumer never started"
        time.sleep(0.01)
    return process


def wait_results(exchange: FrameExchange, count: int) -> list[DetectionResult]:
    results: list[DetectionResult] = []
    deadline = time.monotonic() + 5.0
    while len(results) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(results)} of {count} results arrived"
        select.select([exchange.result_fd], [], [], remaining)
        results += exchange.collect_results()
    return results


def test_spawned_consumer_sees_shared_pixels() -> None:
    shm_before = own_shm()
    with FrameExchange(WIDTH, HEIGHT) as exchange:
        process = start_consumer(exchange)
        for pts in range(1, 4):
            pixels = frame(pts * 10)
            exchange.publish(pts * 3000, pixels)
            (result,) = wait_results(exchange, 1)
            assert result.pts == pts * 3000
            assert result.x == float(pixels.sum(dtype=np.int64))
            assert result.y == 0.0
        exchange.request_stop()
        process.join(5.0)
        assert process.exitcode == 0
        # Every consumer end is closed now: the result pipe reads EOF.
        assert readable(exchange.result_fd)
        assert exchange.collect_results() == []
        assert exchange.consumer_gone
        name = exchange.name
    assert own_shm() <= shm_before
    assert name not in os.listdir("/dev/shm")


def test_producer_never_blocks_on_a_killed_consumer() -> None:
    """Killed while waiting, the consumer must not take the producer along
    (a multiprocessing.Event would: ``set()`` waits for the dead sleeper)."""
    with FrameExchange(WIDTH, HEIGHT) as exchange:
        process = start_consumer(exchange)
        time.sleep(0.1)  # let it settle into its wait
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        process.join(5.0)
        started = time.monotonic()
        for pts in range(10):
            exchange.publish(pts, frame(pts))
        exchange.request_stop()
        assert time.monotonic() - started < 0.5
        assert exchange.dropped == 9
