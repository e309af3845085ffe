"""A video jitter buffer that releases a frame as soon as its last packet arrives.

aiortc's ``JitterBuffer._remove_frame`` releases frame N only when the first
packet of frame N+1 arrives; it ignores the RTP marker bit, which the sender
sets on the last packet of each video frame (RFC 7741 for VP8, RFC 6184 for
H.264; aiortc's ``RTCRtpSender`` does so). That adds one frame interval of
latency: about 33 ms at 30 fps.

``FastJitterBuffer`` keeps aiortc's state machine as it is -- the same packet
slots, origin, reordering window, overflow handling and keyframe requests
(``pli_flag``) -- and changes only which frame ``_remove_frame`` hands out:

- A frame is complete when every packet from its start through its marker
  packet is present. Its start is known: it follows, without a gap, the last
  packet released, or it is aiortc's origin. It is released on the ``add()``
  call that completes it.
- Frames released early stay in the slots until aiortc's own logic removes
  them, so aiortc's overflow and reset decisions see the same state as stock.
  When stock then releases such a frame, that second copy is discarded.

Intended differences from stock:

- A frame comes out earlier, never later: one frame interval earlier in
  general, a retransmission round trip earlier when the first packet of the
  next frame is lost.
- Some complete frames come out that stock never releases: those that an
  overflow or a reset discards while stock still waits for the first packet
  of the next frame, and the last frame before the stream stops.

``add()`` returns at most one frame, because the receiver takes one. When a
retransmission completes several frames at once, stock hands the others out
one per later packet. With one packet per frame (a ball on black compresses
that well) that backlog never drains: each new packet adds a frame and
releases one, and latency stays up by the length of the gap for the rest of
the session. ``release_ready_frames()`` hands out the rest at once, and
``install_fast_jitter_buffer`` wires it into the receiver's decoder queue.

Assumed, as RFC 7741 and RFC 6184 require: only the last packet of a frame
carries the marker bit. Frames without any marker bit end at the next
timestamp, as in stock.

**Stale frames** (``stale_after``, off by default). Stock waits for a
missing packet until 512 packets later overflow the buffer (17 s of this
stream), and a frame behind a hole waits with it. On a link narrower than the
stream that wait is what turns into seconds of latency: the hole's
retransmission queues behind the new frames. With ``stale_after`` set, once
a hole has been known that long (its first packet after it arrived
``stale_after`` ago) the buffer gives up on the frame: it asks for a keyframe
(``add`` returns the PLI flag, repeated every ``keyframe_retry_s`` while none
comes) and, when the first packet of a keyframe is in and its frame is
complete, drops everything before it and goes on from there. VP8 predicts
each frame from the one before, so the frames between the hole and the
keyframe could only decode into a picture of the wrong moment: they are
dropped too. If the hole fills before a keyframe comes, nothing is dropped.
Counted in ``frames_dropped_stale`` (frames given up, the incomplete one and
the ones dropped with it) and ``keyframes_requested``.

This module depends on private parts of aiortc. ``install_fast_jitter_buffer``
checks them and refuses to run against any version other than
``SUPPORTED_AIORTC_VERSION``.
"""

from __future__ import annotations

import inspect
import queue
import time
from typing import Any, Callable, Optional

from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add, uint16_gt

from protocol.aiortc_internals import (
    SUPPORTED_AIORTC_VERSION,
    IncompatibleAiortcError,
    JitterBufferPrivate,
    ReceiverPrivate,
    check_aiortc_version,
    check_problems,
    code_names,
)

__all__ = [
    "SUPPORTED_AIORTC_VERSION",
    "FastJitterBuffer",
    "IncompatibleAiortcError",
    "STALE_FRAME_S",
    "check_fast_jitter_buffer_hook",
    "install_fast_jitter_buffer",
    "starts_keyframe",
]

