"""The client's hooks into aiortc's receiver: one check at start, one install order.

Every private name they use is in ``protocol.aiortc_internals``; this module
owns which hooks a session's video receiver gets and in what order, after
``setRemoteDescription`` creates it and before RTP arrives:

1. the repeating NACK generator (``client.media.repeating_nack``), which
   gives up on a packet when the fast jitter buffer gives up on its frame;
2. the wire timestamps (``client.media.wire_timestamps``), which only read the
   receiver's timestamp mapper;
3. the fast jitter buffer (``client.media.fast_jitter_buffer``), which also
   replaces the receiver's decoder queue with one of its own;
4. the inline decoder (``client.media.inline_decoder``), unless
   ``--decoder-thread``: it hooks the decoder queue, so after 3;
5. the stage tracer (``client.media.stage_tracer``), last: it hooks the
   decoder queue too, around whatever 3 and 4 put there, and the decoder
   reports to it.

``check_hooks`` runs every hook's check, whatever the flags, when the client
starts: on an aiortc the hooks do not fit it exits with one line rather than
fail in its first session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from aiortc import RTCRtpReceiver
from aiortc.rtcsctptransport import RTCSctpTransport

from client.media.fast_jitter_buffer import (
    STALE_FRAME_S,
    check_fast_jitter_buffer_hook,
    install_fast_jitter_buffer,
)
from client.media.inline_decoder import InlineDecoder, check_inline_decoder_hook
from client.media.repeating_nack import check_repeating_nack_hook, install_repeating_nack
from client.media.stage_tracer import ClientStageTracer, check_tracer_hooks
from client.media.wire_timestamps import WireTimestamps, check_wire_timestamps_hook
from protocol.aiortc_internals import ReceiverPrivate
from protocol.stage_trace import StageTraceWriter


def check_hooks() -> None:
    """Raise ``IncompatibleAiortcError`` (one line) unless every receiver hook fits aiortc."""
    check_repeating_nack_hook()
    check_wire_timestamps_hook()
    check_fast_jitter_buffer_hook()
    check_inline_decoder_hook()
    check_tracer_hooks()


@dataclass
class ReceiverHooks:
    """What ``install_receiver_hooks`` put into one receiver."""

    wire_timestamps: WireTimestamps
    #: None with --decoder-thread.
    inline_decoder: Optional[InlineDecoder]
    #: None without --trace-stages.
    tracer: Optional[ClientStageTracer]


def install_receiver_hooks(
    receiver: RTCRtpReceiver,
    sctp: Optional[RTCSctpTransport],
    fast_jitter_buffer: bool = True,
    decoder_thread: bool = False,
    stage_trace: Optional[StageTraceWriter] = None,
    session_name: str = "client-session",
) -> ReceiverHooks:
    """Hook one session's video ``receiver``, in the order above.

    :raises IncompatibleAiortcError: a hook no longer fits aiortc.
    :raises RuntimeError: RTP has arrived already.
    """
    # The fast buffer gives up on a frame after STALE_FRAME_S and asks for a
    # keyframe: its packets are not worth asking for later.
    install_repeating_nack(receiver, give_up_after=STALE_FRAME_S if fast_jitter_buffer else None)
    wire_timestamps = WireTimestamps(receiver)
    if fast_jitter_buffer:
        install_fast_jitter_buffer(receiver, stale_after=STALE_FRAME_S)
    decoder = None
    if not decoder_thread:
        decoder = InlineDecoder(receiver)
        decoder.install()
    tracer = None
    if stage_trace is not None:
        tracer = ClientStageTracer(stage_trace, session_name, wire_timestamps)
        tracer.attach(receiver, sctp)
        if decoder is not None:
            decoder.observer = tracer.decoder_stage
    return ReceiverHooks(wire_timestamps, decoder, tracer)


def receiver_components(receiver: RTCRtpReceiver) -> dict[str, str]:
    """Class names of the jitter buffer and NACK generator ``receiver`` uses."""
    return {
        "jitter_buffer": type(getattr(receiver, ReceiverPrivate.JITTER_BUFFER, None)).__name__,
        "nack_generator": type(getattr(receiver, ReceiverPrivate.NACK_GENERATOR, None)).__name__,
    }


def receiver_counters(receiver: RTCRtpReceiver) -> dict[str, int]:
    """What the video receiver gave up on and asked for (0 where its parts do not count)."""
    buffer = getattr(receiver, ReceiverPrivate.JITTER_BUFFER, None)
    nack = getattr(receiver, ReceiverPrivate.NACK_GENERATOR, None)
    return {
        "frames_dropped_stale": getattr(buffer, "frames_dropped_stale", 0),
        "keyframes_requested": getattr(buffer, "keyframes_requested", 0),
        "packets_nacked": getattr(nack, "packets_requested", 0),
        "nacks_over_budget": getattr(nack, "requests_over_budget", 0),
        "packets_given_up": getattr(nack, "packets_given_up", 0),
    }
