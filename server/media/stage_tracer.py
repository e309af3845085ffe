"""The server's stage times of each frame: produced, encoded, sent, answered.

``ServerStageTracer`` is created only with ``--trace-stages``; without it the
session holds None and aiortc runs untouched. With it, it hooks one session's
sender (``protocol.instance_hook``, on the objects, never their classes):

- ``RTCRtpSender._next_encoded_frame``, only to find, at the first frame,
  the encoder and the DTLS transport the sender really uses: the encoder may
  be created lazily and BUNDLE replaces transports during negotiation.
- the encoder's ``encode``, which the sender runs in an executor thread:
  encode start and end, and which pts was encoded last;
- the DTLS transport's ``_send_rtp``, given each plaintext RTP packet before
  SRTP: first and last packet of each frame, by the header's timestamp.

The sender encodes frame N, sends all its packets, and only then asks the
track for frame N+1, so the first packet with a new RTP timestamp belongs to
the frame encoded last: that ties pts (server-side stages) to the wire's RTP
timestamp (the key both sides share), without the sender's hidden origin.

These are private parts of aiortc: ``check_tracer_hooks`` refuses any aiortc
but the supported one, or one whose sender no longer works as described.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import OrderedDict, deque
from typing import Any, Callable, Optional

from aiortc import RTCRtpSender
from aiortc.codecs import get_encoder
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import is_rtcp

from protocol.aiortc_internals import (
    IncompatibleAiortcError,
    OtherPrivate,
    SenderPrivate,
    check_aiortc_version,
    check_problems,
    code_names,
)
from protocol.instance_hook import InstanceHook
from protocol.stage_trace import StageRecorder, StageTraceWriter, is_local_address, peer_host

logger = logging.getLogger("server.media.stage_tracer")

#: Frames remembered between their production and their first packet, and
#: from their pts to their RTP timestamp (for the answer): seconds of frames.
_REMEMBERED_FRAMES = 512

_RTP_HEADER = struct.Struct("!BBHII")


def check_tracer_hooks() -> None:
    """Raise ``IncompatibleAiortcError`` unless the sender works as the module docstring says."""
    check_aiortc_version()
    problems = []
    run_rtp = code_names(getattr(RTCRtpSender, SenderPrivate.RUN_RTP, None))
    for name in (SenderPrivate.NEXT_ENCODED_FRAME, OtherPrivate.DTLS_SEND_RTP, "transport"):
        if name not in run_rtp:
            problems.append(f"RTCRtpSender._run_rtp no longer uses {name}")
    next_frame = code_names(getattr(RTCRtpSender, SenderPrivate.NEXT_ENCODED_FRAME, None))
    for name in (SenderPrivate.ENCODER, "get_encoder", "run_in_executor", "encode"):
        if name not in next_frame:
            problems.append(f"RTCRtpSender._next_encoded_frame no longer uses {name}")
    if OtherPrivate.DTLS_SEND_RTP not in vars(RTCDtlsTransport):
        problems.append("RTCDtlsTransport has no _send_rtp")
    check_problems("sender", problems)


class ServerStageTracer:
    """Lifecycle: ``attach(sender)`` before the first frame; the session calls
    ``frame_produced`` and ``answer_received``; ``close()`` writes what is open
    and takes the hooks out."""

    def __init__(
        self,
        writer: StageTraceWriter,
        session: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._recorder = StageRecorder(session, writer.write)
        self._clock = clock
        self._hooks: list[InstanceHook] = []
        self._sender: Optional[RTCRtpSender] = None
        self._ssrc: Optional[int] = None
        #: Stage times by pts, until the frame's first packet names its RTP timestamp.
        self._by_pts: OrderedDict[int, list[tuple[str, float]]] = OrderedDict()
        self._rtp_by_pts: OrderedDict[int, int] = OrderedDict()
        #: (pts, start, end) of each encode, appended by the encoder thread.
        self._encoded: deque[tuple[int, float, float]] = deque()
        self._last_encoded_pts: Optional[int] = None
        self._current_rtp: Optional[int] = None

    def warn_unless_local(self, peer: str) -> None:
        """Warn that ``peer``'s stage times are on another clock unless it is this host."""
        host = peer_host(peer)
        if not is_local_address(host):
            logger.warning(
                "--trace-stages: client %s is not on this host; its stage times are on "
                "another clock and only the round trip means anything",
                peer,
            )

    # -- hooks ----------------------------------------------------------------

    def attach(self, sender: RTCRtpSender) -> None:
        check_tracer_hooks()
        if not hasattr(sender, SenderPrivate.ENCODER):
            raise IncompatibleAiortcError(f"{type(sender).__name__} has no {SenderPrivate.ENCODER}")
        self._sender = sender
        self._ssrc = getattr(sender, SenderPrivate.SSRC)

        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            async def next_encoded_frame(codec: Any) -> Any:
                if len(self._hooks) == 1:
                    self._hook_encoder_and_transport(sender, codec)
                return await original(codec)

            return next_encoded_frame

        self._hooks.append(InstanceHook(sender, SenderPrivate.NEXT_ENCODED_FRAME, make))

    def _hook_encoder_and_transport(self, sender: RTCRtpSender, codec: Any) -> None:
        encoder = getattr(sender, SenderPrivate.ENCODER)
        if encoder is None:
            # What _next_encoded_frame itself does next; done here so the
            # first frame's encode is timed too.
            encoder = get_encoder(codec)
            setattr(sender, SenderPrivate.ENCODER, encoder)
        self._hooks.append(InstanceHook(encoder, "encode", self._timed_encode))
        self._hooks.append(
            InstanceHook(sender.transport, OtherPrivate.DTLS_SEND_RTP, self._watched_send_rtp)
        )

    def _timed_encode(self, original: Callable[..., Any]) -> Callable[..., Any]:
        clock, encoded = self._clock, self._encoded

        def encode(frame: Any, force_keyframe: bool = False) -> Any:
            # Read before encoding: the encoder rebases frame.pts.
            pts = int(frame.pts)
            start = clock()
            result = original(frame, force_keyframe)
            encoded.append((pts, start, clock()))  # deque.append: thread-safe
            return result

        return encode

    def _watched_send_rtp(self, original: Callable[..., Any]) -> Callable[..., Any]:
        async def send_rtp(data: bytes) -> None:
            # Before sending: once the datagram is out, the client may have
            # it before this process runs again.
            if len(data) >= _RTP_HEADER.size and not is_rtcp(data):
                self.packet_sent(data, self._clock())
            await original(data)

        return send_rtp

    # -- what the hooks and the session report --------------------------------

    def frame_produced(self, pts: int, at: float) -> None:
        self._by_pts[pts] = [("produced", at)]
        while len(self._by_pts) > _REMEMBERED_FRAMES:
            self._by_pts.popitem(last=False)

    def packet_sent(self, packet: bytes, at: float) -> None:
        """One plaintext RTP packet is being given to SRTP and the socket."""
        first, second, _, timestamp, ssrc = _RTP_HEADER.unpack_from(packet)
        if ssrc != self._ssrc:
            return  # a retransmission (RTX), or another stream
        self._take_encodes()
        if timestamp != self._current_rtp:
            if timestamp in self._rtp_by_pts.values() or self._last_encoded_pts is None:
                return  # a retransmission without RTX: the frame is long out
            self._current_rtp = timestamp
            pts = self._last_encoded_pts
            self._rtp_by_pts[pts] = timestamp
            while len(self._rtp_by_pts) > _REMEMBERED_FRAMES:
                self._rtp_by_pts.popitem(last=False)
            for stage, stage_at in self._by_pts.pop(pts, ()):
                self._recorder.mark(timestamp, stage, stage_at)
            self._recorder.mark(timestamp, "first_packet_sent", at)
        if second & 0x80:  # the marker bit: the frame's last packet
            self._recorder.mark(timestamp, "last_packet_sent", at)

    def _take_encodes(self) -> None:
        while self._encoded:
            pts, start, end = self._encoded.popleft()
            marks = self._by_pts.setdefault(pts, [])
            marks += [("encode_start", start), ("encode_end", end)]
            self._last_encoded_pts = pts

    def answer_received(self, pts: int, at: float) -> None:
        rtp = self._rtp_by_pts.get(pts)
        if rtp is not None:
            self._recorder.finish(rtp, "answer_received", at)

    def close(self) -> None:
        for hook in reversed(self._hooks):
            hook.remove()
        self._hooks.clear()
        self._recorder.close()