#: How long a frame may wait for a missing packet before the buffer gives up
#: on it. The NACK goes out when the gap is seen and is repeated 100 ms
#: later and 200 ms later (on the next packet after each, up to a frame
#: interval on): 250 ms holds all three. With 150 ms, two fit, and at 5 %
#: loss both ways about one loss in a hundred lost both (measured: one drop in
#: four 15 s runs, 7 frames unanswered with it, failing the loss test's 99 %).
STALE_FRAME_S = 0.25
#: How often to ask for a keyframe again while none arrives: a few round trips.
KEYFRAME_RETRY_S = 0.3

_VP8_KEYFRAME_START_CODE = b"\x9d\x01\x2a"
_ANNEX_B_START_CODE = b"\x00\x00\x00\x01"
_H264_NAL_SPS = 7


class FastJitterBuffer(JitterBuffer):
    """
    aiortc's :class:`JitterBuffer` that also releases a frame once its
    marker packet completes it.

    :param capacity: Number of packet slots, a power of 2.
    :param prefetch: Must be 0. Prefetch holds frames back on purpose, which
        this class exists to avoid.
    :param is_video: Request a keyframe (``pli_flag``) when packets are dropped.
    :param stale_after: Give up on a frame whose hole is known this long (s);
        None waits like stock.
    :param clock: Monotonic time in seconds (tests pass their own).
    """

    def __init__(
        self,
        capacity: int,
        prefetch: int = 0,
        is_video: bool = False,
        stale_after: Optional[float] = None,
        clock: Callable[[], float] = time.monotonic,
        keyframe_retry_s: float = KEYFRAME_RETRY_S,
    ) -> None:
        if prefetch != 0:
            raise ValueError("FastJitterBuffer does not support prefetch")
        super().__init__(capacity, prefetch=prefetch, is_video=is_video)
        # (sequence_number, timestamp) of the last packet of the last frame
        # released ahead of stock. Those packets are still in the slots.
        self._released_end: Optional[tuple[int, int]] = None
        self._stale_after = stale_after
        self._clock = clock
        self._keyframe_retry_s = keyframe_retry_s
        # When each slot's packet arrived, as (sequence_number, time).
        self._arrivals: list[Optional[tuple[int, float]]] = [None] * capacity
        self._newest: Optional[int] = None
        self._now = 0.0
        # Since when a keyframe is awaited (a stale frame was given up), and
        # when one was last asked for.
        self._resync_since: Optional[float] = None
        self._keyframe_asked_at = 0.0
        self._ask_keyframe = False
        self.frames_dropped_stale = 0
        self.keyframes_requested = 0

    def add(self, packet: RtpPacket) -> tuple[bool, Optional[JitterFrame]]:
        if self._stale_after is None:
            return super().add(packet)
        self._now = self._clock()
        sequence_number = packet.sequence_number
        self._arrivals[sequence_number % self._capacity] = (sequence_number, self._now)
        if self._newest is None or uint16_gt(sequence_number, self._newest):
            self._newest = sequence_number
        pli_flag, frame = super().add(packet)
        if self._ask_keyframe:
            self._ask_keyframe = False
            pli_flag = True
        return pli_flag, frame

    def _remove_frame(self, sequence_number: int) -> Optional[JitterFrame]:
        # add() calls this after storing the packet and after any reset or
        # overflow, so the slots are already in their final state.
        if self._stale_after is not None:
            self._give_up_on_stale_frames()
        if self._released_ahead() == 0:
            # Nothing was released ahead of stock, so a frame stock releases
            # now (the oldest, once the next one has begun) is new: pass it on.
            frame = super()._remove_frame(sequence_number)
            if frame is not None:
                return frame
        else:
            # Stock may now release its oldest frame. We released that frame
            # already, so let stock drop its packets and discard the result.
            super()._remove_frame(sequence_number)
        return self._release_next_complete_frame()

    def release_ready_frames(self) -> list[JitterFrame]:
        """
        Release every frame that is already complete, in order.

        For each one, stock's logic drops one frame it still holds, just as
        on an ``add()`` that releases a frame, so the packets kept for stock
        do not pile up after every burst.
        """
        frames = []
        while (frame := self._release_next_complete_frame()) is not None:
            frames.append(frame)
            if self._released_ahead():
                super()._remove_frame(0)  # stock ignores the argument
        return frames

    def _released_ahead(self) -> int:
        """
        Return how many packets, counted from the origin, were already
        released by this class but are still held by stock's logic.
        """
        if self._released_end is not None and self._origin is not None:
            sequence_number, timestamp = self._released_end
            packet = self._packets[sequence_number % self._capacity]
            # Stock removes packets only from the origin onwards, so the
            # released packets are all still there as long as the last one is.
            # A duplicate of that packet has the same number and timestamp.
            if (
                packet is not None
                and packet.sequence_number == sequence_number
                and packet.timestamp == timestamp
            ):
                return uint16_add(sequence_number, -self._origin) + 1
            self._released_end = None
        return 0

    def _release_next_complete_frame(self) -> Optional[JitterFrame]:
        """
        Release the frame right after the packets already released, if all of
        its packets through the marker packet are present.
        """
        packets = self._complete_frame_at(self._released_ahead())
        if packets is None:
            return None
        if self._resync_since is not None:
            # The hole filled before a keyframe came: nothing to give up.
            self._resync_since = None
        last = packets[-1]
        self._released_end = (last.sequence_number, last.timestamp)
        return JitterFrame(
            data=b"".join([x._data for x in packets]),  # type: ignore[attr-defined]
            timestamp=packets[0].timestamp,
        )

    def _complete_frame_at(self, start: int) -> Optional[list[RtpPacket]]:
        """The packets of the frame that begins ``start`` slots after the
        origin, if all of them through the marker packet are present."""
        packets: list[RtpPacket] = []
        origin = self._origin
        if origin is None:
            return None  # nothing has arrived
        for count in range(start, self._capacity):
            packet = self._packets[(origin + count) % self._capacity]
            if packet is None:
                # A hole: wait for the retransmission. Later frames wait too,
                # because the decoder needs frames in order.
                return None
            if packets and packet.timestamp != packets[0].timestamp:
                # The next frame has begun, so this one is complete even
                # without a marker bit. Stock would release it too.
                break
            packets.append(packet)
            if packet.marker:
                break
        else:
            return None
        return packets

    def _give_up_on_stale_frames(self) -> None:
        """Ask for a keyframe once the head frame's hole is stale, and skip to
        the keyframe once it is complete."""
        assert self._stale_after is not None
        if self._origin is None or self._newest is None:
            return
        start = self._released_ahead()
        waiting = uint16_add(self._newest, -self._origin) + 1
        if self._resync_since is None:
            known_since = self._hole_known_since(start, waiting)
            if known_since is None or self._now - known_since <= self._stale_after:
                return
            self._resync_since = self._now
            self._request_keyframe()
        elif self._now - self._keyframe_asked_at >= self._keyframe_retry_s:
            self._request_keyframe()
        for count in range(start + 1, min(waiting, self._capacity)):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None or not starts_keyframe(packet._data):  # type: ignore[attr-defined]
                continue
            if self._complete_frame_at(count) is None:
                return  # wait for the rest of the keyframe
            self.frames_dropped_stale += self._frames_before(start, count)
            # Drops the frames given up and stock's copies of those released.
            self.remove(count)
            self._released_end = None
            self._resync_since = None
            return

    def _hole_known_since(self, start: int, waiting: int) -> Optional[float]:
        """When the first packet after the first hole past ``start`` arrived;
        None without a hole."""
        hole = False
        origin = self._origin
        assert origin is not None  # _give_up_on_stale_frames checked
        for count in range(start, min(waiting, self._capacity)):
            position = (origin + count) % self._capacity
            packet = self._packets[position]
            if packet is None:
                hole = True
            elif hole:
                arrival = self._arrivals[position]
                if arrival is not None and arrival[0] == packet.sequence_number:
                    return arrival[1]
                return self._now
        return None

    def _frames_before(self, start: int, end: int) -> int:
        """Frames in the slots ``start``..``end``: their distinct timestamps,
        plus the head frame when none of its packets came (exact with one
        packet per frame, as this stream has)."""
        timestamps = set()
        origin = self._origin
        assert origin is not None  # _give_up_on_stale_frames checked
        for count in range(start, end):
            packet = self._packets[(origin + count) % self._capacity]
            if packet is not None:
                timestamps.add(packet.timestamp)
        head_missing = self._packets[(origin + start) % self._capacity] is None
        return len(timestamps) + head_missing

    def _request_keyframe(self) -> None:
        self._ask_keyframe = True
        self._keyframe_asked_at = self._now
        self.keyframes_requested += 1


