"""Decode each frame on the event loop, as the jitter buffer releases it.

aiortc's receiver puts every complete frame on a ``queue.Queue`` for its
decoder thread, and the thread hands each picture back to the loop with
``run_coroutine_threadsafe``: two wake-ups of a sleeping thread per frame,
on the critical path, which together cost about as much as decoding a
640x480 frame itself (docs/latency.md has the stage times).

``InlineDecoder`` hooks that queue's ``_put`` (which every ``put`` calls,
aiortc's and the fast jitter buffer's alike) on the one receiver: a frame is
decoded right there, in the loop, and its picture goes straight into the
track's queue. The decoder thread gets nothing but the ``None`` that stops
it. Decoding errors are handled as aiortc's thread handles them: logged,
and the receiver's decode-error flag set, so its next packet asks for a
keyframe (PLI). The loop is busy while a frame decodes; the client has
nothing else to do meanwhile.

VP8 is decoded with FFmpeg's own decoder (``NativeVp8Decoder``) rather than
aiortc's libvpx wrapper: the same pictures, in less time, at every frame
size measured (docs/latency.md). Other codecs use aiortc's.

Like the other hooks into aiortc it refuses any version but the supported one.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Any, Callable, Optional

import av
from aiortc import RTCRtpReceiver
from aiortc.codecs import get_decoder
from aiortc.mediastreams import VIDEO_TIME_BASE
from aiortc.rtcrtpreceiver import decoder_worker

from protocol.aiortc_internals import (
    IncompatibleAiortcError,
    OtherPrivate,
    ReceiverPrivate,
    check_aiortc_version,
    check_problems,
    code_names,
)
from protocol.instance_hook import InstanceHook

logger = logging.getLogger("client.media.inline_decoder")

#: Called as ``observer(stage, pts, time)`` with "decode_start" and "decoded".
DecodeObserver = Callable[[str, int, float], None]


def check_inline_decoder_hook() -> None:
    """Raise ``IncompatibleAiortcError`` unless the receiver decodes as the docstring says."""
    check_aiortc_version()
    problems = []
    handle = code_names(getattr(RTCRtpReceiver, ReceiverPrivate.HANDLE_RTP_PACKET, None))
    if ReceiverPrivate.DECODER_QUEUE not in handle or "put" not in handle:
        problems.append("RTCRtpReceiver._handle_rtp_packet no longer puts on its decoder queue")
    if ReceiverPrivate.DECODER_ERROR not in handle:
        problems.append("RTCRtpReceiver._handle_rtp_packet no longer reads its decoder error")
    worker = code_names(decoder_worker)
    for name in ("get_decoder", "decode", "FFmpegError", "set"):
        if name not in worker:
            problems.append(f"aiortc's decoder_worker no longer uses {name}")
    if OtherPrivate.QUEUE_PUT not in code_names(queue.Queue.put):
        problems.append("queue.Queue.put no longer calls _put")
    check_problems("decoding", problems)


class NativeVp8Decoder:
    """aiortc's ``Vp8Decoder`` with FFmpeg's ``vp8`` decoder in place of ``libvpx``.

    One thread: the encoder sends one token partition, so slice threads have
    nothing to share, and frame threads would hold pictures back.
    """

    def __init__(self) -> None:
        self.codec = av.CodecContext.create("vp8", "r")
        self.codec.thread_count = 1

    def decode(self, encoded_frame: Any) -> list[av.VideoFrame]:
        packet = av.Packet(encoded_frame.data)
        packet.pts = encoded_frame.timestamp
        packet.time_base = VIDEO_TIME_BASE
        return list(self.codec.decode(packet))


def make_decoder(codec: Any) -> Any:
    """The decoder for ``codec``: FFmpeg's own for VP8, aiortc's for the rest."""
    if codec.mimeType.lower() == "video/vp8":
        return NativeVp8Decoder()
    return get_decoder(codec)


class InlineDecoder:
    """Lifecycle: ``install()`` after the jitter buffer is in place and before
    the receiver starts; ``remove()`` (optional: the receiver's stop still
    reaches its thread) hands decoding back to aiortc's thread."""

    def __init__(
        self,
        receiver: RTCRtpReceiver,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._receiver = receiver
        self._clock = clock
        self._decoders: dict[str, Any] = {}
        self._hook: Optional[InstanceHook] = None
        self._track_queue: Optional[asyncio.Queue] = None
        #: Told when each frame's decoding starts and ends (the stage trace).
        self.observer: Optional[DecodeObserver] = None
        self.frames_decoded = 0
        self.decode_errors = 0

    def install(self) -> None:
        """:raises IncompatibleAiortcError: see ``check_inline_decoder_hook``.
        :raises RuntimeError: the receiver's decoder thread already runs."""
        check_inline_decoder_hook()
        receiver = self._receiver
        decoder_queue = getattr(receiver, ReceiverPrivate.DECODER_QUEUE, None)
        error = getattr(receiver, ReceiverPrivate.DECODER_ERROR, None)
        track_queue = getattr(receiver.track, ReceiverPrivate.TRACK_QUEUE, None)
        if (
            not isinstance(decoder_queue, queue.Queue)
            or not isinstance(error, threading.Event)
            or not isinstance(track_queue, asyncio.Queue)
        ):
            raise IncompatibleAiortcError(
                "the receiver has no decoder queue, decoder error flag or track queue"
            )
        if getattr(receiver, ReceiverPrivate.DECODER_THREAD, None) is not None:
            raise RuntimeError("install the inline decoder before the receiver starts")

        def make(original: Callable[[Any], None]) -> Callable[[Any], None]:
            def _put(item: Any) -> None:
                if item is None:
                    original(item)  # stops aiortc's (idle) decoder thread
                else:
                    self._decode(item[0], item[1], error, track_queue)

            return _put

        self._hook = InstanceHook(decoder_queue, OtherPrivate.QUEUE_PUT, make)
        self._track_queue = track_queue

    @property
    def backlog(self) -> int:
        """Decoded pictures in the track's queue, not yet taken by the session."""
        return self._track_queue.qsize() if self._track_queue is not None else 0

    def _decode(
        self, codec: Any, encoded_frame: Any, error: threading.Event, track_queue: asyncio.Queue
    ) -> None:
        decoder = self._decoders.get(codec.name)
        if decoder is None:
            decoder = self._decoders[codec.name] = make_decoder(codec)
        observer = self.observer
        if observer is not None:
            observer("decode_start", encoded_frame.timestamp, self._clock())
        try:
            frames = decoder.decode(encoded_frame)
        except av.FFmpegError as exc:
            # As aiortc's thread does: keep the decoder (resetting it would fail
            # every frame until a keyframe) and let the receiver send a PLI.
            logger.warning("failed to decode %s frame: %s", codec.name, exc)
            self.decode_errors += 1
            error.set()
            return
        for frame in frames:
            if observer is not None:
                observer("decoded", int(frame.pts), self._clock())
            self.frames_decoded += 1
            track_queue.put_nowait(frame)

    def remove(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
