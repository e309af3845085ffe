"""A latest-wins mailbox for luma planes between two processes.

The client's main process decodes frames; a detector process measures them.
Pixels travel through one ``SharedMemory`` segment, never through a pickle:

- **Frames** go into three slots. The producer always writes a slot that is
  neither the newest published one nor the one the consumer is reading, so it
  never waits for the consumer and never tears a frame being read. A frame
  that is replaced before the consumer took it is dropped and counted, never
  queued: a slow detector costs frames, not latency.
- **Results** come back through a small ring in the same segment. If the main
  process falls more than a ring behind, the oldest results are lost and
  counted, again rather than queued.

Two pipes carry the wake-ups, one byte per frame or result: a doorbell the
consumer sleeps on with ``select``, and a result pipe the main process hands
to ``loop.add_reader``. Pipes rather than ``multiprocessing.Event`` because
``Event.set()`` blocks forever once a process is killed while waiting on it
(its condition variable waits for the dead sleeper to acknowledge); a pipe
just reads EOF, which also tells each side that the other one is gone.

A ``multiprocessing.Lock`` guards the small header. Every acquisition has a
timeout, so a peer killed while holding it turns into ``ExchangeError``
instead of a hung event loop.
"""

from __future__ import annotations

import errno
import os
import secrets
import select
import time
from contextlib import contextmanager
from multiprocessing import get_context, reduction
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Iterator, Optional

import numpy as np

from client.detection.interface import DetectionResult

#: Largest frame a slot holds. Pages are committed on first write, so the
#: 25 MB this reserves cost only what the frames actually use.
MAX_WIDTH = 3840
MAX_HEIGHT = 2160

#: Newest frame, frame being read, frame being written.
SLOTS = 3
#: Results kept for the main process; it normally collects every frame.
RESULT_RING = 64

#: How long a lock holder may keep the header, which it does for microseconds.
LOCK_TIMEOUT = 1.0

# Header words (int64).
_LATEST_SLOT = 0  # slot of the newest published frame, -1 before the first
_LATEST_SEQ = 1  # sequence number of that frame, counting from 1
_READING_SLOT = 2  # slot the consumer holds, -1 when none
_TAKEN_SEQ = 3  # sequence number of the newest frame the consumer took
_PUBLISHED = 4
_DROPPED = 5
_RESULTS_POSTED = 6
_STOP = 7  # the producer asks the consumer to exit
_READY = 8  # the consumer is set up and waiting for frames
_HEADER_WORDS = 16

_META_FIELDS = 4  # pts, width, height, seq
_RING_INTS = 5  # result number, pts, found, windowed, failed
_RING_FLOATS = 5  # x, y, detect_ms, started_at, finished_at

#: The frame slots start on a page boundary after the header.
_SLOTS_OFFSET = 8192


class ExchangeError(RuntimeError):
    """The other side broke the protocol, most likely by dying at a bad moment."""


def luma_view(frame: Any) -> np.ndarray:
    """The luma plane of a decoded yuv420p ``av.VideoFrame``, without a copy.

    Decoders pad rows to ``line_size`` bytes, so the plane is a strided view
    ``[:height, :width]``. Duck-typed so that this module never imports av.
    """
    plane = frame.planes[0]
    rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]