def starts_keyframe(data: bytes) -> bool:
    """
    Whether depayloaded RTP data is the first packet of a keyframe: VP8's
    keyframe header (RFC 6386 9.1: frame tag with the key bit clear, then the
    start code 9d 01 2a), or H.264 beginning with a sequence parameter set,
    which leads every IDR access unit aiortc's encoder makes.
    """
    if len(data) >= 6 and data[0] & 0x01 == 0 and data[3:6] == _VP8_KEYFRAME_START_CODE:
        return True
    return (
        len(data) > len(_ANNEX_B_START_CODE)
        and data.startswith(_ANNEX_B_START_CODE)
        and data[len(_ANNEX_B_START_CODE)] & 0x1F == _H264_NAL_SPS
    )


class _DrainingDecoderQueue(queue.Queue[Any]):
    """
    The receiver's decoder queue, which follows every frame the receiver
    puts with the frames the buffer has ready behind it.

    The receiver puts ``(codec, frame)`` with the frame's RTP timestamp already
    mapped, and ``None`` to stop the decoder thread.
    """

    def __init__(self, buffer: FastJitterBuffer, timestamp_mapper: Any) -> None:
        super().__init__()
        self._buffer = buffer
        self._timestamp_mapper = timestamp_mapper

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        super().put(item, block, timeout)
        if item is None:
            return
        codec = item[0]
        for frame in self._buffer.release_ready_frames():
            frame.timestamp = self._timestamp_mapper.map(frame.timestamp)
            super().put((codec, frame), block, timeout)


