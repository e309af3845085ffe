"""The video track: renders the scene at the nominal time of each frame.

aiortc's ``VideoStreamTrack.next_timestamp`` is fixed at 30 fps, so this track
paces itself. Frame ``n`` shows the scene at ``n / fps`` and carries pts
``round(n * 90000 / fps)``; its ground truth and wall-clock production time go
to the scoreboard the moment it is handed to the encoder.

``first_due`` places the frame grid (``server.media.pacing``): the server
spreads its sessions' frames over the frame interval with it.

A ``FrameGate`` (the session's link adaptation) may thin the timeline to
every k-th frame and hold a frame back while the link is still draining a
queue; such frames are skipped at the source, never rendered or sent.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Optional, Protocol, Union

import av
from aiortc import VideoStreamTrack
from aiortc.mediastreams import MediaStreamError

from protocol.wire_clock import VIDEO_TIME_BASE
from server.core.ledger import frame_pts
from server.core.renderer import FrameRing
from server.core.scene import BallScene
from server.core.scenes import Scene
from server.core.scenes.classic import ClassicScene
from server.media.pacing import FramePacer

FrameListener = Callable[[int, float, float, float, float], None]
"""Called as ``listener(index, true_x, true_y, produced_at, visibility)`` for each
frame; ``visibility`` is the share of the ball in view (``Truth.visibility``)."""


def _no_listener(index: int, x: float, y: float, produced_at: float, visibility: float) -> None:
    """What a stopped track reports its frames to: nobody."""


class FrameGate(Protocol):
    """Decides how many frames of the nominal timeline go out."""

    @property
    def frame_interval(self) -> int:
        """Send every ``frame_interval``-th frame."""
        ...

    def admit(self, now: float) -> bool:
        """Whether the frame due at ``now`` may go."""
        ...

    def frame_sent(self, index: int, now: float) -> None:
        """Frame ``index`` is being handed to the encoder at ``now``."""
        ...

    def frames_skipped(self, count: int, now: float) -> None:
        """``count`` more frames were skipped to fit the link (thinned or held back)."""
        ...


class BallTrack(VideoStreamTrack):
    def __init__(
        self,
        scene: Union[Scene, BallScene],
        fps: float,
        on_frame: FrameListener,
        clock: Callable[[], float] = time.monotonic,
        start_gate: Optional[asyncio.Event] = None,
        frame_gate: Optional[FrameGate] = None,
        first_due: Optional[Callable[[float], float]] = None,
    ) -> None:
        super().__init__()
        self._start_gate = start_gate
        self._frame_gate = frame_gate
        #: Frames the frame gate held back (the link was still draining).
        self.frames_held = 0
        # A bare BallScene is the classic picture of its motion.
        self._scene = scene if isinstance(scene, Scene) else ClassicScene(scene, fps, 0)
        self._fps = fps
        self._on_frame = on_frame
        self._clock = clock
        self._pacer = FramePacer(fps, clock, first_due)
        self._frames = FrameRing(self._scene.width, self._scene.height)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        index = await self._wait_for_next_index()
        truth = self._scene.truth(index)
        frame = self._frames.fill(*self._scene.render(index), damage=self._scene.damage)
        frame.pts = frame_pts(index, self._fps)
        frame.time_base = VIDEO_TIME_BASE
        produced_at = self._clock()
        if self._frame_gate is not None:
            self._frame_gate.frame_sent(index, produced_at)
        self._on_frame(index, truth.x, truth.y, produced_at, truth.visibility)
        return frame

    async def _wait_for_next_index(self) -> int:
        if not self._pacer.started and self._start_gate is not None:
            # Frames sent before the client can answer would only count as
            # unanswered: hold the first one until the data channel is open.
            await self._start_gate.wait()
        gate = self._frame_gate
        if gate is None:
            return await self._pacer.next_index()
        while True:
            self._pacer.frame_interval = gate.frame_interval
            thinned = self._pacer.frames_thinned
            index = await self._pacer.next_index()
            if self.readyState != "live":
                raise MediaStreamError
            now = self._clock()
            admitted = gate.admit(now)
            skipped = self._pacer.frames_thinned - thinned + (not admitted)
            if skipped:
                gate.frames_skipped(skipped, now)
            if admitted:
                return index
            self.frames_held += 1

    def stop(self) -> None:
        super().stop()
        self._frames.close()
        # The callbacks are the session's bound methods: dropping them breaks
        # the session <-> track cycle, so an ended session (its scene, its
        # frames) goes by reference counting, not at the next full collection.
        self._on_frame = _no_listener
        self._pacer.first_due = None

    @property
    def frames_skipped(self) -> int:
        """Frames skipped because the track fell behind (a slow encoder, a busy machine)."""
        return self._pacer.frames_skipped

    @property
    def frames_skipped_for_rate(self) -> int:
        """Frames skipped to fit the link: thinned by the frame interval or held back."""
        return self._pacer.frames_thinned + self.frames_held
