"""Browser viewers of a live session: annotated video over their own WebRTC connection.

A viewer must cost the tracked session nothing it can feel. So each viewer
has its own ``RTCPeerConnection``, its own track and therefore its own
encoder, and it only *reads* the session: a few attributes and the newest
entries of its deque of answered frames, synchronously, at the viewer's own
pace. Nothing here awaits the session, locks anything the session uses or
puts anything in its way; a slow, lossy or vanished viewer only ever slows
down its own track.

Rendering the scene, annotating it and converting it to I420 runs on the
event loop, like the session's own rendering, and costs about as much: 0.6
to 1.2 ms a frame at 640x480, depending on the scene. A worker thread would cost more: its Python glue
competes for the GIL, and a loop thread waiting for the GIL can wait up to
the interpreter's 5 ms switch interval, which the session's answers would
feel. Encoding happens where aiortc always encodes: its sender, in the
loop's default executor.

``SessionViewers`` owns every viewer of the server and ends each one on the
first of: ``close`` (the browser's WHEP DELETE), its session ending, server
shutdown, its peer connection going ``failed`` or ``closed`` (a browser that
left: DTLS close, or ICE consent expiring about 30 s after it vanished), or
no connection within ``connect_timeout_s`` of the answer (a browser that
never connected).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Callable, Optional, Protocol

import av
import cv2
import numpy as np
from aiortc import (
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError

from protocol.ice_path import rtc_configuration
from protocol.ice_servers import IceSettings
from protocol.wire_clock import VIDEO_TIME_BASE
from server.console.annotation import SessionAnnotator
from server.console.backdrop import SceneRecipe
from server.core.ledger import FrameRecord, frame_pts
from server.core.renderer import yuv420p_frame
from server.core.scenes import Scene
from server.media.pacing import FramePacer
from server.sessions.offers import (
    InvalidDescription,
    exception_reason,
    receiving_video_mid,
    rejected_offer,
)

logger = logging.getLogger("server.console.viewer")


#: A viewer is for eyes: more than 30 fps would only cost CPU.
MAX_VIEWER_FPS = 30.0

#: How long a browser has, after the answer, to connect (ICE and DTLS).
CONNECT_TIMEOUT_S = 15.0

#: Random bytes in a viewer id: 12 url-safe characters, unguessable, so a
#: viewer's DELETE URL is its capability.
VIEWER_ID_BYTES = 9


class WatchedSession(Protocol):
    """What a viewer reads from a ``TrackingSession``, and nothing more."""

    @property
    def name(self) -> str:
        """The session id, as in the console's URLs."""
        ...

    @property
    def picture(self) -> Scene:
        """The session's scene: what its client is sent. Read, never rendered here."""
        ...

    @property
    def fps(self) -> float: ...

    @property
    def recent_answers(self) -> Sequence[FrameRecord]:
        """Answered frames, newest last (a bounded deque)."""
        ...

    @property
    def end_reason(self) -> Optional[str]:
        """None while the session runs: a viewer opened later would never be closed."""
        ...


class ViewerError(Exception):
    """A viewer could not be opened; the message says why, for the browser."""


class ViewerLimitReached(ViewerError):
    pass


class ViewerClosed(ViewerError):
    """The viewer was closed while it was being opened (session ended, shutdown)."""


