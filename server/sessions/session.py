"""One client's session: negotiate, stream, score, and a clean end.

The client reaches the session through a ``ClientLink``: TCP signaling, where
the server offers (``server.sessions.signaling_link``), or a WHEP POST, where the
browser offers (``server.sessions.whep_link``). Everything after the negotiation is
the same for both.

A session ends on the first of: the client leaving (BYE or EOF on signaling,
a WHEP DELETE), an ICE or DTLS failure, no data channel within the handshake
timeout, the configured duration, or the server shutting down. Every path
goes through the same ``finally`` so nothing outlives it: the peer
connection, its tasks, the client's link and the ledger.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Union

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
)

from protocol.coordinates import CHANNEL_LABEL, LatencyFeedback, encode_feedback
from protocol.signaling import SignalingError
from protocol.stage_trace import StageTraceWriter
from server.core.ledger import FrameRecord, frame_pts
from server.core.scene import BallScene
from server.core.scenes import DEFAULT_SCENE, Scene, make_scene
from server.core.scoreboard import Interval, Scoreboard
from server.media.codec_options import install_fast_h264_encoder
from server.media.inline_encoding import encode_in_loop
from server.media.link_adaptation import LinkAdaptation
from server.media.rtp_origin import SenderTimestampOrigin
from server.media.stage_tracer import ServerStageTracer
from server.media.track import BallTrack
from server.reports.plotter import ReportPlotter
from server.reports.report import SessionReport

logger = logging.getLogger("server.sessions.session")

# End reasons after which the client is gone and needs no BYE.
CLIENT_SAID_BYE = "client said bye"
CLIENT_DISCONNECTED = "client disconnected"

#: How long the client's SCTP may keep retransmitting a lost answer.
ANSWER_LIFETIME_MS = 300

ChannelAdopter = Callable[[RTCDataChannel], None]

#: How long answers may still arrive after the server stops sending.
ANSWER_GRACE_S = 0.3

#: How far back the console's live charts reach.
RECENT_ANSWERS_S = 30.0


class SessionObserver(Protocol):
    """What a session reports to the server-wide metrics and display."""

    def session_started(self) -> None: ...

    def session_ended(self) -> None: ...

    def frame_sent(self) -> None: ...

    def frame_answered(self, error_px: Optional[float], latency_ms: float) -> None: ...

    def invalid_message(self) -> None: ...


class ClientLink(Protocol):
    """How a session reaches its client, before and after the media flows."""

    @property
    def peer(self) -> str:
        """Who the client is, for the logs and the report."""
        ...

    async def negotiate(
        self, pc: RTCPeerConnection, adopt_channel: ChannelAdopter, timeout: float
    ) -> None:
        """Complete the offer/answer exchange on ``pc``, whose video sender is set up.

        An offering link creates the ``coordinates`` channel and hands it to
        ``adopt_channel``; otherwise the client's channel arrives on ``pc``.
        Raises ``SignalingError``, ``asyncio.TimeoutError``, ``ConnectionError``
        or ``ValueError``.
        """
        ...

    async def wait_gone(self) -> str:
        """Return, with the end reason, once the client has left."""
        ...

    async def close(self, reason: str) -> None:
        """Tell the client the session ended for ``reason``, unless it left; let go."""
        ...


@dataclass(frozen=True)
class SessionConfig:
    width: int = 640
    height: int = 480
    radius: float = 20.0
    speed: float = 300.0
    fps: float = 30.0
    seed: int = 0
    codec: str = "vp8"
    duration: Optional[float] = None
    stun: Optional[str] = None
    handshake_timeout: float = 10.0
    #: Encode in aiortc's executor thread (stock) rather than on the event loop.
    encoder_thread: bool = False
    #: What the picture shows besides the ball (``server.core.scenes``).
    scene: str = DEFAULT_SCENE

    def ledger_capacity(self) -> int:
        # Five seconds of frames: far beyond any sane round trip, yet bounded.
        return max(64, int(self.fps * 5))

    def recent_answers_capacity(self) -> int:
        """The answers the console charts and the viewers' trails draw on."""
        return max(64, int(self.fps * RECENT_ANSWERS_S))


