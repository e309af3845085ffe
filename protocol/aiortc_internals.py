"""Every private part of aiortc this project touches, and the guard around them.

The client's jitter buffer, NACK generator, inline decoder, stage tracer and
reading of the receiver's RTP timestamp origin, and the server's encoders,
inline encoding, stage tracer and reading of its sender's timestamp origin
all depend on names aiortc does not promise to keep. They are listed here,
once: the hook modules (``server/media/``, ``client/media/``) refer to these
constants and never spell a private name themselves, so an aiortc upgrade
starts with this table (see docs/aiortc-upgrade.md), and
``tests/test_import_rules.py`` keeps the names out of every other module.

Each hook checks the names it uses and refuses to run against any aiortc but
the one it was written for, rather than misbehave quietly; each side's
``media/hooks.py`` runs every check when its program starts.
"""

from __future__ import annotations

from typing import Final

import aiortc

#: The aiortc release whose private parts this project was written against.
#: Keep equal to the pin in requirements.txt.
SUPPORTED_AIORTC_VERSION = "1.16.0"


class SenderPrivate:
    """``aiortc.RTCRtpSender``'s private attributes (name-mangled) and methods."""

    #: The encoder, created lazily by ``_next_encoded_frame``; ours go in before it.
    ENCODER: Final = "_RTCRtpSender__encoder"
    #: The event loop whose ``run_in_executor`` encodes each frame.
    LOOP: Final = "_RTCRtpSender__loop"
    #: The RTP timestamp of the last packet sent.
    RTP_TIMESTAMP: Final = "_RTCRtpSender__rtp_timestamp"
    #: RTP packets sent so far.
    PACKET_COUNT: Final = "_RTCRtpSender__packet_count"
    SSRC: Final = "_ssrc"
    RUN_RTP: Final = "_run_rtp"
    NEXT_ENCODED_FRAME: Final = "_next_encoded_frame"
    HANDLE_RTCP_PACKET: Final = "_handle_rtcp_packet"


class ReceiverPrivate:
    """``aiortc.RTCRtpReceiver``'s private attributes (name-mangled) and methods."""

    JITTER_BUFFER: Final = "_RTCRtpReceiver__jitter_buffer"
    NACK_GENERATOR: Final = "_RTCRtpReceiver__nack_generator"
    #: The ``queue.Queue`` of ``(codec, frame)`` the decoder thread reads.
    DECODER_QUEUE: Final = "_RTCRtpReceiver__decoder_queue"
    DECODER_THREAD: Final = "_RTCRtpReceiver__decoder_thread"
    #: The ``threading.Event`` a failed decode sets, for a PLI.
    DECODER_ERROR: Final = "_RTCRtpReceiver__decoder_error"
    TIMESTAMP_MAPPER: Final = "_RTCRtpReceiver__timestamp_mapper"
    HANDLE_RTP_PACKET: Final = "_handle_rtp_packet"
    #: The remote track's ``asyncio.Queue`` of decoded frames.
    TRACK_QUEUE: Final = "_queue"


class JitterBufferPrivate:
    """``aiortc.jitterbuffer.JitterBuffer``'s private state, which
    ``FastJitterBuffer`` (a subclass) reads and keeps as aiortc does."""

    CAPACITY: Final = "_capacity"
    ORIGIN: Final = "_origin"
    PACKETS: Final = "_packets"
    IS_VIDEO: Final = "_is_video"
    REMOVE_FRAME: Final = "_remove_frame"
    STATE: Final = (CAPACITY, ORIGIN, PACKETS, IS_VIDEO)


class OtherPrivate:
    """The remaining private parts, one owner each."""

    #: ``TimestampMapper``: the first RTP timestamp it saw.
    TIMESTAMP_MAPPER_ORIGIN: Final = "_origin"
    #: ``Vp8Encoder``: the bitrate its next libvpx context gets.
    VP8_TARGET_BITRATE: Final = "_Vp8Encoder__target_bitrate"
    #: ``H264Encoder``: where it sets up each libx264 context.
    H264_ENCODE_FRAME: Final = "_encode_frame"
    #: ``RTCDtlsTransport``: plaintext RTP out, decrypted RTP in.
    DTLS_SEND_RTP: Final = "_send_rtp"
    DTLS_HANDLE_RTP_DATA: Final = "_handle_rtp_data"
    #: ``RTCSctpTransport``: each SCTP chunk out, and the DTLS call it makes.
    SCTP_SEND_CHUNK: Final = "_send_chunk"
    DTLS_SEND_DATA: Final = "_send_data"
    #: ``queue.Queue`` (the standard library's): what ``put`` and ``get`` call.
    QUEUE_PUT: Final = "_put"
    QUEUE_GET: Final = "_get"


#: Every mangled name above: a string no module outside the table may spell.
MANGLED_NAMES: Final = frozenset(
    value
    for table in (SenderPrivate, ReceiverPrivate, OtherPrivate)
    for value in vars(table).values()
    if isinstance(value, str) and "__" in value
)


class IncompatibleAiortcError(RuntimeError):
    """The installed aiortc is not the one our hooks into it were written for."""


def check_aiortc_version() -> None:
    version = getattr(aiortc, "__version__", None)
    if version != SUPPORTED_AIORTC_VERSION:
        raise IncompatibleAiortcError(
            f"this project's hooks into aiortc were written for aiortc "
            f"{SUPPORTED_AIORTC_VERSION}, found {version}. Re-read the aiortc "
            f"modules they name, then update them and the pin together."
        )


def code_names(function: object) -> tuple[str, ...]:
    """Return the attribute and global names `function`'s bytecode uses."""
    code = getattr(function, "__code__", None)
    return code.co_names if code is not None else ()


def check_problems(what: str, problems: list[str]) -> None:
    """Raise ``IncompatibleAiortcError`` naming ``problems``, if there are any, on one line."""
    if problems:
        raise IncompatibleAiortcError(f"aiortc's {what} changed shape: " + "; ".join(problems))
