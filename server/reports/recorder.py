"""A session's recording: the annotated video and the kept stream, written by a worker process.

What the session hands over per frame is small: for the video, the
snapshot the live view would draw from at that moment (the frame's pts and
index, the newest answered frames, how old the newest is); for the kept
stream, the frame's encoded bytes. A worker process draws each snapshot
with the live view's own code (``server.console.annotation``), over the
session's own scene made again from its recipe, encodes it
with libx264 into ``<session>.mp4`` (faststart, so browsers start playing
before the whole file is in) at the frame's own pts, and writes the kept
stream into ``<session>.ivf`` (``protocol.recording``).

The session never waits for it:

- each hand-off is one pickled message written to a pipe through an
  asyncio write transport: never blocking, no thread in the server. (A
  ``multiprocessing.Queue`` has a feeder thread that takes the server's
  GIL for every message; on a loaded machine the OS can preempt it while
  it holds the GIL, and the event loop then waits.) Past
  ``PIPE_BUFFER_LIMIT`` bytes waiting (a worker that stopped reading) a
  message is dropped and counted.
- drawing, encoding and every disk write happen in the worker, with its own
  GIL, at a lower priority (``WORKER_NICENESS``) and libx264 on one thread:
  on a busy machine it gets the CPU the sessions leave. Behind, it keeps at
  most ``VIDEO_BACKLOG_S`` of snapshots and drops (and counts) the oldest;
  kept-stream frames it writes the moment they arrive, because a stream
  missing a frame could not be decoded past it.
- a worker that cannot write (full disk, unwritable directory) says why
  at the end; the session logs one line and its report is complete.
- ``finish`` (after the session gave back its slot) waits for the worker
  to write what it has, bounded by ``FINISH_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import pickle
import queue
import struct
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from protocol.recording import stream_path, video_path
from server.console.backdrop import SceneRecipe
from server.core.ledger import FrameRecord
from server.core.scenes import Scene

logger = logging.getLogger("server.reports.recorder")

#: Seconds of video snapshots that may wait for the worker before frames are dropped.
VIDEO_BACKLOG_S = 5.0
#: Bytes waiting for the worker in the session's pipe before frames are
#: dropped there: a worker that stopped reading (the snapshots are a few
#: hundred bytes, encoded frames a few kB, a 1080p keyframe ~100 kB).
PIPE_BUFFER_LIMIT = 16 << 20
#: The worker's nice value: it gets the CPU the sessions leave.
WORKER_NICENESS = 10
VIDEO_MESSAGE = "video"
STREAM_MESSAGE = "stream"
#: How long ``finish`` waits for the worker to write what it has.
FINISH_TIMEOUT_S = 60.0
#: Free space the recorder leaves on the report directory's file system: it
#: stops (keeping what it wrote) rather than take the room the reports need,
#: about 100 bytes of CSV a frame, 16 MiB being some 45 hours at 30 fps.
DISK_RESERVE_BYTES = 16 << 20
#: The annotated video's x264 options: fast to encode, small for a ball on black.
VIDEO_OPTIONS = {"preset": "veryfast", "tune": "animation", "crf": "23"}

#: (index, true_x, true_y, reported_x, reported_y, error_px, latency_ms) of an answered frame.
AnsweredRow = tuple[int, float, float, Optional[float], Optional[float], Optional[float], float]


@dataclass(frozen=True)
class VideoSnapshot:
    """What the live view would draw from when frame ``pts`` went out."""

    pts: int
    #: The frame's index in the scene: the picture shown before any answer.
    index: int
    #: The newest answered frames, oldest first (at most the trail length).
    answers: tuple[AnsweredRow, ...]
    #: How long ago the newest answered frame was produced, s.
    answer_age_s: Optional[float]


@dataclass
class RecordingStats:
    """The report's ``recording`` section."""

    video: Optional[str] = None
    stream: Optional[str] = None
    frames_recorded: int = 0
    frames_dropped: int = 0
    stream_frames: int = 0
    stream_frames_dropped: int = 0
    rtp_timestamp_origin: Optional[int] = None
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)  # a copy: errors included


@dataclass(frozen=True)
class RecordingSetup:
    """What the worker needs to know, sent once as it starts."""

    name: str
    video_path: Path
    stream_path: Path
    #: The session's scene, made again in the worker to draw the very pixels sent.
    scene: SceneRecipe
    codec: str

    @property
    def width(self) -> int:
        return self.scene.motion.width

    @property
    def height(self) -> int:
        return self.scene.motion.height


def answered_row(record: FrameRecord) -> AnsweredRow:
    assert record.latency_ms is not None
    return (
        record.index,
        record.true_x,
        record.true_y,
        record.reported_x,
        record.reported_y,
        record.error_px,
        record.latency_ms,
    )