class TrackingSession:
    def __init__(
        self,
        number: int,
        link: ClientLink,
        config: SessionConfig,
        observer: Optional[SessionObserver] = None,
        report_dir: Optional[Path] = None,
        clock: Callable[[], float] = time.monotonic,
        stage_trace: Optional[StageTraceWriter] = None,
    ) -> None:
        self.number = number
        self.name = f"session-{time.strftime('%Y%m%dT%H%M%S')}-{number:04d}"
        self.started_at = time.time()
        self._link = link
        self._config = config
        self.fps = config.fps
        self.scene = BallScene.from_seed(
            config.width, config.height, config.radius, config.speed, config.seed + number
        )
        #: The pictures streamed: ``scene``'s ball with whatever the named scene adds.
        self.picture: Scene = make_scene(config.scene, self.scene, config.fps, config.seed + number)
        #: Answered frames, newest last, for the console and its viewers.
        self.recent_answers: deque[FrameRecord] = deque(maxlen=config.recent_answers_capacity())
        self._observer = observer
        self._clock = clock
        self._report = SessionReport(report_dir, self.name) if report_dir else None
        self._ended = asyncio.Event()
        self._answers_possible = asyncio.Event()
        self._channel: Optional[RTCDataChannel] = None
        self._rtp_origin = SenderTimestampOrigin()
        #: Only with --trace-stages; None costs one test per frame and answer.
        self._tracer = ServerStageTracer(stage_trace, self.name, clock) if stage_trace else None
        self.end_reason: Optional[str] = None
        self.scoreboard = Scoreboard(
            config.fps,
            config.ledger_capacity(),
            on_retired=self._report.write_frame if self._report else None,
            rtp_origin=lambda: self._rtp_origin.origin,
            position_at=self.scene.position,
            acquired_within_px=config.radius,
        )
        self.last_answer: Optional[FrameRecord] = None
        self._streaming_since: Optional[float] = None
        self._streaming_until: Optional[float] = None
        self._track: Optional[BallTrack] = None
        # Fits the stream to the link: bitrate, frame rate (server.media.link_adaptation).
        self._adaptation = LinkAdaptation(
            config.fps,
            clock,
            on_second=self._report.write_second if self._report else None,
            name=self.name,
        )

    def stop(self, reason: str) -> None:
        """Ask the session to end; ``run`` returns once it has cleaned up."""
        self._end(reason)

    def _end(self, reason: str) -> None:
        if not self._ended.is_set():
            self.end_reason = reason
            self._ended.set()

    async def run(self) -> dict[str, Any]:
        """Run the session to its end and return its summary."""
        config = self._config
        servers = [RTCIceServer(config.stun)] if config.stun else []
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self._track = BallTrack(
            self.picture,
            config.fps,
            self._frame_sent,
            self._clock,
            start_gate=self._answers_possible,
            frame_gate=self._adaptation,
        )
        tasks: list[asyncio.Task[Any]] = []
        if self._report:
            self._report.open()
        if self._observer:
            self._observer.session_started()
        try:
            await self._negotiate(pc)
            logger.info("%s: streaming to %s", self.name, self._link.peer)
            tasks.append(asyncio.create_task(self._watch_client()))
            tasks.append(asyncio.create_task(self._expect_channel(config.handshake_timeout)))
            tasks.append(asyncio.create_task(self._log_progress()))
            if config.duration is not None:
                tasks.append(asyncio.create_task(self._stop_after(config.duration)))
            await self._ended.wait()
        except SignalingError as exc:
            self._end(f"signaling error: {exc}")
        except asyncio.TimeoutError:
            self._end(f"no answer within {config.handshake_timeout:g} s")
        except (ConnectionError, ValueError) as exc:
            self._end(f"negotiation failed: {exc}")
        finally:
            await self._finish(pc, tasks)
        return self.summary()

    async def _negotiate(self, pc: RTCPeerConnection) -> None:
        assert self._track is not None
        transceiver = pc.addTransceiver(self._track, direction="sendonly")
        transceiver.setCodecPreferences(_codec_preferences(self._config.codec))
        self._adaptation.attach(transceiver.sender, self._config.codec)
        if self._config.codec.lower() == "h264":
            # VP8 has the rate controlled encoder; H.264 gets its options here.
            install_fast_h264_encoder(transceiver.sender)
        if not self._config.encoder_thread:
            encode_in_loop(transceiver.sender)
        # Answers may name their frame by RTP timestamp: learn the sender's origin.
        self._rtp_origin.attach(transceiver.sender)
        if self._tracer is not None:
            self._tracer.warn_unless_local(self._link.peer)
            self._tracer.attach(transceiver.sender)
        pc.on("datachannel", self._adopt_channel)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._end(f"connection {pc.connectionState}")

        await self._link.negotiate(pc, self._adopt_channel, self._config.handshake_timeout)

    def _adopt_channel(self, channel: RTCDataChannel) -> None:
        """Take the client's answers from ``channel`` if it is the first ``coordinates`` one."""
        if channel.label != CHANNEL_LABEL or self._channel is not None:
            logger.info("%s: ignoring data channel %r", self.name, channel.label)
            return
        self._channel = channel
        channel.on("message", self._on_message)
        if channel.readyState == "open":
            self._answers_possible.set()
        else:
            channel.on("open", self._answers_possible.set)

    async def _watch_client(self) -> None:
        self._end(await self._link.wait_gone())

    async def _expect_channel(self, timeout: float) -> None:
        """End a session whose client negotiated but never opened the data channel."""
        try:
            await asyncio.wait_for(self._answers_possible.wait(), timeout)
        except asyncio.TimeoutError:
            self._end(f"no data channel within {timeout:g} s")

    async def _stop_after(self, duration: float) -> None:
        await asyncio.sleep(duration)
        if self._track is not None:
            self._track.stop()
        self._streaming_until = self._clock()
        await asyncio.sleep(ANSWER_GRACE_S)
        self._end("duration reached")

    async def _log_progress(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            interval = self.scoreboard.take_interval()
            logger.info("%s: %s", self.name, interval.describe())
            self._send_latency(interval)

    def _send_latency(self, interval: Interval) -> None:
        """Tell the client its latency (``protocol.coordinates``), for a predictive tracker."""
        channel = self._channel
        if channel is None or channel.readyState != "open" or not interval.latencies:
            return
        latencies = sorted(interval.latencies)
        feedback = LatencyFeedback(
            p50_ms=max(statistics.median(latencies), 0.0),
            p95_ms=max(latencies[min(int(0.95 * len(latencies)), len(latencies) - 1)], 0.0),
            answers=len(latencies),
        )
        channel.send(encode_feedback(feedback))

    def _frame_sent(
        self, index: int, x: float, y: float, produced_at: float, visibility: float = 1.0
    ) -> None:
        # Called inside the track's recv(), while the sender waits for the frame.
        pts = frame_pts(index, self._config.fps)
        self._rtp_origin.frame_handed(pts)
        if self._tracer is not None:
            self._tracer.frame_produced(pts, produced_at)
        if self._streaming_since is None:
            self._streaming_since = produced_at
        self.scoreboard.frame_sent(index, x, y, produced_at, visibility)
        if self._observer:
            self._observer.frame_sent()

    def _on_message(self, message: Union[str, bytes]) -> None:
        arrival = self._clock()
        entry = self.scoreboard.answer(message, arrival)
        if entry is None:
            if self._observer:
                self._observer.invalid_message()
            return
        assert entry.latency_ms is not None
        if self._tracer is not None:
            self._tracer.answer_received(frame_pts(entry.index, self._config.fps), arrival)
        self._adaptation.frame_answered(entry.index, arrival, entry.latency_ms)
        self.last_answer = entry
        self.recent_answers.append(entry)
        if self._observer:
            assert entry.latency_ms is not None
            self._observer.frame_answered(entry.error_px, entry.latency_ms)

    async def _finish(self, pc: RTCPeerConnection, tasks: list[asyncio.Task[Any]]) -> None:
        # Every path has set a reason by now, except an exception nobody
        # expected (it propagates from run()); the report still says so.
        self._end("ended by an unexpected error")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._streaming_until is None:
            self._streaming_until = self._clock()
        if self._track is not None:
            self._track.stop()
        self._adaptation.close(self._streaming_until)
        assert self.end_reason is not None
        await self._link.close(self.end_reason)
        await pc.close()
        if self._tracer is not None:
            self._tracer.close()
        self.scoreboard.close()
        if self._observer:
            self._observer.session_ended()
        logger.info("%s ended (%s): %s", self.name, self.end_reason, _one_line(self.summary()))

    async def write_report(self, plotter: ReportPlotter) -> None:
        """Write the report files of an ended session (``run`` has returned).

        It runs after the session has given back its slot, so a new client
        never waits for the previous one's plot.
        """
        if self._report is not None:
            summary = self.summary()
            self._report.close(summary)
            await plotter.plot(self._report.csv_path, summary, self._report.png_path)

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def summary(self) -> dict[str, Any]:
        """The report's summary; while streaming, the figures so far."""
        config = self._config
        since = self._streaming_since
        until = self._streaming_until if self._streaming_until is not None else self._clock()
        summary: dict[str, Any] = {
            "session": self.name,
            "started_at": datetime.fromtimestamp(self.started_at, timezone.utc).isoformat(
                timespec="seconds"
            ),
            "peer": self._link.peer,
            "end_reason": self.end_reason,
            "width": config.width,
            "height": config.height,
            "fps": config.fps,
            "codec": config.codec,
            "scene": config.scene,
            "duration_s": (until - since) if since is not None else 0.0,
            "frames_skipped": self._track.frames_skipped if self._track else 0,
            "frames_skipped_for_rate": self._track.frames_skipped_for_rate if self._track else 0,
        }
        summary.update(self.scoreboard.summary())
        summary.update(self._adaptation.summary())
        return summary


def _codec_preferences(codec: str) -> list[Any]:
    """The chosen codec, plus RTX so NACK retransmissions keep working."""
    capabilities = RTCRtpSender.getCapabilities("video").codecs
    wanted = f"video/{codec}".lower()
    chosen = [c for c in capabilities if c.mimeType.lower() == wanted]
    if not chosen:
        raise ValueError(f"codec {codec} is not available")
    return chosen + [c for c in capabilities if c.mimeType.lower() == "video/rtx"]


def _one_line(summary: dict[str, Any]) -> str:
    error = summary["error_px"]
    latency = summary["latency_ms"]

    def fmt(value: Optional[float], digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    return (
        f"{summary['frames_answered']}/{summary['frames_sent']} frames answered, "
        f"error mean {fmt(error['mean'], 3)} max {fmt(error['max'], 3)} px, "
        f"latency p50 {fmt(latency['p50'], 1)} p99 {fmt(latency['p99'], 1)} ms, "
        f"{summary['invalid_messages']} invalid"
    )
