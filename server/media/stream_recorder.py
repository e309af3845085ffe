"""Keeps a session's encoded frames exactly as they left its encoder.

``install_stream_recorder(sender, sink)`` hooks one sender's
``_next_encoded_frame`` (``protocol.instance_hook``, on the object, never its
class). Each frame the encoder returns is a list of RTP payloads; joined
after ``aiortc.codecs.depayload`` they are byte for byte what a receiver's
jitter buffer hands its decoder on a lossless link, so a decoder given the
kept frames decodes exactly the pictures the client decoded (VP8 frames, or
H.264 access units in Annex B).

Each frame goes to ``sink(rtp_timestamp, data)`` with the RTP timestamp it
went out with, not reduced modulo 2**32 (see ``protocol.recording``). The
sender adds a random origin it keeps in a local variable; it asks for frame
N+1 only after sending every packet of frame N, so on that call its last
sent timestamp is frame N's, which gives the origin. Until then frame 0
waits, and is not kept if it never went out.

Costs the event loop a depayload (a few µs) and the sink's hand-off per
frame; the sink (``server.reports.recorder.SessionRecorder``) writes
elsewhere and never blocks. Like every hook into aiortc, version-guarded.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from aiortc import RTCRtpSender
from aiortc.codecs import depayload

from protocol.aiortc_internals import (
    IncompatibleAiortcError,
    SenderPrivate,
    check_aiortc_version,
    code_names,
)
from protocol.instance_hook import InstanceHook

_LAST_TIMESTAMP_ATTRIBUTE = SenderPrivate.RTP_TIMESTAMP
_PACKET_COUNT_ATTRIBUTE = SenderPrivate.PACKET_COUNT
_RTP_TIMESTAMP_MODULUS = 1 << 32

#: Called as ``sink(rtp_timestamp, frame_bytes)``.
StreamSink = Callable[[int, bytes], None]


def check_stream_recorder_hook() -> None:
    """Raise ``IncompatibleAiortcError`` unless the sender works as the docstring says."""
    check_aiortc_version()
    problems = []
    run_rtp = code_names(getattr(RTCRtpSender, "_run_rtp", None))
    for name in (
        SenderPrivate.NEXT_ENCODED_FRAME,
        "payloads",
        "timestamp",
        _LAST_TIMESTAMP_ATTRIBUTE,
    ):
        if name not in run_rtp:
            problems.append(f"RTCRtpSender._run_rtp no longer uses {name}")
    if _PACKET_COUNT_ATTRIBUTE not in run_rtp:
        problems.append(f"RTCRtpSender._run_rtp no longer counts {_PACKET_COUNT_ATTRIBUTE}")
    if problems:
        raise IncompatibleAiortcError("aiortc's sender changed shape: " + "; ".join(problems))


class StreamRecorder:
    """Lifecycle: ``install()`` before the sender's first frame; ``remove()`` at the end."""

    def __init__(self, sender: RTCRtpSender, sink: StreamSink) -> None:
        self._sender = sender
        self._sink = sink
        self._hook: Optional[InstanceHook] = None
        #: The frame waiting for the sender's origin: (timestamp, data).
        self._pending: Optional[tuple[int, bytes]] = None
        #: The sender's RTP timestamp of pts 0, once a packet has gone out.
        self.origin: Optional[int] = None
        self.frames = 0

    def install(self) -> None:
        check_stream_recorder_hook()
        for name in (_LAST_TIMESTAMP_ATTRIBUTE, _PACKET_COUNT_ATTRIBUTE):
            if not hasattr(self._sender, name):
                raise IncompatibleAiortcError(f"{type(self._sender).__name__} has no {name}")

        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            async def next_encoded_frame(codec: Any) -> Any:
                self._learn_origin()
                encoded = await original(codec)
                if encoded is not None:
                    data = b"".join(depayload(codec, p) for p in encoded.payloads)
                    self._kept(int(encoded.timestamp), data)
                return encoded

            return next_encoded_frame

        self._hook = InstanceHook(self._sender, SenderPrivate.NEXT_ENCODED_FRAME, make)

    def _learn_origin(self) -> None:
        # Every packet of the frame encoded last has left by now.
        if self.origin is not None or self._pending is None:
            return
        if getattr(self._sender, _PACKET_COUNT_ATTRIBUTE) == 0:
            return
        last: int = getattr(self._sender, _LAST_TIMESTAMP_ATTRIBUTE)
        timestamp, data = self._pending
        self.origin = (last - timestamp) % _RTP_TIMESTAMP_MODULUS
        self._pending = None
        self._emit(timestamp, data)

    def _kept(self, timestamp: int, data: bytes) -> None:
        if self.origin is None:
            # Only frame 0 can get here: the sender asks for frame 1 only
            # once frame 0's packets are out.
            self._pending = (timestamp, data)
        else:
            self._emit(timestamp, data)

    def _emit(self, timestamp: int, data: bytes) -> None:
        assert self.origin is not None
        self.frames += 1
        self._sink(self.origin + timestamp, data)

    def remove(self) -> None:
        """Keep the last frame if it went out, and take the hook out; idempotent."""
        self._learn_origin()
        self._pending = None
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


def install_stream_recorder(sender: RTCRtpSender, sink: StreamSink) -> StreamRecorder:
    """Keep every frame ``sender`` encodes, from its first, in ``sink``."""
    recorder = StreamRecorder(sender, sink)
    recorder.install()
    return recorder