def i420_frame(bgr: np.ndarray) -> av.VideoFrame:
    """A yuv420p frame of a BGR picture.

    OpenCV converts in about 0.1 ms at 640x480, PyAV's ``from_ndarray(bgr24)``
    plus ``reformat`` in about 0.8 ms; copying the planes in with
    ``plane.update`` saves another 0.1 ms over ``from_ndarray(yuv420p)``.
    """
    height, width = bgr.shape[:2]
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).ravel()
    luma_size, chroma_size = height * width, height * width // 4
    luma = i420[:luma_size].reshape(height, width)
    u = i420[luma_size : luma_size + chroma_size].reshape(height // 2, width // 2)
    v = i420[luma_size + chroma_size :].reshape(height // 2, width // 2)
    return yuv420p_frame(luma, u, v)


class ViewerTrack(VideoStreamTrack):
    """The annotated video of one session, paced on its own clock.

    aiortc's ``VideoStreamTrack.next_timestamp`` is fixed at 30 fps, so this
    track paces itself at the session's rate (at most ``MAX_VIEWER_FPS``).
    Frame ``n`` carries pts ``round(n * 90000 / fps)``. Each frame shows the
    session's newest answered frame over the scene as it was sent; before the
    first answer, the scene as it is ``n / fps`` seconds after the viewer
    started.
    """

    def __init__(
        self, session: WatchedSession, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._session = session
        self._fps = min(session.fps, MAX_VIEWER_FPS)
        # A scene of its own, made like the session's: the same pixels, and
        # the session's scene (and the buffers it streams from) left alone.
        self._annotator = SessionAnnotator(SceneRecipe.of(session.picture), session.name)
        self._scene_fps = session.picture.fps
        self._clock = clock
        self._pacer = FramePacer(self._fps, clock)
        self.frames_sent = 0

    @property
    def fps(self) -> float:
        return self._fps

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        # Behind (a busy machine), the pacer skips to the frame due now
        # rather than send a backlog: a viewer wants the present.
        index = await self._pacer.next_index()
        if self.readyState != "live":
            # Stopped while it slept: no frame after close.
            raise MediaStreamError
        frame = i420_frame(self.picture(index))
        frame.pts = frame_pts(index, self._fps)
        frame.time_base = VIDEO_TIME_BASE
        self.frames_sent += 1
        return frame

    def picture(self, index: int) -> np.ndarray:
        """The BGR picture of frame ``index``, from the session's state right now."""
        answers = self._session.recent_answers
        age = self._clock() - answers[-1].produced_at if answers else None
        waiting_index = round(index * self._scene_fps / self._fps)
        return self._annotator.annotate(answers, waiting_index, age)


class Viewer:
    """One browser watching one session: its peer connection and its track."""

    def __init__(
        self, viewer_id: str, session_id: str, pc: RTCPeerConnection, track: ViewerTrack
    ) -> None:
        self.id = viewer_id
        self.session_id = session_id
        self.answer_sdp = ""
        self.track = track
        self._pc = pc
        self._connected = asyncio.Event()
        self._negotiation: Optional[asyncio.Task[str]] = None
        self._watchdog: Optional[asyncio.Task[None]] = None
        self._closing: Optional[asyncio.Task[None]] = None

    @property
    def closed(self) -> bool:
        """Closing or closed: it sends nothing more."""
        return self._closing is not None

    @property
    def connection_state(self) -> str:
        return self._pc.connectionState

    def negotiate(self, offer_sdp: str, video_mid: str) -> asyncio.Task[str]:
        """Answer the offer, in a task that nobody cancels.

        aiortc leaks a socket when a peer connection is closed or cancelled
        while it gathers candidates (its gatherer opens one after close), so
        a close waits for this task to finish instead of interrupting it;
        without STUN that takes milliseconds.
        """
        self._negotiation = asyncio.create_task(_answer(self._pc, offer_sdp, video_mid, self.track))
        return self._negotiation

    def watch(self, connect_timeout_s: float, on_gone: Callable[[Viewer], None]) -> None:
        """Call ``on_gone(self)`` when the browser fails to connect or leaves."""

        @self._pc.on("connectionstatechange")
        def on_state() -> None:
            state = self._pc.connectionState
            if state == "connected":
                self._connected.set()
            elif state in ("failed", "closed"):
                on_gone(self)

        self._watchdog = asyncio.create_task(self._expect_connection(connect_timeout_s, on_gone))

    async def _expect_connection(self, timeout_s: float, on_gone: Callable[[Viewer], None]) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        except asyncio.TimeoutError:
            logger.info(
                "viewer %s of %s: no connection within %g s", self.id, self.session_id, timeout_s
            )
            on_gone(self)

    def close(self) -> asyncio.Task[None]:
        """Stop the track now and close the peer connection in a task of its own.

        Every call returns the same task. It is not the caller's: a cancelled
        caller (a browser that hung up on its DELETE) cannot leave a peer
        connection half closed.
        """
        if self._closing is None:
            self.track.stop()
            self._closing = asyncio.create_task(self._close())
        return self._closing

    async def _close(self) -> None:
        if self._negotiation is not None:
            await asyncio.gather(self._negotiation, return_exceptions=True)
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        await close_peer_connection(self._pc)


class SessionViewers:
    """Every viewer of the server: opening, limits, and every way of ending."""

    def __init__(
        self,
        max_viewers: int = 4,
        ice: Optional[IceSettings] = None,
        *,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_viewers < 0:
            raise ValueError("max_viewers must not be negative")
        self._max_viewers = max_viewers
        # The server's own ICE servers (--own-ice-server), none unless asked:
        # a relay or STUN server it cannot reach stalls gathering for seconds.
        self._ice = ice if ice is not None else IceSettings()
        self._connect_timeout_s = connect_timeout_s
        self._clock = clock
        self._viewers: dict[str, Viewer] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._stopped = False

    @property
    def count(self) -> int:
        """Open viewers, those still negotiating included."""
        return len(self._viewers)

    def viewers(self, session_id: str) -> list[Viewer]:
        return [v for v in self._viewers.values() if v.session_id == session_id]

    async def open(self, session: WatchedSession, offer_sdp: str) -> Viewer:
        """Answer a browser's offer with the session's annotated video.

        Returns once ICE gathering is complete: the answer carries every
        candidate. Raises ``ViewerLimitReached``, ``InvalidDescription`` or
        ``ViewerClosed``; whatever it raises, nothing of the viewer remains.
        """
        if self._stopped:
            raise ViewerClosed("the server is shutting down")
        if session.end_reason is not None:
            # It ended between the caller finding it and this call (the
            # request's body was still arriving): close_session has run or
            # is about to, and would not see a viewer registered after it.
            raise ViewerClosed(f"the session has ended ({session.end_reason})")
        if len(self._viewers) >= self._max_viewers:
            raise ViewerLimitReached(f"{self._max_viewers} viewers are open, the most allowed")
        video_mid = receiving_video_mid(offer_sdp)
        track = ViewerTrack(session, self._clock)
        viewer_id = self._new_id()
        servers = self._ice.servers(f"viewer-{viewer_id}", time.time())
        pc = RTCPeerConnection(rtc_configuration(servers, self._ice.transport_policy))
        viewer = Viewer(viewer_id, session.name, pc, track)
        # Registered before the first await, so it counts against the limit
        # and close_session or stop can end it while it negotiates.
        self._viewers[viewer.id] = viewer
        try:
            viewer.answer_sdp = await asyncio.shield(viewer.negotiate(offer_sdp, video_mid))
        except BaseException as exc:
            closed = viewer.closed
            await asyncio.shield(self._retire(viewer))
            if not isinstance(exc, Exception):
                raise  # the request was cancelled
            if closed:
                raise ViewerClosed("the viewer was closed while it was being opened") from exc
            if isinstance(exc, (ViewerError, InvalidDescription)):
                raise
            raise InvalidDescription(
                f"could not answer the offer: {exception_reason(exc)}"
            ) from exc
        if viewer.closed:
            raise ViewerClosed("the viewer was closed while it was being opened")
        viewer.watch(self._connect_timeout_s, self._on_gone)
        logger.info("viewer %s of %s opened (%d open)", viewer.id, viewer.session_id, self.count)
        return viewer

    async def close(self, session_id: str, viewer_id: str) -> bool:
        """End one viewer; False when no such viewer of that session is open."""
        viewer = self._viewers.get(viewer_id)
        if viewer is None or viewer.session_id != session_id:
            return False
        await asyncio.shield(self._retire(viewer))
        return True

    async def close_session(self, session_id: str) -> None:
        """The session ended: end all its viewers."""
        closing = [self._retire(v) for v in self.viewers(session_id)]
        await asyncio.shield(asyncio.gather(*closing, return_exceptions=True))

    async def stop(self) -> None:
        """Server shutdown: end every viewer and refuse new ones."""
        self._stopped = True
        for viewer in list(self._viewers.values()):
            self._retire(viewer)
        while self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _on_gone(self, viewer: Viewer) -> None:
        if self._viewers.get(viewer.id) is viewer:
            logger.info(
                "viewer %s of %s gone (connection %s)",
                viewer.id,
                viewer.session_id,
                viewer.connection_state,
            )
        self._retire(viewer)

    def _retire(self, viewer: Viewer) -> asyncio.Task[None]:
        """Forget the viewer now and start closing it; ``stop`` waits for the close."""
        if self._viewers.get(viewer.id) is viewer:
            del self._viewers[viewer.id]
        task = viewer.close()
        if not task.done():
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return task

    def _new_id(self) -> str:
        while True:
            viewer_id = secrets.token_urlsafe(VIEWER_ID_BYTES)
            if viewer_id not in self._viewers:
                return viewer_id


async def _answer(pc: RTCPeerConnection, offer_sdp: str, video_mid: str, track: ViewerTrack) -> str:
    """Apply the offer, send ``track`` on its video section, return the answer SDP."""
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
    except Exception as exc:  # ValueError, AssertionError, OperationError, KeyError, ...
        raise rejected_offer(exc) from exc
    for transceiver in pc.getTransceivers():
        if transceiver.mid == video_mid and transceiver.kind == "video":
            transceiver.sender.replaceTrack(track)
            transceiver.direction = "sendonly"
        else:
            # Sections we have nothing for (audio, a second video): answer
            # inactive, so no media is received that nobody would read.
            transceiver.direction = "inactive"
    # setLocalDescription gathers every ICE candidate into the SDP.
    await pc.setLocalDescription(await pc.createAnswer())
    return pc.localDescription.sdp


async def close_peer_connection(pc: RTCPeerConnection) -> None:
    """``pc.close()``, and if aiortc trips over a state a bad offer left, the
    transports' sockets closed one by one all the same."""
    try:
        await pc.close()
    except Exception:
        logger.warning("closing a viewer's peer connection failed", exc_info=True)
        transports = [t.receiver.transport for t in pc.getTransceivers()]
        if pc.sctp is not None:
            transports.append(pc.sctp.transport)
        for dtls in transports:
            if dtls is not None:
                for transport in (dtls, dtls.transport):
                    with contextlib.suppress(Exception):
                        await transport.stop()