def install_fast_jitter_buffer(
    receiver: RTCRtpReceiver, stale_after: Optional[float] = None
) -> None:
    """
    Replace the video jitter buffer of `receiver` with a :class:`FastJitterBuffer`
    that gives up on frames stale for `stale_after` seconds (None: never).

    Call it after ``setRemoteDescription`` creates the receiver and before
    any RTP arrives. Calling it again on the same receiver does nothing.

    :raises IncompatibleAiortcError: aiortc is not the supported version, or
        the private parts this module uses have changed.
    :raises ValueError: `receiver` is not a video receiver.
    :raises RuntimeError: RTP has already arrived.
    """
    check_fast_jitter_buffer_hook()
    buffer = getattr(receiver, ReceiverPrivate.JITTER_BUFFER, None)
    if isinstance(buffer, FastJitterBuffer):
        return
    if not isinstance(buffer, JitterBuffer):
        raise IncompatibleAiortcError(
            f"{type(receiver).__name__} has no aiortc JitterBuffer in {ReceiverPrivate.JITTER_BUFFER}"
        )
    _check_buffer_state(buffer)
    if not getattr(buffer, JitterBufferPrivate.IS_VIDEO):
        raise ValueError("install_fast_jitter_buffer only applies to video receivers")
    if getattr(buffer, JitterBufferPrivate.ORIGIN) is not None:
        # Swapping now would lose the packets already buffered.
        raise RuntimeError("install_fast_jitter_buffer must run before RTP arrives")
    _check_receiver_shape(receiver)
    fast = FastJitterBuffer(capacity=buffer.capacity, is_video=True, stale_after=stale_after)
    setattr(receiver, ReceiverPrivate.JITTER_BUFFER, fast)
    setattr(
        receiver,
        ReceiverPrivate.DECODER_QUEUE,
        _DrainingDecoderQueue(fast, getattr(receiver, ReceiverPrivate.TIMESTAMP_MAPPER)),
    )


