"""The answer a perfect detector would give: each frame's true centre, from its pts.

The server draws frame ``n`` at ``BallScene.position(n / fps)`` and stamps it
with pts ``round(n * 90000 / fps)``; session number ``k`` of a server started
with ``--seed s`` has the scene ``BallScene.from_seed(..., s + k)``
(``server.sessions.session``). So a client that knows the scene and a
frame's pts knows the truth without looking at a pixel. The load client
(``lab.load_client``) answers this way: the server then scores and times
exactly what it would for a real client, and its error stays near 0 unless a
frame is named wrongly (a pts off by a frame is off by ``speed / fps`` px,
10 at the defaults).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from protocol.coordinates import CoordinateReport, encode_report
from protocol.wire_clock import VIDEO_CLOCK_RATE
from server.core.scene import BallScene

#: Decimals kept of a coordinate: what a detector's centroid is worth, and
#: an answer the size of a real client's.
COORDINATE_DECIMALS = 4


@dataclass(frozen=True)
class SceneSettings:
    """What the server was started with that decides every session's scene:
    its defaults, and the flags of the same names."""

    width: int = 640
    height: int = 480
    radius: float = 20.0
    speed: float = 300.0
    fps: float = 30.0
    seed: int = 0

    def scene(self, session_number: int) -> BallScene:
        """The scene of the server's session ``session_number`` (its first is 1)."""
        return BallScene.from_seed(
            self.width, self.height, self.radius, self.speed, self.seed + session_number
        )


class TrueAnswers:
    """The answers of one session: frame pts in, coordinates message out."""

    def __init__(self, settings: SceneSettings, session_number: int) -> None:
        self._scene = settings.scene(session_number)
        self._fps = settings.fps

    def frame_index(self, pts: int) -> int:
        """The frame a received pts names; the nearest, since VP8 may be a tick off."""
        return round(pts * self._fps / VIDEO_CLOCK_RATE)

    def report(self, pts: int, rtp_timestamp: Optional[int]) -> CoordinateReport:
        x, y = self._scene.position(self.frame_index(pts) / self._fps)
        return CoordinateReport(
            pts,
            round(x, COORDINATE_DECIMALS),
            round(y, COORDINATE_DECIMALS),
            rtp_timestamp=rtp_timestamp,
        )

    def message(self, pts: int, rtp_timestamp: Optional[int]) -> str:
        """The data channel message, as the real client encodes it."""
        return encode_report(self.report(pts, rtp_timestamp))