class FrameExchange:
    """One shared-memory mailbox: frames one way, results the other.

    The process that constructs it owns the segment and must ``close()`` and
    ``unlink()`` it (the context manager does both). Pickling it, which only
    works while starting a ``multiprocessing`` process, hands the consumer's
    end to the child; the child attaches by name and only ever ``close()``\\ s.
    """

    def __init__(self, max_width: int = MAX_WIDTH, max_height: int = MAX_HEIGHT) -> None:
        if max_width <= 0 or max_height <= 0:
            raise ValueError("capacity must be positive")
        self.max_width = max_width
        self.max_height = max_height
        self._owner = True
        self._unlinked = False
        self._closed = False
        self._lock = get_context("spawn").Lock()
        # Producer ends stay here; consumer ends are handed to the child and
        # closed here by ``detach_consumer()``.
        self._doorbell_r, self._doorbell_w = os.pipe()
        self._results_r, self._results_w = os.pipe()
        fds = (self._doorbell_r, self._doorbell_w, self._results_r, self._results_w)
        try:
            self._shm = SharedMemory(
                name=f"balltrack_{os.getpid()}_{secrets.token_hex(4)}",
                create=True,
                size=_SLOTS_OFFSET + SLOTS * max_width * max_height,
            )
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        for fd in fds:
            os.set_blocking(fd, False)
        self._map_views()
        self._header[:] = 0
        self._header[_LATEST_SLOT] = -1
        self._header[_READING_SLOT] = -1
        self._producer_gone = False
        self._consumer_gone = False
        self._collected = 0
        self._results_lost = 0

    # -- pickling: the consumer's end for a spawned process -----------------

    def __getstate__(self) -> dict[str, Any]:
        if not self._owner or self._closed:
            raise TypeError("only the owner of an open FrameExchange can hand it on")
        if self._doorbell_r < 0:
            raise TypeError("the consumer's end was already handed on")
        return {
            "name": self._shm.name,
            "max_width": self.max_width,
            "max_height": self.max_height,
            "lock": self._lock,
            # DupFd passes the descriptor itself to the child being spawned.
            "doorbell": reduction.DupFd(self._doorbell_r),
            "results": reduction.DupFd(self._results_w),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.max_width = state["max_width"]
        self.max_height = state["max_height"]
        self._owner = False
        self._unlinked = False
        self._closed = False
        self._lock = state["lock"]
        # Attaching registers the name with the resource tracker, which a
        # spawned child shares with its parent: a no-op, so the parent's
        # unlink stays the only one.
        self._shm = SharedMemory(name=state["name"])
        self._map_views()
        self._doorbell_r = state["doorbell"].detach()
        self._results_w = state["results"].detach()
        self._doorbell_w = self._results_r = -1
        for fd in (self._doorbell_r, self._results_w):
            os.set_inheritable(fd, False)
            os.set_blocking(fd, False)
        self._producer_gone = False
        self._consumer_gone = False
        self._collected = 0
        self._results_lost = 0

    def _map_views(self) -> None:
        buf = self._shm.buf
        self._header = np.ndarray((_HEADER_WORDS,), dtype=np.int64, buffer=buf)
        offset = self._header.nbytes
        self._meta = np.ndarray((SLOTS, _META_FIELDS), dtype=np.int64, buffer=buf, offset=offset)
        offset += self._meta.nbytes
        self._ring_ints = np.ndarray(
            (RESULT_RING, _RING_INTS), dtype=np.int64, buffer=buf, offset=offset
        )
        offset += self._ring_ints.nbytes
        self._ring_floats = np.ndarray(
            (RESULT_RING, _RING_FLOATS), dtype=np.float64, buffer=buf, offset=offset
        )
        assert offset + self._ring_floats.nbytes <= _SLOTS_OFFSET

    # -- lifecycle ------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._shm.name

    @property
    def closed(self) -> bool:
        return self._closed

    def detach_consumer(self) -> None:
        """Close this process's copies of the consumer's pipe ends.

        Call it on the owner once the consumer process has started: only then
        does the consumer's exit show up as EOF on ``result_fd``.
        """
        for name in ("_doorbell_r", "_results_w"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    def close(self) -> None:
        """Release this process's mapping and descriptors; idempotent.

        Frame views returned by ``wait_latest`` must be dropped first: a live
        view keeps the mapping (not the name) alive until it goes.
        """
        if self._closed:
            return
        self._closed = True
        for name in ("_doorbell_r", "_doorbell_w", "_results_r", "_results_w"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
        del self._header, self._meta, self._ring_ints, self._ring_floats
        # The owner's lock is a named POSIX semaphore, unlinked when the last
        # reference goes: drop ours now rather than at garbage collection.
        del self._lock
        try:
            self._shm.close()
        except BufferError:
            pass  # a caller still holds a frame view; the mapping goes with it

    def unlink(self) -> None:
        """Remove the segment's name (owner only); safe to call again."""
        if not self._owner:
            raise ExchangeError("only the process that created the exchange unlinks it")
        if self._unlinked:
            return
        self._unlinked = True
        self._shm.unlink()

    def __enter__(self) -> "FrameExchange":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
        if self._owner:
            self.unlink()

    # -- producer side --------------------------------------------------------

    def publish(self, pts: int, luma: np.ndarray) -> int:
        """Copy ``luma`` into a free slot and make it the newest frame.

        Never waits for the consumer. Returns the frame's sequence number.
        A newer frame replaces one the consumer has not taken yet: ``dropped``
        counts those.
        """
        if luma.ndim != 2 or luma.dtype != np.uint8:
            raise ValueError(f"expected a 2-D uint8 luma plane, got {luma.dtype} {luma.shape}")
        height, width = luma.shape
        if width > self.max_width or height > self.max_height:
            raise ValueError(
                f"frame {width}x{height} exceeds the exchange's capacity "
                f"{self.max_width}x{self.max_height}"
            )
        self._check_open()
        with self._locked():
            taken = {int(self._header[_LATEST_SLOT]), int(self._header[_READING_SLOT])}
        slot = next(s for s in range(SLOTS) if s not in taken)
        # The copy runs unlocked: the consumer only ever takes the latest
        # slot, and this one is not it until the header says so below.
        np.copyto(self._slot(slot, height, width), luma)
        with self._locked():
            header = self._header
            if header[_LATEST_SLOT] >= 0 and header[_LATEST_SEQ] > header[_TAKEN_SEQ]:
                header[_DROPPED] += 1
            seq = int(header[_LATEST_SEQ]) + 1
            self._meta[slot] = (pts, width, height, seq)
            header[_LATEST_SLOT] = slot
            header[_LATEST_SEQ] = seq
            header[_PUBLISHED] += 1
        _ring(self._doorbell_w)
        return seq

    def request_stop(self) -> None:
        """Ask the consumer to leave its loop, and wake it to notice."""
        self._check_open()
        with self._locked():
            self._header[_STOP] = 1
        _ring(self._doorbell_w)

    @property
    def result_fd(self) -> int:
        """Readable when results are waiting, or at EOF once the consumer is gone."""
        return self._results_r

    def collect_results(self) -> list[DetectionResult]:
        """Every result posted since the last call, oldest first.

        Results older than the ring are lost and counted in ``results_lost``.
        """
        self._check_open()
        if _drain(self._results_r):
            self._consumer_gone = True
        with self._locked():
            posted = int(self._header[_RESULTS_POSTED])
            first = max(self._collected + 1, posted - RESULT_RING + 1)
            self._results_lost += first - (self._collected + 1)
            results = []
            for number in range(first, posted + 1):
                index = number % RESULT_RING
                _, pts, found, windowed, failed = (int(v) for v in self._ring_ints[index])
                x, y, detect_ms, started_at, finished_at = (
                    float(v) for v in self._ring_floats[index]
                )
                results.append(
                    DetectionResult(
                        pts=pts,
                        x=x if found else None,
                        y=y if found else None,
                        detect_ms=detect_ms,
                        windowed=bool(windowed),
                        failed=bool(failed),
                        started_at=started_at,
                        finished_at=finished_at,
                    )
                )
            self._collected = posted
        return results

    @property
    def consumer_gone(self) -> bool:
        """The result pipe reached EOF: every consumer end is closed."""
        return self._consumer_gone

    @property
    def consumer_ready(self) -> bool:
        return bool(self._header[_READY])

    # -- consumer side --------------------------------------------------------

    def mark_ready(self) -> None:
        with self._locked():
            self._header[_READY] = 1

    @property
    def stop_requested(self) -> bool:
        """The producer asked the consumer to exit, or is gone altogether."""
        return self._producer_gone or bool(self._header[_STOP])

    def wait_latest(self, timeout: float) -> Optional[tuple[int, np.ndarray]]:
        """The newest frame not seen yet, as ``(pts, luma view)``.

        Waits up to ``timeout`` seconds; None on timeout, on a stop request or
        when the producer is gone. The view aliases shared memory and stays
        valid until ``release()`` (or the next ``wait_latest``, which releases
        it implicitly): the producer never writes a slot being read.
        """
        self._check_open()
        deadline = time.monotonic() + timeout
        while True:
            # Empty the doorbell before looking, so that a frame published
            # after the look rings it again and the select below wakes up.
            if _drain(self._doorbell_r):
                self._producer_gone = True
            frame = self._take_newest()
            if frame is not None or self.stop_requested:
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            # poll rather than select: select fails on descriptors >= 1024.
            poller = select.poll()
            poller.register(self._doorbell_r, select.POLLIN)
            if not poller.poll(remaining * 1000.0):
                return None

    def release(self) -> None:
        """Done with the frame from ``wait_latest``: its slot may be reused."""
        self._check_open()
        with self._locked():
            self._header[_READING_SLOT] = -1

    def post_result(
        self,
        pts: int,
        centre: Optional[tuple[float, float]],
        detect_ms: float,
        windowed: bool = False,
        started_at: float = 0.0,
        finished_at: float = 0.0,
        failed: bool = False,
    ) -> None:
        """Publish one result and wake the main process (times: see ``DetectionResult``)."""
        self._check_open()
        found = centre is not None
        x, y = centre if centre is not None else (0.0, 0.0)
        with self._locked():
            number = int(self._header[_RESULTS_POSTED]) + 1
            index = number % RESULT_RING
            self._ring_ints[index] = (number, pts, found, windowed, failed)
            self._ring_floats[index] = (x, y, detect_ms, started_at, finished_at)
            self._header[_RESULTS_POSTED] = number
        _ring(self._results_w)

    # -- counters -------------------------------------------------------------

    @property
    def published(self) -> int:
        return int(self._header[_PUBLISHED])

    @property
    def pending(self) -> bool:
        """A published frame is waiting for the consumer to take it."""
        return int(self._header[_LATEST_SEQ]) > int(self._header[_TAKEN_SEQ])

    @property
    def dropped(self) -> int:
        """Frames replaced by a newer one before the consumer took them."""
        return int(self._header[_DROPPED])

    @property
    def results_posted(self) -> int:
        return int(self._header[_RESULTS_POSTED])

    @property
    def results_lost(self) -> int:
        """Results overwritten in the ring before ``collect_results`` saw them."""
        return self._results_lost

    # -- internals ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ExchangeError("the frame exchange is closed")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if not self._lock.acquire(timeout=LOCK_TIMEOUT):
            raise ExchangeError(
                f"frame exchange lock held for over {LOCK_TIMEOUT} s: "
                "the other process probably died holding it"
            )
        try:
            yield
        finally:
            self._lock.release()

    def _slot(self, slot: int, height: int, width: int) -> np.ndarray:
        offset = _SLOTS_OFFSET + slot * self.max_width * self.max_height
        return np.ndarray((height, width), dtype=np.uint8, buffer=self._shm.buf, offset=offset)

    def _take_newest(self) -> Optional[tuple[int, np.ndarray]]:
        with self._locked():
            header = self._header
            if header[_LATEST_SEQ] <= header[_TAKEN_SEQ]:
                return None
            slot = int(header[_LATEST_SLOT])
            pts, width, height, seq = (int(v) for v in self._meta[slot])
            header[_READING_SLOT] = slot
            header[_TAKEN_SEQ] = seq
        return pts, self._slot(slot, height, width)


def _ring(fd: int) -> None:
    """Write one wake-up byte; a full pipe already means "wake up"."""
    if fd < 0:
        return
    try:
        os.write(fd, b"\0")
    except BlockingIOError:
        pass
    except BrokenPipeError:
        pass  # the reader is gone; whoever watches it finds out separately


def _drain(fd: int) -> bool:
    """Empty a non-blocking pipe; True if its writers are all gone (EOF)."""
    if fd < 0:
        return False
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            raise
        if not chunk:
            return True
        if len(chunk) < 4096:
            return False
