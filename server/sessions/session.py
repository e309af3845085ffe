"""One client's session: negotiate, stream, score, and a clean end.

The client reaches the session through a ``ClientLink``: TCP signaling, where
the server offers (``server.sessions.signaling_link``), or a WHEP POST, where the
browser offers (``server.sessions.whep_link``). Everything after the negotiation is
the same for both.

A session ends on the first of: the client leaving (BYE or EOF on signaling,
a WHEP DELETE), an ICE or DTLS failure, no data channel within the handshake
timeout, no answer for ``silence_timeout`` seconds, the configured duration,
or the server shutting down. Every path
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
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Union

from aiortc import RTCDataChannel, RTCPeerConnection, RTCRtpSender

from protocol.coordinates import CHANNEL_LABEL, LatencyFeedback, encode_feedback
from protocol.ice_path import (
    IcePath,
    candidate_types,
    ice_failure,
    rtc_configuration,
    selected_path,
)
from protocol.ice_servers import IceSettings
from protocol.signaling import SignalingError
from protocol.stage_trace import StageTraceWriter
from server.console.annotation import TRAIL_LENGTH, newest
from server.core.frame_phases import FramePhases
from server.core.ledger import FrameRecord, frame_pts
from server.core.scene import BallScene
from server.core.scenes import DEFAULT_SCENE, Scene, make_scene
from server.core.scoreboard import Interval, Scoreboard
from server.media.hooks import install_sender_hooks
from server.media.link_adaptation import LinkAdaptation
from server.media.rtp_origin import SenderTimestampOrigin
from server.media.stage_tracer import ServerStageTracer
from server.media.stream_recorder import StreamRecorder
from server.media.track import BallTrack
from server.reports.plotter import ReportPlotter
from server.reports.recorder import SessionRecorder
from server.reports.report import SCHEMA_VERSION, SessionReport, report_metadata, timestamp

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

    def invalid_message(self, reason: str) -> None: ...

    def session_refused(self, reason: str) -> None:
        """A client was refused a session: ``busy`` or ``shutting_down``."""
        ...

    def report_write_failed(self) -> None: ...

    def connection_refused(self, reason: str) -> None:
        """A signaling connection was refused before an offer; ``reason`` is its kind."""
        ...


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
    #: The server's own ICE servers (--own-ice-server), not those it hands out.
    ice: IceSettings = IceSettings()
    handshake_timeout: float = 10.0
    #: A session whose client has not answered (a "no ball" answer counts)
    #: for this long ends: a silent client must not hold its slot forever.
    silence_timeout: float = 10.0
    #: Encode in aiortc's executor thread (stock) rather than on the event loop.
    encoder_thread: bool = False
    #: Seconds between INFO progress lines; 0 logs one a second at DEBUG only.
    progress_interval: float = 0.0
    #: Write <session>.mp4 (annotated) and <session>.ivf (the sent stream) beside the report.
    record: bool = False
    #: What the picture shows besides the ball (``server.core.scenes``).
    scene: str = DEFAULT_SCENE

    def ledger_capacity(self) -> int:
        # Five seconds of frames: far beyond any sane round trip, yet bounded.
        return max(64, int(self.fps * 5))

    def message_rate(self) -> float:
        """Data channel messages a second a session may send; more are counted, not read.

        An honest client sends one answer a frame; four times that leaves room
        for bursts after a stall, and bounds what junk can cost the loop.
        """
        return max(60.0, 4 * self.fps)

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
        instance: str = "",
        report_limit_bytes: Optional[int] = None,
        on_report_failure: Optional[Callable[[], None]] = None,
        frame_phases: Optional[FramePhases] = None,
    ) -> None:
        self.number = number
        # The number restarts with each server process; ``instance`` (random
        # per process) keeps ids from several pods or restarts apart.
        suffix = f"-{instance}" if instance else ""
        self.name = f"session-{time.strftime('%Y%m%dT%H%M%S')}-{number:04d}{suffix}"
        self.started_at = time.time()
        #: Wall-clock time the session ended (``time.time()``); None while live.
        self.ended_at: Optional[float] = None
        self._metadata = report_metadata()
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
        #: The server's phases of its sessions' frame grids; this one claims
        #: its phase with its first frame and gives it back at the end.
        self._frame_phases = frame_phases
        # Opened with the first frame: a connection that never streams
        # leaves no files behind (and queues no plot).
        self._report = (
            SessionReport(report_dir, self.name, report_limit_bytes, on_report_failure)
            if report_dir
            else None
        )
        #: Answers (scored or not) a second, as a token bucket: see SessionConfig.message_rate.
        self._message_rate = config.message_rate()
        self._message_allowance = self._message_rate
        self._message_checked_at = clock()
        self.messages_over_rate = 0
        self._last_answer_at: Optional[float] = None
        self._ended = asyncio.Event()
        self._answers_possible = asyncio.Event()
        self._channel: Optional[RTCDataChannel] = None
        self._rtp_origin = SenderTimestampOrigin()
        #: Only with --trace-stages; None costs one test per frame and answer.
        self._tracer = ServerStageTracer(stage_trace, self.name, clock) if stage_trace else None
        self.end_reason: Optional[str] = None
        #: Only with --record (and a report directory): server.reports.recorder.
        self._recorder = (
            SessionRecorder(report_dir, self.name, self.picture, config.codec)
            if config.record and report_dir
            else None
        )
        self._stream_recorder: Optional[StreamRecorder] = None
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
        #: The candidate pair ICE nominated, once connected.
        self.ice_path: Optional[IcePath] = None
        #: Why no path was found, when none was (the summary's "ice").
        self._ice_failure: Optional[str] = None
        self._ice_candidates: Optional[dict[str, list[str]]] = None
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
            self.ended_at = time.time()
            self._ended.set()

    async def run(self) -> dict[str, Any]:
        """Run the session to its end and return its summary."""
        config = self._config
        # With --turn-secret the credentials are minted per session, named after it.
        servers = config.ice.servers(self.name, time.time())
        pc = RTCPeerConnection(rtc_configuration(servers, config.ice.transport_policy))
        self._track = BallTrack(
            self.picture,
            config.fps,
            self._frame_sent,
            self._clock,
            start_gate=self._answers_possible,
            frame_gate=self._adaptation,
            first_due=self._claim_phase if self._frame_phases is not None else None,
        )
        tasks: list[asyncio.Task[Any]] = []
        if self._recorder is not None:
            await self._start_recorder(self._recorder)
        if self._observer:
            self._observer.session_started()
        try:
            await self._negotiate(pc)
            logger.info("%s: streaming to %s", self.name, self._link.peer)
            tasks.append(asyncio.create_task(self._watch_client(pc)))
            tasks.append(asyncio.create_task(self._expect_channel(pc, config.handshake_timeout)))
            tasks.append(asyncio.create_task(self._log_progress()))
            tasks.append(asyncio.create_task(self._end_on_silence(config.silence_timeout)))
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

    def _claim_phase(self, now: float) -> float:
        assert self._frame_phases is not None
        return self._frame_phases.claim(self.name, now)

    async def _negotiate(self, pc: RTCPeerConnection) -> None:
        assert self._track is not None
        transceiver = pc.addTransceiver(self._track, direction="sendonly")
        transceiver.setCodecPreferences(_codec_preferences(self._config.codec))
        if self._tracer is not None:
            self._tracer.warn_unless_local(self._link.peer)
        stream_sink = None
        if self._recorder is not None and self._recorder.recording:
            stream_sink = self._recorder.frame_encoded
        self._stream_recorder = install_sender_hooks(
            transceiver.sender,
            self._config.codec,
            self._adaptation,
            self._rtp_origin,
            encoder_thread=self._config.encoder_thread,
            tracer=self._tracer,
            stream_sink=stream_sink,
        )
        pc.on("datachannel", self._adopt_channel)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected" and self.ice_path is None:
                self.ice_path = selected_path(pc)
                path = self.ice_path.describe() if self.ice_path else "unknown"
                logger.info("%s: media path (server -> client): %s", self.name, path)
            elif pc.connectionState == "failed" and self.ice_path is None:
                self._end(self._no_path(pc, None))
            elif pc.connectionState in ("failed", "closed"):
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

    async def _watch_client(self, pc: RTCPeerConnection) -> None:
        reason = await self._link.wait_gone()
        if self.ice_path is None and pc.iceConnectionState not in ("connected", "completed"):
            # It gave up before any media path was up: most likely it found none either.
            self._no_path(pc, None)
            reason = f"{reason} before ICE connected ({candidate_types(pc).describe('the client')})"
        self._end(reason)

    async def _expect_channel(self, pc: RTCPeerConnection, timeout: float) -> None:
        """End a session whose client negotiated but never opened the data channel."""
        try:
            await asyncio.wait_for(self._answers_possible.wait(), timeout)
        except asyncio.TimeoutError:
            if pc.iceConnectionState in ("connected", "completed"):
                self._end(f"no data channel within {timeout:g} s")
            else:
                self._end(self._no_path(pc, timeout))

    def _no_path(self, pc: RTCPeerConnection, waited_s: Optional[float]) -> str:
        """The ICE failure line, remembered with the candidates for the summary."""
        candidates = candidate_types(pc)
        self._ice_candidates = candidates.as_json()
        self._ice_failure = ice_failure(
            candidates, self._config.ice.turn_urls, waited_s, "the client", "--own-ice-server"
        )
        return self._ice_failure

    async def _end_on_silence(self, timeout: float) -> None:
        """End the session once its client has not answered for ``timeout`` seconds."""
        await self._answers_possible.wait()
        since = self._clock()
        while True:
            last = self._last_answer_at if self._last_answer_at is not None else since
            remaining = last + timeout - self._clock()
            if remaining <= 0:
                self._end(f"no answer for {timeout:g} s")
                return
            await asyncio.sleep(remaining)

    async def _stop_after(self, duration: float) -> None:
        await asyncio.sleep(duration)
        if self._track is not None:
            self._track.stop()
        self._streaming_until = self._clock()
        await asyncio.sleep(ANSWER_GRACE_S)
        self._end("duration reached")

    async def _log_progress(self) -> None:
        # A line a second per session is 864,000 lines a day for a full pod:
        # at INFO only at the interval asked for, otherwise at DEBUG.
        interval = self._config.progress_interval
        level = logging.INFO if interval > 0 else logging.DEBUG
        while True:
            await asyncio.sleep(interval or 1.0)
            progress = self.scoreboard.take_interval()
            if logger.isEnabledFor(level):
                logger.log(level, "%s: %s", self.name, progress.describe())
            self._send_latency(progress)

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
            if self._report is not None:
                self._report.open()
        self.scoreboard.frame_sent(index, x, y, produced_at, visibility)
        if self._recorder is not None:
            answers = newest(self.recent_answers, TRAIL_LENGTH)
            age = produced_at - answers[-1].produced_at if answers else None
            self._recorder.frame_sent(index, pts, answers, age)
        if self._observer:
            self._observer.frame_sent()

    def _on_message(self, message: Union[str, bytes]) -> None:
        arrival = self._clock()
        if not self._within_rate(arrival):
            # Not parsed, not scored: what a flood costs is this counter.
            self.messages_over_rate += 1
            return
        entry = self.scoreboard.answer(message, arrival)
        if entry is None:
            if self._observer:
                self._observer.invalid_message(self.scoreboard.last_invalid_reason or "malformed")
            return
        assert entry.latency_ms is not None
        self._last_answer_at = arrival
        if self._tracer is not None:
            self._tracer.answer_received(frame_pts(entry.index, self._config.fps), arrival)
        self._adaptation.frame_answered(entry.index, entry.latency_ms, arrival)
        self.last_answer = entry
        self.recent_answers.append(entry)
        if self._observer:
            assert entry.latency_ms is not None
            self._observer.frame_answered(entry.error_px, entry.latency_ms)

    def _within_rate(self, now: float) -> bool:
        rate = self._message_rate
        self._message_allowance = min(
            rate, self._message_allowance + (now - self._message_checked_at) * rate
        )
        self._message_checked_at = now
        if self._message_allowance < 1.0:
            return False
        self._message_allowance -= 1.0
        return True

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
        if self._frame_phases is not None:
            self._frame_phases.release(self.name)
        self._adaptation.close(self._streaming_until)
        assert self.end_reason is not None
        await self._link.close(self.end_reason)
        await pc.close()
        if self._tracer is not None:
            self._tracer.close()
        if self._stream_recorder is not None:
            self._stream_recorder.remove()  # after the tracer: hooks come out in reverse
        self.scoreboard.close()
        if self._observer:
            self._observer.session_ended()
        logger.info("%s ended (%s): %s", self.name, self.end_reason, _one_line(self.summary()))

    async def write_report(self, plotter: ReportPlotter) -> None:
        """Write the report files of an ended session (``run`` has returned).

        It runs after the session has given back its slot, so a new client
        never waits for the previous one's plot.
        """
        if self._report is not None and self._report.opened:
            summary = self.summary()
            if self._recorder is not None:
                stats = await self._recorder.finish()
                if self._stream_recorder is not None:
                    stats.rtp_timestamp_origin = self._stream_recorder.origin
                summary["recording"] = stats.as_dict()
            if await asyncio.to_thread(self._report.close, summary):
                await plotter.plot(self._report.csv_path, summary, self._report.png_path)
        elif self._recorder is not None:
            # No frame was sent: like the report, the recording leaves no files.
            await self._recorder.finish()
            for path in self._recorder.paths:
                path.unlink(missing_ok=True)

    @property
    def has_report(self) -> bool:
        """Report files exist (or were attempted): the session sent a frame."""
        return self._report is not None and self._report.opened

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def _ice_summary(self) -> dict[str, Any]:
        """The media path: the nominated pair's types, or why there was none."""
        if self.ice_path is not None:
            return self.ice_path.as_json()
        return {"path": None, "failure": self._ice_failure, "candidates": self._ice_candidates}

    def summary(self) -> dict[str, Any]:
        """The report's summary; while streaming, the figures so far."""
        config = self._config
        since = self._streaming_since
        until = self._streaming_until if self._streaming_until is not None else self._clock()
        summary: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "session": self.name,
            "started_at": timestamp(self.started_at),
            "ended_at": timestamp(self.ended_at),
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
            "messages_over_rate": self.messages_over_rate,
            "ice": self._ice_summary(),
        }
        summary.update(self.scoreboard.summary())
        summary.update(self._adaptation.summary())
        summary.update(self._metadata)
        if self._recorder is not None:
            # While live: that it is being recorded; write_report puts the final figures.
            summary["recording"] = self._recorder.stats.as_dict()
        return summary

    async def _start_recorder(self, recorder: SessionRecorder) -> None:
        try:
            await recorder.start()
        except OSError as exc:
            logger.warning("%s: not recorded, the recorder did not start: %s", self.name, exc)
            recorder.stats.errors.append(f"the recorder did not start: {exc}")
            recorder.close()


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
