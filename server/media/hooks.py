"""The server's hooks into aiortc's sender: one check at start, one install order.

Every private name they use is in ``protocol.aiortc_internals``; this module
owns which hooks a session's video sender gets and in what order:

1. its encoder (``server.media.encoder_rate`` for VP8, by the link
   adaptation; ``server.media.codec_options`` for H.264). Encoders go into the
   sender's lazily filled encoder slot, so before anything else touches it;
2. encoding on the event loop (``server.media.inline_encoding``), unless
   ``--encoder-thread``; it swaps the sender's loop, independent of the encoder;
3. the stream recorder (``server.media.stream_recorder``), with ``--record``:
   it keeps what the encoder produced, so it wraps the sender's encoded-frame
   step once the encoder and its loop are chosen;
4. the RTP timestamp origin (``server.media.rtp_origin``), which only reads;
5. the stage tracer (``server.media.stage_tracer``), last: at the first frame
   it wraps whichever encoder the slot then holds, so that encoder must be in
   place by then.

``check_hooks`` runs every hook's check, whatever the flags: the server
refuses to start on an aiortc its hooks do not fit rather than fail sessions.
"""

from __future__ import annotations

from typing import Optional

from aiortc import RTCRtpSender

from server.media.codec_options import check_h264_hook, install_fast_h264_encoder
from server.media.encoder_rate import check_encoder_hook
from server.media.inline_encoding import check_inline_encoding_hook, encode_in_loop
from server.media.link_adaptation import LinkAdaptation
from server.media.rtp_origin import SenderTimestampOrigin, check_sender_shape
from server.media.stage_tracer import ServerStageTracer, check_tracer_hooks
from server.media.stream_recorder import (
    StreamRecorder,
    StreamSink,
    check_stream_recorder_hook,
    install_stream_recorder,
)


def check_hooks() -> None:
    """Raise ``IncompatibleAiortcError`` (one line) unless every sender hook fits aiortc."""
    check_sender_shape()
    check_encoder_hook()
    check_h264_hook()
    check_inline_encoding_hook()
    check_tracer_hooks()
    check_stream_recorder_hook()


def install_sender_hooks(
    sender: RTCRtpSender,
    codec: str,
    adaptation: LinkAdaptation,
    rtp_origin: SenderTimestampOrigin,
    encoder_thread: bool = False,
    tracer: Optional[ServerStageTracer] = None,
    stream_sink: Optional[StreamSink] = None,
) -> Optional[StreamRecorder]:
    """Hook one session's video ``sender``, in the order above; before its first frame.

    Returns the stream recorder when given a ``stream_sink``: the caller removes
    it after the tracer (hooks come out in reverse order).

    :raises IncompatibleAiortcError: a hook no longer fits aiortc.
    :raises RuntimeError: the sender has sent already.
    """
    adaptation.attach(sender, codec)
    if codec.lower() == "h264":
        # VP8 has the rate controlled encoder; H.264 gets its options here.
        install_fast_h264_encoder(sender)
    if not encoder_thread:
        encode_in_loop(sender)
    stream_recorder = None
    if stream_sink is not None:
        stream_recorder = install_stream_recorder(sender, stream_sink)
    # Answers may name their frame by RTP timestamp: learn the sender's origin.
    rtp_origin.attach(sender)
    if tracer is not None:
        tracer.attach(sender)
    return stream_recorder
