"""The ball detector in its own process, fed through a ``FrameExchange``.

Detection is CPU work that would stall the asyncio loop receiving the video,
so it runs in a spawned process. The main process only copies each luma plane
into shared memory (``submit``) and picks results up when the result pipe
becomes readable (``collect``); neither ever waits for the detector. When the
detector is slower than the stream, frames are dropped, never queued.

This module is what the child imports to run the worker, so its imports are
only numpy, OpenCV and this package: never av or aiortc, which are slow to
import and, imported before cv2, break OpenCV's windows.
"""

from __future__ import annotations

import os
import signal
import time
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Optional

import numpy as np

from client.detection.frame_exchange import MAX_HEIGHT, MAX_WIDTH, ExchangeError, FrameExchange
from client.detection.interface import (
    BallLocator,
    DetectionResult,
    DetectionTally,
    DetectorFailed,
    DetectorStats,
)
from client.detection.plugin import build_locator
from protocol.wire_clock import VIDEO_CLOCK_RATE

#: How often the idle worker looks at the stop flag even without a wake-up.
_IDLE_POLL = 1.0


#: Polling step of ``wait_taken``; the worker takes a frame within ~0.1 ms.
_TAKE_POLL_S = 50e-6


class DetectorProcess:
    """Owns one detector process and the shared memory that feeds it.

    ``start()`` spawns it, ``stop()`` asks it to finish and reaps it,
    ``close()`` also frees the shared memory; as a context manager it is
    started on entry and closed on exit. Detector settings (``threshold``,
    ``floor``, ...) are passed through to ``CentroidDetector``.
    """

    def __init__(
        self,
        max_width: int = MAX_WIDTH,
        max_height: int = MAX_HEIGHT,
        stats_window: int = 1000,
        **detector_options: Any,
    ) -> None:
        # Fail here, in the caller's process, not in the child.
        build_locator(detector_options)
        self._options = detector_options
        # How far ahead a predictive locator aims (set_lead), once a second at
        # most: a pipe, not shared memory, so nothing outlives close().
        self._lead_reader, self._lead_writer = get_context("spawn").Pipe(duplex=False)
        # A worker that stops reading must never block the event loop.
        os.set_blocking(self._lead_writer.fileno(), False)
        self._exchange = FrameExchange(max_width, max_height)
        self._process: Optional[BaseProcess] = None
        self._stopping = False
        self._closed = False
        self._tally = DetectionTally(stats_window)
        self._final_dropped = 0
        self._skipped = 0

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        if self._closed:
            raise RuntimeError("the detector process is closed")
        if self._process is not None:
            raise RuntimeError("the detector process was already started")
        context = get_context("spawn")
        self._process = context.Process(
            target=run_worker,
            args=(self._exchange, self._options, self._lead_reader),
            name="ball-detector",
            daemon=True,
        )
        self._process.start()
        self._exchange.detach_consumer()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the worker has imported its modules and is waiting.

        Spawning takes a few hundred milliseconds; frames submitted before
        that are not lost, only superseded.
        """
        deadline = time.monotonic() + timeout
        while not self._exchange.consumer_ready:
            if self.failed or time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the worker to exit and reap it, forcibly if it does not."""
        process = self._process
        if process is None or self._stopping:
            return
        self._stopping = True
        if process.is_alive():
            try:
                self._exchange.request_stop()
            except ExchangeError:
                pass  # it died holding the lock; terminate() settles it
            process.join(timeout)
        if process.is_alive():
            process.terminate()
            process.join(1.0)
        if process.is_alive():
            process.kill()
            process.join()
        process.close()

    def close(self) -> None:
        """Stop the worker and release the shared memory and pipes; idempotent."""
        if self._closed:
            return
        self.stop()
        self._closed = True
        self._final_dropped = self._exchange.dropped
        self._exchange.close()
        self._exchange.unlink()
        self._lead_reader.close()
        self._lead_writer.close()

    def __enter__(self) -> "DetectorProcess":
        if self._process is None:
            try:
                self.start()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- state ----------------------------------------------------------------

    @property
    def shared_memory_name(self) -> str:
        """The segment under /dev/shm, for leak hunting."""
        return self._exchange.name

    @property
    def pid(self) -> Optional[int]:
        return None if self._process is None or self._stopping else self._process.pid

    def is_alive(self) -> bool:
        return self._process is not None and not self._stopping and self._process.is_alive()

    @property
    def failed(self) -> bool:
        """Started, not stopped, and yet the worker is gone."""
        return self._process is not None and not self._stopping and not self._process.is_alive()

    @property
    def result_fd(self) -> int:
        """Register with ``loop.add_reader``; readable when ``collect`` has
        something, and at EOF if the worker dies (``collect`` then raises)."""
        return self._exchange.result_fd

    # -- frames and results ---------------------------------------------------

    def submit(self, pts: int, luma: np.ndarray) -> None:
        """Hand a luma plane (2-D uint8, strided views welcome) to the worker.

        Copies it into shared memory and returns; never waits for detection.
        """
        self._check_running()
        try:
            self._exchange.publish(pts, luma)
        except ExchangeError as exc:
            raise DetectorFailed(f"{exc} (worker exit code {self._exit_code()})") from exc
        self._tally.submitted += 1

    @property
    def max_backlog(self) -> None:
        """None: the exchange keeps only the newest frame, so none waits."""
        return None

    def skip(self) -> None:
        self._skipped += 1

    @property
    def pending(self) -> bool:
        """The last frame submitted is still waiting for the worker."""
        return self._exchange.pending

    def wait_taken(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the worker to take the last frame submitted.

        Frames normally come tens of milliseconds apart and the worker takes
        each within a fraction of one, so this returns at once. After a
        retransmission fills a gap, though, the decoder delivers a burst of
        frames within a millisecond, and latest-wins would drop all but the
        last. Waiting the worker's sub-millisecond pace lets it answer them
        all, while the timeout keeps a slow worker from adding real latency.
        """
        deadline = time.monotonic() + timeout
        while self.pending:
            if time.monotonic() >= deadline:
                return False
            time.sleep(_TAKE_POLL_S)
        return True

    def collect(self) -> list[DetectionResult]:
        """Results that arrived since the last call, oldest first.

        Raises ``DetectorFailed`` once the worker has died and every result
        it posted has been collected.
        """
        if self._closed:
            raise RuntimeError("the detector process is closed")
        try:
            results = self._exchange.collect_results()
        except ExchangeError as exc:
            raise DetectorFailed(f"{exc} (worker exit code {self._exit_code()})") from exc
        for result in results:
            self._tally.add(result)
        if not results and (self.failed or self._exchange.consumer_gone) and not self._stopping:
            raise DetectorFailed(f"detector process died (exit code {self._exit_code()})")
        return results

    def stats(self) -> DetectorStats:
        return self._tally.stats(
            dropped=self._skipped
            + (self._final_dropped if self._closed else self._exchange.dropped),
            results_lost=self._exchange.results_lost,
        )

    def set_lead(self, seconds: float) -> None:
        """Tell a predictive locator how far ahead to aim (the server's latency)."""
        if not self._closed:
            try:
                self._lead_writer.send(float(seconds))
            except OSError:  # the worker is gone or stalled; collect() reports that
                pass

    def _check_running(self) -> None:
        if self._closed:
            raise RuntimeError("the detector process is closed")
        if self._process is None:
            raise RuntimeError("the detector process was not started")
        if self._stopping:
            raise RuntimeError("the detector process was stopped")
        if not self._process.is_alive():
            raise DetectorFailed(f"detector process died (exit code {self._exit_code()})")

    def _exit_code(self) -> Optional[int]:
        if self._process is None or self._stopping:
            return None
        return self._process.exitcode


def run_worker(
    exchange: FrameExchange, detector_options: dict[str, Any], leads: Optional[Connection] = None
) -> None:
    """The child's main loop: newest frame in, centre out, until told to stop."""
    # Ctrl-C reaches the whole process group; shutting down is the parent's
    # decision, made through request_stop(), not a KeyboardInterrupt here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    detector: BallLocator = build_locator(detector_options)
    set_lead = getattr(detector, "set_lead", None) if leads is not None else None
    set_frame_time = getattr(detector, "set_frame_time", None)
    try:
        exchange.mark_ready()
        while not exchange.stop_requested:
            frame = exchange.wait_latest(_IDLE_POLL)
            if frame is None:
                continue
            pts, luma = frame
            if set_lead is not None:
                assert leads is not None
                while leads.poll():
                    set_lead(leads.recv())
            if set_frame_time is not None:
                set_frame_time(pts / VIDEO_CLOCK_RATE)
            # time.monotonic(), not perf_counter(): the same clock as the
            # client's loop and the server (the stage trace lines them up).
            started = time.monotonic()
            centre = detector.detect(luma)
            finished = time.monotonic()
            del frame, luma  # the view must not outlive the slot it aliases
            exchange.release()
            exchange.post_result(
                pts,
                centre,
                (finished - started) * 1000.0,
                detector.used_window,
                failed=bool(getattr(detector, "failed", False)),
                started_at=started,
                finished_at=finished,
            )
    finally:
        exchange.close()
