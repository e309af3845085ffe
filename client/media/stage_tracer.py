"""The client's stage times of each frame: received, decoded, detected, answered.

``ClientStageTracer`` is created only with ``--trace-stages``; without it the
session holds None and aiortc runs untouched. With it, it hooks one
session's objects (``protocol.instance_hook``, never their classes):

- the receiver's ``_handle_rtp_packet``, which the DTLS transport calls with
  each decrypted RTP packet: first and last packet of each frame;
- the receiver's decoder queue (a ``queue.Queue``, aiortc's or the fast
  jitter buffer's): its ``_put``, which every ``put`` calls, is the frame
  leaving the jitter buffer; its ``_get``, in the decoder thread, is the
  decoder taking it;
- the track's ``asyncio.Queue.put``, which the decoder thread calls with
  each decoded picture: the decode's end (a decoder in the loop,
  ``client.media.inline_decoder``, reports both through ``decoder_stage``);
- the SCTP transport's DTLS ``_send_data``, given each plaintext SCTP
  packet: the one carrying an answer is the answer leaving.

The session reports the rest (``delivered``, ``handed_to_detector``, the
detector's own two times, ``answer_queued``). Frames are keyed by the RTP
timestamp on the wire (``client.media.wire_timestamps``), as the server keys them.

These are private parts of aiortc: ``check_tracer_hooks`` refuses any aiortc
but the supported one, or one whose receiver no longer works as described.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import struct
import time
from collections import deque
from typing import Any, Callable, Optional

from aiortc import RTCRtpReceiver
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpreceiver import decoder_worker
from aiortc.rtcsctptransport import RTCSctpTransport

from client.media.wire_timestamps import WireTimestamps
from protocol.aiortc_internals import (
    IncompatibleAiortcError,
    OtherPrivate,
    ReceiverPrivate,
    check_aiortc_version,
    check_problems,
    code_names,
)
from protocol.coordinates import InvalidReport, decode_report
from protocol.instance_hook import InstanceHook
from protocol.stage_trace import StageRecorder, StageTraceWriter, is_local_address

logger = logging.getLogger("client.media.stage_tracer")

_SCTP_COMMON_HEADER = 12
_SCTP_CHUNK_HEADER = struct.Struct("!BBH")
_SCTP_DATA_HEADER = struct.Struct("!IHHI")  # TSN, stream, stream sequence, PPID
_SCTP_DATA = 0
_SCTP_BEGIN_END = 0x03  # B and E flags: a whole message in one chunk
_PPID_STRING = 51  # WebRTC String (RFC 8831)


def answered_rtp_timestamps(sctp_packet: bytes) -> list[int]:
    """The ``rtp_timestamp`` of every answer carried in one plaintext SCTP packet."""
    found = []
    offset = _SCTP_COMMON_HEADER
    while offset + _SCTP_CHUNK_HEADER.size <= len(sctp_packet):
        kind, flags, length = _SCTP_CHUNK_HEADER.unpack_from(sctp_packet, offset)
        if length < _SCTP_CHUNK_HEADER.size:
            break  # malformed: stop rather than loop forever
        body = offset + _SCTP_CHUNK_HEADER.size
        end = offset + length
        if (
            kind == _SCTP_DATA
            and flags & _SCTP_BEGIN_END == _SCTP_BEGIN_END
            and end - body > _SCTP_DATA_HEADER.size
            and end <= len(sctp_packet)
        ):
            ppid = _SCTP_DATA_HEADER.unpack_from(sctp_packet, body)[3]
            if ppid == _PPID_STRING:
                try:
                    report = decode_report(sctp_packet[body + _SCTP_DATA_HEADER.size : end])
                except InvalidReport:
                    report = None
                if report is not None and report.rtp_timestamp is not None:
                    found.append(report.rtp_timestamp)
        offset = end + (-length % 4)  # chunks are padded to 4 bytes
    return found


def check_tracer_hooks() -> None:
    """Raise ``IncompatibleAiortcError`` unless the receiver works as the module docstring says."""
    check_aiortc_version()
    problems = []
    if ReceiverPrivate.HANDLE_RTP_PACKET not in code_names(
        getattr(RTCDtlsTransport, OtherPrivate.DTLS_HANDLE_RTP_DATA, None)
    ):
        problems.append("RTCDtlsTransport no longer hands packets to _handle_rtp_packet")
    handle = code_names(getattr(RTCRtpReceiver, ReceiverPrivate.HANDLE_RTP_PACKET, None))
    if ReceiverPrivate.DECODER_QUEUE not in handle or "put" not in handle:
        problems.append("RTCRtpReceiver._handle_rtp_packet no longer puts on its decoder queue")
    worker = code_names(decoder_worker)
    for name in ("get", "decode", "put", "run_coroutine_threadsafe"):
        if name not in worker:
            problems.append(f"aiortc's decoder_worker no longer uses {name}")
    if ReceiverPrivate.TRACK_QUEUE not in code_names(getattr(RTCRtpReceiver, "receive", None)):
        problems.append("RTCRtpReceiver.receive no longer gives the decoder its track's _queue")
    sctp_names = code_names(getattr(RTCSctpTransport, OtherPrivate.SCTP_SEND_CHUNK, None))
    if OtherPrivate.DTLS_SEND_DATA not in sctp_names:
        problems.append("RTCSctpTransport._send_chunk no longer calls its transport's _send_data")
    for name in (OtherPrivate.QUEUE_PUT, OtherPrivate.QUEUE_GET):
        if name not in code_names(getattr(queue.Queue, name[1:], None)):
            problems.append(f"queue.Queue.{name[1:]} no longer calls {name}")
    check_problems("receiver", problems)


class ClientStageTracer:
    """Lifecycle: ``attach(receiver, sctp)`` after ``setRemoteDescription``, after
    any other receiver hooks and before RTP arrives; the session reports its
    own stages; ``close()`` writes what is open and takes the hooks out."""

    def __init__(
        self,
        writer: StageTraceWriter,
        session: str,
        wire_timestamps: WireTimestamps,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._recorder = StageRecorder(session, writer.write)
        self._wire = wire_timestamps
        self._clock = clock
        self._hooks: list[InstanceHook] = []
        #: (stage, pts, time) from the decoder thread, taken in by the loop.
        self._from_decoder: deque[tuple[str, int, float]] = deque()

    @staticmethod
    def warn_unless_local(host: str) -> None:
        """Warn that stage times are on another clock unless the server is this host."""
        if not is_local_address(host):
            logger.warning(
                "--trace-stages: server %s is not on this host; the stage times are on "
                "another clock and only the round trip means anything",
                host,
            )

    # -- hooks ----------------------------------------------------------------

    def attach(self, receiver: RTCRtpReceiver, sctp: Optional[RTCSctpTransport]) -> None:
        check_tracer_hooks()
        decoder_queue = getattr(receiver, ReceiverPrivate.DECODER_QUEUE, None)
        track_queue = getattr(receiver.track, ReceiverPrivate.TRACK_QUEUE, None)
        if not isinstance(decoder_queue, queue.Queue) or not isinstance(track_queue, asyncio.Queue):
            raise IncompatibleAiortcError("the receiver has no decoder queue or track queue")
        clock, from_decoder = self._clock, self._from_decoder

        def packets(original: Callable[..., Any]) -> Callable[..., Any]:
            async def handle_rtp_packet(packet: Any, arrival_time_ms: int) -> None:
                at = clock()
                self._recorder.mark(packet.timestamp, "first_packet_received", at)
                self._recorder.mark(packet.timestamp, "last_packet_received", at)
                await original(packet, arrival_time_ms=arrival_time_ms)

            return handle_rtp_packet

        def put(original: Callable[..., Any]) -> Callable[..., Any]:
            def _put(item: Any) -> None:
                if item is not None:
                    self._mark_pts(item[1].timestamp, "frame_complete", clock())
                original(item)

            return _put

        def get(original: Callable[..., Any]) -> Callable[..., Any]:
            def _get() -> Any:
                item = original()
                if item is not None:  # decoder thread: hand over, do not touch the recorder
                    from_decoder.append(("decode_start", item[1].timestamp, clock()))
                return item

            return _get

        def decoded(original: Callable[..., Any]) -> Callable[..., Any]:
            def put_decoded(frame: Any) -> Any:
                if frame is not None:
                    from_decoder.append(("decoded", int(frame.pts), clock()))
                return original(frame)

            return put_decoded

        self._hooks.append(InstanceHook(receiver, ReceiverPrivate.HANDLE_RTP_PACKET, packets))
        self._hooks.append(InstanceHook(decoder_queue, OtherPrivate.QUEUE_PUT, put))
        self._hooks.append(InstanceHook(decoder_queue, OtherPrivate.QUEUE_GET, get))
        self._hooks.append(InstanceHook(track_queue, "put", decoded))
        dtls = sctp.transport if sctp is not None else None
        if isinstance(dtls, RTCDtlsTransport):
            self._hooks.append(
                InstanceHook(dtls, OtherPrivate.DTLS_SEND_DATA, self._watched_send_data)
            )

    def decoder_stage(self, stage: str, pts: int, at: float) -> None:
        """A decoder outside aiortc's thread (``client.media.inline_decoder``) reports
        ``decode_start`` or ``decoded``; safe from any thread."""
        self._from_decoder.append((stage, pts, at))

    def _watched_send_data(self, original: Callable[..., Any]) -> Callable[..., Any]:
        async def send_data(data: bytes) -> None:
            # Before sending: once the datagram is out, the server may have
            # it before this process runs again.
            at = self._clock()
            for rtp in answered_rtp_timestamps(data):
                self._recorder.finish(rtp, "answer_sent", at)
            await original(data)

        return send_data

    # -- what the session reports ----------------------------------------------

    def delivered(self, pts: int, at: float) -> None:
        self._take_from_decoder()
        self._mark_pts(pts, "delivered", at)

    def handed_to_detector(self, pts: int, at: float) -> None:
        self._mark_pts(pts, "handed_to_detector", at)

    def detected(self, pts: int, started: float, finished: float) -> None:
        self._take_from_decoder()
        self._mark_pts(pts, "detection_start", started)
        self._mark_pts(pts, "detected", finished)

    def answer_queued(self, rtp: int, at: float) -> None:
        self._recorder.mark(rtp, "answer_queued", at)

    def _take_from_decoder(self) -> None:
        while self._from_decoder:
            stage, pts, at = self._from_decoder.popleft()
            self._mark_pts(pts, stage, at)

    def _mark_pts(self, pts: int, stage: str, at: float) -> None:
        rtp = self._wire.rtp_timestamp(pts)
        if rtp is not None:
            self._recorder.mark(rtp, stage, at)

    def close(self) -> None:
        for hook in reversed(self._hooks):
            hook.remove()
        self._hooks.clear()
        self._take_from_decoder()
        self._recorder.close()
