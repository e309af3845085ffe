"""The video track: renders the scene at the nominal time of each frame.

aiortc's ``VideoStreamTrack.next_timestamp`` is fixed at 30 fps, so this track
paces itself. Frame ``n`` shows the scene at ``n / fps`` and carries pts
``round(n * 90000 / fps)``; its ground truth and wall-clock production time go
to the scoreboard the moment it is handed to the encoder.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from typing import Callable, Optional

import av
from aiortc import VideoStreamTrack
from aiortc.mediastreams import MediaStreamError

from server.ledger import VIDEO_CLOCK_RATE, frame_pts
from server.pacing import FramePacer
from server.renderer import BallRenderer
from server.scene import BallScene

TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)

FrameListener = Callable[[int, float, float, float], None]
"""Called as ``listener(index, true_x, true_y, produced_at)`` for each frame."""


class BallTrack(VideoStreamTrack):
    def __init__(
        self,
        scene: BallScene,
        fps: float,
        on_frame: FrameListener,
        clock: Callable[[], float] = time.monotonic,
        start_gate: Optional[asyncio.Event] = None,
    ) -> None:
        super().__init__()
        self._start_gate = start_gate
        self._scene = scene
        self._fps = fps
        self._renderer = BallRenderer(scene.width, scene.height, scene.radius)
        self._on_frame = on_frame
        self._clock = clock
        self._pacer = FramePacer(fps, clock)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        index = await self._wait_for_next_index()
        x, y = self._scene.position(index / self._fps)
        frame = self._renderer.render(x, y)
        frame.pts = frame_pts(index, self._fps)
        frame.time_base = TIME_BASE
        self._on_frame(index, x, y, self._clock())
        return frame

    async def _wait_for_next_index(self) -> int:
        if not self._pacer.started and self._start_gate is not None:
            # Frames sent before the client can answer would only count as
            # unanswered: hold the first one until the data channel is open.
            await self._start_gate.wait()
        return await self._pacer.next_index()

    @property
    def frames_skipped(self) -> int:
        return self._pacer.frames_skipped