class SessionRecorder:
    """Lifecycle: ``await start()``; ``frame_sent`` and ``frame_encoded`` per
    frame; ``await finish()`` once; ``close()`` (idempotent) kills a worker
    that is left."""

    def __init__(
        self,
        report_dir: Path,
        name: str,
        scene: Scene,
        codec: str,
        reserve_bytes: int = DISK_RESERVE_BYTES,
    ) -> None:
        self._reserve_bytes = reserve_bytes
        self._setup = RecordingSetup(
            name,
            video_path(report_dir, name),
            stream_path(report_dir, name),
            SceneRecipe.of(scene),
            codec.lower(),
        )
        self._video_backlog = max(2, round(scene.fps * VIDEO_BACKLOG_S))
        self._process: Optional[multiprocessing.process.BaseProcess] = None
        self._pipe: Optional[asyncio.WriteTransport] = None
        self._results: Optional[multiprocessing.Queue] = None
        self.stats = RecordingStats()

    @property
    def name(self) -> str:
        return self._setup.name

    @property
    def paths(self) -> tuple[Path, Path]:
        """The annotated video's and the sent stream's files."""
        return self._setup.video_path, self._setup.stream_path

    async def start(self) -> None:
        """Start the worker (forked in a few ms, see ``prepare_recorders``).

        :raises OSError: no process or pipe could be made.
        """
        context = _context()
        reader, writer = context.Pipe(duplex=False)
        try:
            self._results = context.Queue()
            self._process = context.Process(
                target=_work,
                args=(
                    self._setup,
                    reader,
                    self._results,
                    self._reserve_bytes,
                    self._video_backlog,
                ),
                name=f"recorder {self.name}",
                daemon=True,
            )
            with _without_main_module():
                self._process.start()
            pipe = open(os.dup(writer.fileno()), "wb", buffering=0)
        finally:
            reader.close()
            writer.close()
        loop = asyncio.get_running_loop()
        self._pipe, _ = await loop.connect_write_pipe(asyncio.Protocol, pipe)

    @property
    def recording(self) -> bool:
        """Whether this recorder still takes frames."""
        return self._pipe is not None and not self._pipe.is_closing()

    def frame_sent(
        self,
        index: int,
        pts: int,
        answers: Sequence[FrameRecord],
        answer_age_s: Optional[float],
    ) -> None:
        """Frame ``index`` is going out at ``pts``; ``answers`` are the newest answered frames, oldest first."""
        snapshot = VideoSnapshot(pts, index, tuple(answered_row(r) for r in answers), answer_age_s)
        if not self._send((VIDEO_MESSAGE, snapshot)):
            self.stats.frames_dropped += 1

    def frame_encoded(self, rtp_timestamp: int, data: bytes) -> None:
        """One encoded frame as it left the encoder (``server.media.stream_recorder``)."""
        if not self._send((STREAM_MESSAGE, (rtp_timestamp, data))):
            self.stats.stream_frames_dropped += 1

    def _send(self, message: Any) -> bool:
        """Queue ``message`` for the worker without waiting; False if it was dropped."""
        pipe = self._pipe
        if pipe is None or pipe.is_closing() or pipe.get_write_buffer_size() > PIPE_BUFFER_LIMIT:
            return False
        pipe.write(_framed(message))
        return True

    async def finish(self) -> RecordingStats:
        """Let the worker write what it has, then return the report's figures.

        Logs one line if the recording could not be written.
        """
        pipe, results, process = self._pipe, self._results, self._process
        self._pipe = None
        if pipe is None or results is None or process is None:
            return self.stats
        if not pipe.is_closing():
            pipe.write(_framed(None))
            deadline = time.monotonic() + FINISH_TIMEOUT_S
            while pipe.get_write_buffer_size() and time.monotonic() < deadline:
                if pipe.is_closing():
                    break
                await asyncio.sleep(0.05)
        pipe.close()
        await asyncio.to_thread(self._collect, results, process)
        stats = self.stats
        if stats.errors:
            logger.warning(
                "%s: recording incomplete (%s); the session and its report are not affected",
                self.name,
                "; ".join(stats.errors),
            )
        return stats

    def _collect(
        self, results: multiprocessing.Queue, process: multiprocessing.process.BaseProcess
    ) -> None:
        result = None
        deadline = time.monotonic() + FINISH_TIMEOUT_S
        while result is None and time.monotonic() < deadline:
            try:
                result = results.get(timeout=0.2)
            except queue.Empty:
                if not process.is_alive():
                    # It may have put its result just before exiting.
                    with contextlib.suppress(queue.Empty):
                        result = results.get(timeout=0.5)
                    break
        if result is None:
            self.stats.errors.append("the recorder process ended without finishing its files")
            self.close()
            return
        process.join(FINISH_TIMEOUT_S)
        self.stats.frames_recorded = result["frames_recorded"]
        self.stats.frames_dropped += result["frames_dropped"]
        self.stats.stream_frames = result["stream_frames"]
        self.stats.video = result["video"]
        self.stats.stream = result["stream"]
        self.stats.errors.extend(result["errors"])

    def close(self) -> None:
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            pipe.close()
        process, self._process = self._process, None
        if process is not None and process.is_alive():
            process.kill()
            process.join(5)


