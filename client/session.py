"""One streaming session on the client: answer, receive, detect, report.

Each frame is decoded on the event loop as the jitter buffer releases it
(``client.media.inline_decoder``). By default its luma plane then goes to the
detector process through shared memory, and each result comes back through
a pipe the event loop watches and goes out on the data channel; the
detector always works on the newest frame, so a slow moment never becomes a
backlog.

With ``--detect-in inline`` the ball is detected right there on the loop
(``client.detection.inline_detector``) and the answer sent at once. Frames waiting
behind it are detected in order, up to the detector's ``max_backlog``;
beyond that the session skips to the newest.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCDataChannel,
    RTCIceCandidate,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from client.detection.frame_exchange import luma_view
from client.detection.interface import DetectionResult, Detector, DetectorFailed
from client.display import ClientDisplay, draw
from client.media.hooks import install_receiver_hooks, receiver_components, receiver_counters
from client.media.inline_decoder import InlineDecoder
from client.media.stage_tracer import ClientStageTracer
from client.media.wire_timestamps import WireTimestamps
from protocol.coordinates import (
    CHANNEL_LABEL,
    CoordinateReport,
    LatencyFeedback,
    decode_feedback,
    encode_report,
)
from protocol.ice_path import (
    IcePath,
    candidate_types,
    ice_failure,
    rtc_configuration,
    selected_path,
)
from protocol.ice_servers import IceSettings
from protocol.signaling import Bye, SignalingChannel, SignalingError
from protocol.stage_trace import StageTraceWriter

logger = logging.getLogger("client.session")

#: The least time ICE's checks get after the answer, however long gathering took.
MIN_CHECKS_S = 1.0
#: Longest a frame waits for the detector process to take the previous one.
HANDOFF_WAIT_S = 0.002
#: Pictures held for the window until their detection comes back (about
#: 0.3 ms). The detector keeps only the newest frame, so an older picture
#: whose frame it skipped would wait forever: keep the newest two at most.
MAX_PENDING_PICTURES = 2


class SessionEnd(enum.Enum):
    """How a session ended, which decides the exit status and reconnects."""

    FINISHED = "finished"  # our duration or a signal: we say BYE
    SERVER_ENDED = "server ended"  # the server said BYE mid-stream
    REFUSED = "refused"  # the server said BYE before any offer
    LOST = "lost"  # the server vanished: EOF, garbage, or a failed connection


@dataclass
class SessionOutcome:
    end: SessionEnd
    reason: str
    #: The server refused or ended the session for lack of room or because it
    #: shuts down (``Bye.worth_retrying``): another try may be served.
    worth_retrying: bool = False


class ClientSession:
    def __init__(
        self,
        signaling: SignalingChannel,
        detector: Detector,
        jitter_buffer: str = "fast",
        display: Optional[ClientDisplay] = None,
        handshake_timeout: float = 30.0,
        stage_trace: Optional[StageTraceWriter] = None,
        name: str = "client-session",
        decoder_thread: bool = False,
        ice: Optional[IceSettings] = None,
    ) -> None:
        self._signaling = signaling
        self._detector = detector
        self._jitter_buffer = jitter_buffer
        self._display = display
        self._handshake_timeout = handshake_timeout
        self._ice = ice if ice is not None else IceSettings()
        #: The candidate pair ICE nominated, once connected.
        self.ice_path: Optional[IcePath] = None
        self._connected = asyncio.Event()
        #: When the server's offer arrived: the handshake's budget runs from there.
        self._offer_at: Optional[float] = None
        self._channel: Optional[RTCDataChannel] = None
        self._outcome: Optional[SessionOutcome] = None
        self._ended = asyncio.Event()
        self.frames_received = 0
        self.results_sent = 0
        #: Class names of the video receiver's jitter buffer and NACK generator.
        self.receiver_components: dict[str, str] = {}
        #: Decoded pictures waiting for their own detection, by pts, oldest first.
        self._pending_pictures: dict[int, np.ndarray] = {}
        self._wire_timestamps: Optional[WireTimestamps] = None
        self._video_receiver: Optional[RTCRtpReceiver] = None
        self._inline_decoder: Optional[InlineDecoder] = None
        self._stage_trace = stage_trace
        #: Decode in aiortc's thread (stock) rather than in the loop (InlineDecoder).
        self._decoder_thread = decoder_thread
        self._name = name
        #: Only with --trace-stages; None costs one test per frame and stage.
        self._tracer: Optional[ClientStageTracer] = None
        #: The server's newest word on our latency (``protocol.coordinates``); None until then.
        self.latency_feedback: Optional[LatencyFeedback] = None
        self.server_messages_ignored = 0

    def stop(self, reason: str) -> None:
        """End the session from outside (duration, SIGINT, SIGTERM)."""
        self._end(SessionEnd.FINISHED, reason)

    def _end(self, end: SessionEnd, reason: str, worth_retrying: bool = False) -> None:
        if self._outcome is None:
            self._outcome = SessionOutcome(end, reason, worth_retrying)
            self._ended.set()

    async def run(self) -> SessionOutcome:
        # Credentials minted now (with --turn-secret) live far longer than a session.
        servers = self._ice.servers(self._name, time.time())
        pc = RTCPeerConnection(rtc_configuration(servers, self._ice.transport_policy))
        tasks: list[asyncio.Task[Any]] = []
        loop = asyncio.get_running_loop()
        result_fd = self._detector.result_fd
        if result_fd is not None:
            loop.add_reader(result_fd, self._send_results)
        try:
            await self._negotiate(pc, tasks)
            tasks.append(asyncio.create_task(self._watch_signaling()))
            if self._offer_at is not None:
                tasks.append(asyncio.create_task(self._expect_connection(pc, self._offer_at)))
            await self._ended.wait()
        except asyncio.TimeoutError:
            self._end(SessionEnd.LOST, "the server sent no offer in time")
        except SignalingError as exc:
            self._end(SessionEnd.LOST, f"signaling error: {exc}")
        except ConnectionError as exc:
            self._end(SessionEnd.LOST, f"signaling connection lost: {exc}")
        except (ValueError, AssertionError) as exc:
            # aiortc raises (or asserts) on an offer it cannot parse.
            self._end(SessionEnd.LOST, f"the server's offer was rejected: {exc!r}")
        finally:
            if result_fd is not None:
                loop.remove_reader(result_fd)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Only an unexpected exception on its way out leaves no outcome.
            self._end(SessionEnd.LOST, "the session failed")
            assert self._outcome is not None
            if self._video_receiver is not None:
                counters = receiver_counters(self._video_receiver)
                logger.info(
                    "video receiver: %s", ", ".join(f"{k} {v}" for k, v in counters.items())
                )
            if self._tracer is not None:
                self._tracer.close()
            if self._outcome.end is SessionEnd.FINISHED:
                try:
                    await asyncio.wait_for(self._signaling.send(Bye()), 1.0)
                except (ConnectionError, asyncio.TimeoutError):
                    pass
            await pc.close()
            await self._signaling.close()
        return self._outcome

    async def _negotiate(self, pc: RTCPeerConnection, tasks: list[asyncio.Task[Any]]) -> None:
        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label == CHANNEL_LABEL:
                self._channel = channel
                channel.on("message", self._on_server_message)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                tasks.append(asyncio.create_task(self._consume(track)))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected" and not self._connected.is_set():
                self.ice_path = selected_path(pc)
                self._connected.set()
                path = self.ice_path.describe() if self.ice_path else "unknown"
                logger.info("connected; media path (here -> server): %s", path)
            elif pc.connectionState == "failed":
                if self._connected.is_set():
                    self._end(SessionEnd.LOST, "WebRTC connection failed")
                else:
                    self._end(SessionEnd.LOST, self._no_path(pc, None))

        while True:
            message = await self._signaling.receive(self._handshake_timeout)
            if message is None:
                raise ConnectionError("the server closed the connection before its offer")
            if isinstance(message, Bye):
                self._end(
                    SessionEnd.REFUSED,
                    message.reason or "the server said bye",
                    message.worth_retrying,
                )
                return
            if isinstance(message, RTCIceCandidate):
                await pc.addIceCandidate(message)
                continue
            if not isinstance(message, RTCSessionDescription) or message.type != "offer":
                raise SignalingError(f"expected an offer, got {message!r}")
            break
        self._offer_at = time.monotonic()
        await pc.setRemoteDescription(message)
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "video":
                hooks = install_receiver_hooks(
                    transceiver.receiver,
                    pc.sctp,
                    fast_jitter_buffer=self._jitter_buffer == "fast",
                    decoder_thread=self._decoder_thread,
                    stage_trace=self._stage_trace,
                    session_name=self._name,
                )
                self._wire_timestamps = hooks.wire_timestamps
                self._inline_decoder = decoder = hooks.inline_decoder
                self._tracer = hooks.tracer
                self._video_receiver = transceiver.receiver
                # What the receiver really uses, read back from it, so a test
                # (or a user) can see which components are in place.
                self.receiver_components = receiver_components(transceiver.receiver)
                logger.info(
                    "video receiver: jitter buffer %s, NACK generator %s, decoding %s",
                    self.receiver_components["jitter_buffer"],
                    self.receiver_components["nack_generator"],
                    "in aiortc's thread" if decoder is None else "on the event loop",
                )
        await pc.setLocalDescription(await pc.createAnswer())
        await self._signaling.send(pc.localDescription)

    async def _expect_connection(self, pc: RTCPeerConnection, offer_at: float) -> None:
        """End, naming ICE, a session whose media path is not up within the handshake timeout.

        The time runs from the offer, so it includes gathering: aioice waits up
        to 5 s for a TURN server that does not answer. It gives up on its
        checks only after about 30 s of retransmissions; a user should not wait
        that long to learn that no path exists. The checks get a second at least.
        """
        remaining = offer_at + self._handshake_timeout - time.monotonic()
        try:
            await asyncio.wait_for(self._connected.wait(), max(remaining, MIN_CHECKS_S))
        except asyncio.TimeoutError:
            self._end(SessionEnd.LOST, self._no_path(pc, self._handshake_timeout))

    def _no_path(self, pc: RTCPeerConnection, waited_s: Optional[float]) -> str:
        if pc.iceConnectionState in ("connected", "completed"):
            return f"ICE connected but DTLS did not complete within {self._handshake_timeout:g} s"
        return ice_failure(candidate_types(pc), self._ice.turn_urls, waited_s, "the server")

    def _on_server_message(self, message: Union[str, bytes]) -> None:
        """Keep the server's latency figure; ignore, quietly, anything else it sends."""
        feedback = decode_feedback(message)
        if feedback is None:
            self.server_messages_ignored += 1
            return
        if self.latency_feedback is None:
            logger.info(
                "the server measures our latency: p50 %.1f ms, p95 %.1f ms",
                feedback.p50_ms,
                feedback.p95_ms,
            )
        self.latency_feedback = feedback
        # A predictive locator aims this far past each frame, in either placement.
        self._detector.set_lead(feedback.p50_ms / 1000.0)

    async def _watch_signaling(self) -> None:
        try:
            message = await self._signaling.receive_bye()
        except SignalingError as exc:
            self._end(SessionEnd.LOST, f"signaling error: {exc}")
            return
        if message is None:
            self._end(SessionEnd.LOST, "lost the connection to the server")
        else:
            self._end(
                SessionEnd.SERVER_ENDED,
                f"server ended the session: {message.reason or 'bye'}",
                message.worth_retrying,
            )

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.frames_received += 1
            assert frame.pts is not None  # aiortc stamps every frame it decodes
            pts = int(frame.pts)
            tracer = self._tracer
            if tracer is not None:
                tracer.delivered(pts, time.monotonic())
            detector = self._detector
            max_backlog = detector.max_backlog
            if max_backlog is not None and self._detection_backlog() > max_backlog:
                detector.skip()
                continue
            luma = luma_view(frame)
            if self._detector.pending:
                # Inside a burst of frames (see wait_taken). The wait blocks
                # the loop for at most HANDOFF_WAIT_S, so send the results the
                # burst has produced meanwhile straight away.
                self._detector.wait_taken(HANDOFF_WAIT_S)
                self._send_results()
            if self._display is not None:
                # Shown when this very frame's detection comes back, with it.
                self._pending_pictures[pts] = luma
                while len(self._pending_pictures) > MAX_PENDING_PICTURES:
                    del self._pending_pictures[next(iter(self._pending_pictures))]
            if tracer is not None:
                # Before: the detector may take the frame before submit returns.
                tracer.handed_to_detector(pts, time.monotonic())
            try:
                detector.submit(pts, luma)
            except DetectorFailed as exc:
                self._end(SessionEnd.LOST, str(exc))
                return
            if detector.result_fd is None:
                self._send_results()  # detected already: answer now

    def _detection_backlog(self) -> int:
        """Decoded frames waiting behind the one just received (0 if unknown)."""
        decoder = self._inline_decoder
        return decoder.backlog if decoder is not None else 0

    def _send_results(self) -> None:
        try:
            results = self._detector.collect()
        except DetectorFailed as exc:
            # The pipe stays readable at EOF: stop watching it or the loop spins.
            if self._detector.result_fd is not None:
                asyncio.get_running_loop().remove_reader(self._detector.result_fd)
            self._end(SessionEnd.LOST, str(exc))
            return
        channel = self._channel
        tracer = self._tracer
        if channel is not None and channel.readyState == "open":
            for result in results:
                # Both frame ids: the RTP timestamp is immune to a lost first
                # packet, the pts is what servers before it understand.
                rtp_timestamp = self._rtp_timestamp(result.pts)
                report = CoordinateReport(
                    result.pts, result.x, result.y, rtp_timestamp=rtp_timestamp
                )
                channel.send(encode_report(report))
                self.results_sent += 1
                if tracer is not None and rtp_timestamp is not None:
                    tracer.detected(result.pts, result.started_at, result.finished_at)
                    tracer.answer_queued(rtp_timestamp, time.monotonic())
        # The answers are out; only now draw, so the window never delays them.
        if self._display is not None and results:
            self._show(results[-1])

    def _rtp_timestamp(self, pts: int) -> Optional[int]:
        if self._wire_timestamps is None:
            return None
        return self._wire_timestamps.rtp_timestamp(pts)

    def _show(self, result: DetectionResult) -> None:
        """Show the picture of ``result``'s frame with ``result`` on it.

        Pictures older than it will get no detection of their own (the
        detector skipped them, or their results were superseded in this
        batch), so they are dropped rather than shown with another's.
        """
        assert self._display is not None
        picture = self._pending_pictures.pop(result.pts, None)
        for pts in [p for p in self._pending_pictures if p < result.pts]:
            del self._pending_pictures[pts]
        if picture is not None:
            self._display.show(draw(picture, result))