def check_fast_jitter_buffer_hook() -> None:
    """Raise ``IncompatibleAiortcError`` unless aiortc's receiver and ``JitterBuffer``
    work as ``FastJitterBuffer`` and ``install_fast_jitter_buffer`` assume."""
    check_aiortc_version()
    problems = []
    # The receiver reads the buffer through the mangled attribute and calls add().
    handle = code_names(getattr(RTCRtpReceiver, ReceiverPrivate.HANDLE_RTP_PACKET, None))
    if ReceiverPrivate.JITTER_BUFFER not in handle or "add" not in handle:
        problems.append("RTCRtpReceiver._handle_rtp_packet no longer calls its add()")
    if ReceiverPrivate.DECODER_QUEUE not in handle or "put" not in handle:
        problems.append("RTCRtpReceiver._handle_rtp_packet no longer puts on its decoder queue")
    init = code_names(RTCRtpReceiver.__init__)
    for name in (ReceiverPrivate.DECODER_THREAD, ReceiverPrivate.TIMESTAMP_MAPPER):
        if name not in init:
            problems.append(f"RTCRtpReceiver no longer keeps a {name}")
    expected_parameters = {
        "add": ["self", "packet"],
        JitterBufferPrivate.REMOVE_FRAME: ["self", "sequence_number"],
    }
    for name, parameters in expected_parameters.items():
        method = getattr(JitterBuffer, name, None)
        actual = list(inspect.signature(method).parameters) if callable(method) else []
        if actual != parameters:
            problems.append(f"JitterBuffer.{name} is not ({', '.join(parameters)})")
    # FastJitterBuffer hooks in where add() hands over to _remove_frame().
    if JitterBufferPrivate.REMOVE_FRAME not in code_names(getattr(JitterBuffer, "add", None)):
        problems.append("JitterBuffer.add no longer calls _remove_frame")
    problems += _buffer_state_problems(JitterBuffer(capacity=2, is_video=True))
    check_problems("JitterBuffer", problems)


def _buffer_state_problems(buffer: JitterBuffer) -> list[str]:
    return [
        f"JitterBuffer has no attribute {name}"
        for name in JitterBufferPrivate.STATE
        if not hasattr(buffer, name)
    ]


def _check_buffer_state(buffer: JitterBuffer) -> None:
    check_problems("JitterBuffer", _buffer_state_problems(buffer))


def _check_receiver_shape(receiver: RTCRtpReceiver) -> None:
    """Check the receiver parts that carry frames from the buffer to the decoder."""
    problems = []
    decoder_queue = getattr(receiver, ReceiverPrivate.DECODER_QUEUE, None)
    if type(decoder_queue) is not queue.Queue:
        problems.append(f"{ReceiverPrivate.DECODER_QUEUE} is not a queue.Queue")
    if not hasattr(receiver, ReceiverPrivate.DECODER_THREAD):
        problems.append(f"no {ReceiverPrivate.DECODER_THREAD}")
    elif getattr(receiver, ReceiverPrivate.DECODER_THREAD) is not None:
        # The thread holds on to the queue it was started with.
        raise RuntimeError("install_fast_jitter_buffer must run before the receiver starts")
    mapper = getattr(receiver, ReceiverPrivate.TIMESTAMP_MAPPER, None)
    if not callable(getattr(mapper, "map", None)):
        problems.append(f"{ReceiverPrivate.TIMESTAMP_MAPPER} has no map()")
    check_problems("RTCRtpReceiver", problems)