def _framed(message: Any) -> bytes:
    # multiprocessing.Connection's framing, so the worker reads with recv().
    payload = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return struct.pack("!i", len(payload)) + payload


def _context() -> multiprocessing.context.ForkServerContext:
    # Not fork: a fork of a process running aiortc's threads is unsafe. Not
    # spawn: each worker would import the server's main module and PyAV
    # afresh, a second of CPU taken from the sessions as one starts. A fork
    # server imports them once (``prepare_recorders``) and forks each worker
    # from that clean process in a few ms.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(_PRELOAD))
    return context


_PRELOAD = ("numpy", "cv2", "av", "server.console.annotation", "server.reports.recorder")


def prepare_recorders() -> None:
    """Start the recorders' fork server and wait until it has imported what they need.

    Called once, before the server takes sessions: the imports take a second
    or two of CPU that the first session's stream must not compete with.
    """
    warm_up = _context().Process(target=_nothing, name="recorder warm-up")
    with _without_main_module():
        warm_up.start()  # forked once the fork server's imports are done
    warm_up.join()


@contextlib.contextmanager
def _without_main_module() -> Iterator[None]:
    """Start a worker that does not run the server's main script again.

    multiprocessing prepares every child, forked by the fork server or
    spawned, by running the parent's main script (``server/server.py``) as
    ``__mp_main__``: aiortc and the whole server imported afresh, a second
    of CPU taken from the session that is starting. The worker needs
    nothing from it (its target lives in this module, which the fork server
    preloads), and multiprocessing skips that step for a main module
    without ``__file__``. Single-threaded use only: the event loop's thread
    starts workers.
    """
    main = sys.modules.get("__main__")
    path = main.__dict__.pop("__file__", None) if main is not None else None
    try:
        yield
    finally:
        if main is not None and path is not None:
            main.__file__ = path


def _nothing() -> None:
    pass


# -- the worker process -------------------------------------------------------


