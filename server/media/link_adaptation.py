"""One session's link adaptation: the controller wired to its track and encoder.

``server.core.congestion`` decides; this module connects it. It is the track's
``FrameGate`` (how many frames go out), it passes the controller's bitrate to
the VP8 encoder (``server.media.encoder_rate``) and each frame's encoded size back,
it takes the answers from the session, and it keeps the per-second record
the report writes (``SecondRecord``) and the summary's ``rate_control``.

With H.264 only the frame rate adapts: aiortc's H.264 encoder is not hooked.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from aiortc import RTCRtpSender

from protocol.wire_clock import VIDEO_CLOCK_RATE
from server.core.congestion import (
    ANSWER_ACK_BYTES,
    RTP_PACKET_OVERHEAD_BYTES,
    CongestionConfig,
    CongestionController,
    EncodingSettings,
)
from server.media.encoder_rate import (
    DEFAULT_BITRATE_BPS,
    RateControlledVp8Encoder,
    install_rate_controlled_encoder,
)

logger = logging.getLogger("server.link")


@dataclass
class SecondRecord:
    """What happened in one second of the session, counted from its first frame.

    ``sent_kbps`` is the estimated wire rate (payload and per-frame overhead,
    see ``server.core.congestion``); ``target_kbps`` and ``capacity_kbps`` are the
    controller's, None while the link does not bind; ``bitrate_kbps`` and
    ``fps`` the settings at the end of the second.
    """

    second: int
    frames_sent: int = 0
    frames_skipped_for_rate: int = 0
    frames_answered: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    sent_bytes: int = 0
    payload_bytes: int = 0
    target_kbps: Optional[float] = None
    capacity_kbps: Optional[float] = None
    bitrate_kbps: Optional[float] = None
    fps: Optional[float] = None
    keyframes: int = 0
    receiver_estimate_kbps: Optional[float] = None
    #: Whether the sizes are known (the VP8 encoder reports them).
    bitrate_controlled: bool = True

    def row(self) -> dict[str, Any]:
        """The record by ``server.reports.report.SECOND_COLUMNS`` name (None: an empty cell)."""
        return {
            "second": self.second,
            "frames_sent": self.frames_sent,
            "frames_skipped_for_rate": self.frames_skipped_for_rate,
            "frames_answered": self.frames_answered,
            "latency_p50_ms": statistics.median(self.latencies_ms) if self.latencies_ms else None,
            "sent_kbps": self.sent_bytes * 8 / 1000 if self.bitrate_controlled else None,
            "payload_kbps": self.payload_bytes * 8 / 1000 if self.bitrate_controlled else None,
            "target_kbps": self.target_kbps,
            "capacity_kbps": self.capacity_kbps,
            "bitrate_kbps": self.bitrate_kbps,
            "fps": self.fps,
            "keyframes": self.keyframes,
            "receiver_estimate_kbps": self.receiver_estimate_kbps,
        }


#: Receives each second's ``SecondRecord.row()``.
SecondListener = Callable[[dict[str, Any]], None]


class LinkAdaptation:
    """Lifecycle: ``attach(sender, codec)`` before the first frame, then the
    track and the session feed it, and ``close(now)`` writes the last second."""

    def __init__(
        self,
        fps: float,
        clock: Callable[[], float],
        on_second: Optional[SecondListener] = None,
        config: Optional[CongestionConfig] = None,
        name: str = "session",
    ) -> None:
        self._fps = fps
        self._clock = clock
        self._on_second = on_second
        self._name = name
        self._controller = CongestionController(fps, config or CongestionConfig())
        self._encoder: Optional[RateControlledVp8Encoder] = None
        #: (keyframes sent, keyframes requested), kept when close() lets the encoder go.
        self._final_keyframes: Optional[tuple[int, int]] = None
        self._started_at: Optional[float] = None
        self._second: Optional[SecondRecord] = None
        self._settings = self._controller.settings
        self._lowest_fps = fps
        self._lowest_bitrate_bps: Optional[int] = None
        self._constrained_since: Optional[float] = None
        self._constrained_s = 0.0

    def attach(self, sender: RTCRtpSender, codec: str) -> None:
        """Control ``sender``'s VP8 bitrate (other codecs: the frame rate only)."""
        if codec.lower() == "vp8":
            self._encoder = install_rate_controlled_encoder(sender)

    # ----------------------------------------------------------------- the track's FrameGate
    @property
    def frame_interval(self) -> int:
        return self._controller.settings.frame_interval

    def admit(self, now: float) -> bool:
        self._collect_encoded(now)
        admitted = self._controller.admit(now)
        self._apply(now)
        return admitted

    def frame_sent(self, index: int, now: float) -> None:
        if self._started_at is None:
            self._started_at = now
        self._controller.frame_sent(index, now)
        self._record(now).frames_sent += 1

    def frames_skipped(self, count: int, now: float) -> None:
        self._record(now).frames_skipped_for_rate += count

    # ----------------------------------------------------------------- the session
    def frame_answered(self, index: int, latency_ms: float, now: float) -> None:
        sample = self._controller.last_sample
        self._controller.frame_answered(index, now)
        if self._controller.last_sample is not sample and logger.isEnabledFor(logging.DEBUG):
            capacity, latency = self._controller.last_sample or (0.0, 0.0)
            logger.debug(
                "%s: frame %d late (%.1f ms): capacity sample %.1f kbit/s, sent %.1f kbit/s",
                self._name,
                index,
                latency * 1000,
                capacity / 1000,
                self._controller.sent_rate(now) / 1000,
            )
        record = self._record(now)
        record.frames_answered += 1
        record.latencies_ms.append(latency_ms)

    def close(self, now: float) -> None:
        """The session has stopped sending: write the last second."""
        self._collect_encoded(now)
        self._track_constrained(now)
        if self._second is not None:
            self._emit(self._second, now)
            self._second = None
        if self._encoder is not None:
            # The encoder holds a libvpx context of several MB. The sender
            # drops it when it stops; the session lives on in reference
            # cycles until the garbage collector runs, and must not keep the
            # context alive that long (100 sessions in a row grew the server
            # past 800 MB).
            self._final_keyframes = (self._encoder.keyframes, self._encoder.keyframes_requested)
            self._encoder = None

    def summary(self) -> dict[str, Any]:
        """The report's ``rate_control`` entry and the keyframe counts."""
        encoder = self._encoder
        keyframes = (
            (encoder.keyframes, encoder.keyframes_requested)
            if encoder is not None
            else self._final_keyframes
        )
        settings = self._settings
        now = self._clock()
        constrained = self._constrained_s
        if self._constrained_since is not None:
            constrained += now - self._constrained_since
        return {
            "keyframes_sent": keyframes[0] if keyframes else None,
            "keyframes_requested": keyframes[1] if keyframes else None,
            "rate_control": {
                "decreases": self._controller.decreases,
                "increases": self._controller.increases,
                "frames_held": self._controller.frames_held,
                "time_constrained_s": constrained,
                "final_bitrate_kbps": _kbps(settings.bitrate_bps or DEFAULT_BITRATE_BPS),
                "final_fps": settings.fps(self._fps),
                "lowest_bitrate_kbps": _kbps(self._lowest_bitrate_bps or DEFAULT_BITRATE_BPS),
                "lowest_fps": self._lowest_fps,
                "bitrate_controlled": keyframes is not None,
            },
        }

    # ----------------------------------------------------------------- internals
    def _apply(self, now: float) -> None:
        settings = self._controller.settings
        if settings == self._settings:
            return
        self._track_constrained(now)
        self._settings = settings
        if self._encoder is not None:
            self._encoder.set_bitrate(settings.bitrate_bps)
        self._lowest_fps = min(self._lowest_fps, settings.fps(self._fps))
        if settings.bitrate_bps is not None:
            self._lowest_bitrate_bps = min(
                self._lowest_bitrate_bps or settings.bitrate_bps, settings.bitrate_bps
            )
        state = self._controller.state(now)
        if state.target_bps is None:
            link = "unconstrained"
        else:
            link = (
                f"target {state.target_bps / 1000:.0f} kbit/s "
                f"(capacity {(state.capacity_bps or 0) / 1000:.0f})"
            )
        logger.info("%s: link %s: %s", self._name, link, _describe(settings, self._fps))

    def _track_constrained(self, now: float) -> None:
        constrained = self._controller.settings.bitrate_bps is not None
        if constrained and self._constrained_since is None:
            self._constrained_since = now
        elif not constrained and self._constrained_since is not None:
            self._constrained_s += now - self._constrained_since
            self._constrained_since = None

    def _collect_encoded(self, now: float) -> None:
        if self._encoder is None:
            return
        for encoded in self._encoder.take_encoded():
            index = round(encoded.pts * self._fps / VIDEO_CLOCK_RATE)
            self._controller.frame_encoded(index, encoded.payload_bytes, encoded.packets)
            record = self._record(now)
            record.payload_bytes += encoded.payload_bytes
            record.sent_bytes += (
                encoded.payload_bytes
                + encoded.packets * RTP_PACKET_OVERHEAD_BYTES
                + ANSWER_ACK_BYTES
            )
            record.keyframes += encoded.keyframe

    def _record(self, now: float) -> SecondRecord:
        """The record of the second ``now`` falls in, emitting the ones before it."""
        start = self._started_at if self._started_at is not None else now
        second = max(0, math.floor(now - start))
        current = self._second
        if current is None:
            current = self._second = SecondRecord(second)
        while current.second < second:
            self._emit(current, now)
            current = self._second = SecondRecord(current.second + 1)
        return current

    def _emit(self, record: SecondRecord, now: float) -> None:
        state = self._controller.state(now)
        record.target_kbps = _kbps(state.target_bps)
        record.capacity_kbps = _kbps(state.capacity_bps)
        settings = self._controller.settings
        record.bitrate_kbps = _kbps(settings.bitrate_bps or DEFAULT_BITRATE_BPS)
        record.fps = settings.fps(self._fps)
        record.bitrate_controlled = self._encoder is not None
        if self._encoder is not None:
            record.receiver_estimate_kbps = _kbps(self._encoder.receiver_estimate_bps)
        if self._on_second is not None:
            self._on_second(record.row())


def _kbps(bps: Optional[float]) -> Any:
    return None if bps is None else bps / 1000


def _describe(settings: EncodingSettings, fps: float) -> str:
    bitrate = "default" if settings.bitrate_bps is None else f"{settings.bitrate_bps // 1000}"
    return f"{settings.fps(fps):g} fps at {bitrate} kbit/s"