class _Video:
    """The annotated MP4: the live view's drawing, encoded at each frame's pts."""

    def __init__(self, setup: RecordingSetup) -> None:
        import fractions

        import av

        from server.console.annotation import SessionAnnotator

        self._annotator = SessionAnnotator(setup.scene, setup.name)
        self._container = av.open(
            str(setup.video_path), "w", format="mp4", options={"movflags": "+faststart"}
        )
        stream = self._container.add_stream("libx264", options=VIDEO_OPTIONS)
        stream.width = setup.width
        stream.height = setup.height
        stream.pix_fmt = "yuv420p"
        # One thread: the worker must not take every core from the sessions.
        stream.codec_context.thread_count = 1
        stream.time_base = fractions.Fraction(1, 90000)
        stream.codec_context.time_base = fractions.Fraction(1, 90000)
        self._stream = stream
        self._height = setup.height
        self._width = setup.width
        self._last_pts: Optional[int] = None
        self.frames = 0

    def write(self, snapshot: VideoSnapshot) -> None:
        import av
        import cv2
        import numpy as np

        if self._last_pts is not None and snapshot.pts <= self._last_pts:
            return
        answers = [
            FrameRecord(index, 0, tx, ty, 0.0, True, rx, ry, error, latency)
            for index, tx, ty, rx, ry, error, latency in snapshot.answers
        ]
        picture = self._annotator.annotate(answers, snapshot.index, snapshot.answer_age_s)
        i420 = np.asarray(cv2.cvtColor(picture, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts = snapshot.pts
        frame.time_base = self._stream.time_base
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self._last_pts = snapshot.pts
        self.frames += 1

    def close(self) -> None:
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()


class _Files:
    """The worker's two files; a file that fails is closed and written no more."""

    def __init__(self, setup: RecordingSetup, reserve_bytes: int) -> None:
        from protocol.recording import IvfWriter

        self._setup = setup
        self._reserve = reserve_bytes
        self.errors: list[str] = []
        self.video: Optional[_Video] = None
        self.ivf: Optional[IvfWriter] = None
        self.video_frames = 0
        self.stream_frames = 0
        #: Stopped for the reports' sake (the disk is nearly full): keep what is written.
        self.stopped = False
        self._closed = False
        self._broken: list[_Video] = []
        try:
            # The reports' directory appears with a session's first frame
            # (report.py); the recorder may start before it.
            setup.video_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # the opens below fail too, and say why
        try:
            self.video = _Video(setup)
        except Exception as exc:  # noqa: BLE001  any failure costs the video, never the session
            self.errors.append(f"cannot write {setup.video_path}: {_reason(exc)}")
        try:
            self.ivf = IvfWriter(
                open(setup.stream_path, "wb"), setup.codec, setup.width, setup.height
            )
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"cannot write {setup.stream_path}: {_reason(exc)}")

    def _room(self) -> bool:
        if self.stopped:
            return False
        try:
            usage = os.statvfs(self._setup.video_path.parent)
        except OSError:
            return True  # the write itself will say what is wrong
        if usage.f_bavail * usage.f_frsize >= self._reserve:
            return True
        self.stopped = True
        self.errors.append(
            f"stopped: less than {self._reserve / 2**20:g} MiB free in "
            f"{self._setup.video_path.parent}, left to the reports"
        )
        self.close()
        return False

    def write_stream(self, item: tuple[int, bytes]) -> None:
        if self.ivf is None or not self._room():
            return
        try:
            self.ivf.write(*item)
            self.stream_frames += 1
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"cannot write {self._setup.stream_path}: {_reason(exc)}")
            # A cut IVF still replays up to its last whole frame: it stays.
            _close_quietly(self.ivf)
            self.ivf = None

    def write_video(self, snapshot: VideoSnapshot) -> None:
        if self.video is None or not self._room():
            return
        try:
            self.video.write(snapshot)
            self.video_frames = self.video.frames
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"cannot write {self._setup.video_path}: {_reason(exc)}")
            self._drop_video()

    def _drop_video(self) -> None:
        # An MP4 cut short has no index and plays nowhere: give its space back.
        # PyAV (18.1) crashes flushing or closing a container whose write
        # failed: the broken one is kept, never closed, and the worker ends
        # with os._exit (see _work).
        if self.video is not None:
            self._broken.append(self.video)
        self.video = None
        self.video_frames = 0
        with contextlib.suppress(OSError):
            self._setup.video_path.unlink()

    def close(self) -> None:
        """Finish both files; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.video is not None:
            try:
                self.video.close()
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"cannot finish {self._setup.video_path}: {_reason(exc)}")
                self._drop_video()
        if self.ivf is not None:
            try:
                self.ivf.close()
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"cannot finish {self._setup.stream_path}: {_reason(exc)}")

    def result(self) -> dict[str, Any]:
        setup = self._setup
        return {
            "frames_recorded": self.video_frames if self.video is not None else 0,
            "stream_frames": self.stream_frames if self.ivf is not None else 0,
            "video": setup.video_path.name if self.video is not None else None,
            "stream": setup.stream_path.name if self.ivf is not None else None,
            "errors": self.errors,
        }


def _work(
    setup: RecordingSetup,
    reader: Connection,
    results: multiprocessing.Queue,
    reserve_bytes: int,
    video_backlog: int,
) -> None:
    # The sessions come first: on a busy machine the recorder gets what is
    # left and drops (counted) frames rather than take a core from them.
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    files = _Files(setup, reserve_bytes)
    videos: deque[VideoSnapshot] = deque()
    frames_dropped = 0
    receiving = True
    while receiving or videos:
        # Take everything that has arrived; kept-stream frames are written at
        # once (one missing breaks decoding), snapshots wait their turn.
        timeout = 0.0 if videos else 1.0
        while receiving and reader.poll(timeout):
            timeout = 0.0
            try:
                message = reader.recv()
            except (EOFError, OSError):
                files.errors.append("the server went away")
                receiving = False
                break
            if message is None:
                receiving = False
                break
            kind, payload = message
            if kind == STREAM_MESSAGE:
                files.write_stream(payload)
            else:
                videos.append(payload)
                if len(videos) > video_backlog:
                    videos.popleft()
                    frames_dropped += 1
        if videos:
            files.write_video(videos.popleft())
    files.close()
    results.put({**files.result(), "frames_dropped": frames_dropped})
    # Hand the result over for sure, then leave without running destructors:
    # a broken PyAV container would crash in its own.
    results.close()
    results.join_thread()
    os._exit(0)


def _close_quietly(closable: Any) -> None:
    try:
        closable.close()
    except Exception:  # noqa: BLE001  already failing; the first error is the one reported
        pass


def _reason(exc: BaseException) -> str:
    strerror = getattr(exc, "strerror", None)
    return str(strerror) if strerror else str(exc) or type(exc).__name__
