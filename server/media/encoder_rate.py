"""A VP8 encoder whose bitrate the session's congestion controller sets.

aiortc's ``Vp8Encoder`` clamps its bitrate to 250 kbit/s .. 1.5 Mbit/s and
takes it from REMB, which its sender writes into ``target_bitrate``. A ball
on black needs about 150 kbit/s at aiortc's default of 500 kbit/s and can do
with 20: the clamp sits above every link this project must fit.
``RateControlledVp8Encoder`` keeps aiortc's encoder as it is (options,
packetisation, picture ids) and changes only where the bitrate comes from:
``set_bitrate``, down to ``MIN_BITRATE_BPS``. REMB is recorded
(``receiver_estimate_bps``), not obeyed. aiortc rebuilds the libvpx context,
which costs a keyframe, when the bitrate moves more than 10 %: PyAV does not
pass a new bitrate to an open context (measured: 500 -> 60 kbit/s on the
open context left the frames at 560 bytes), so the controller changes it
seldom, in 25 % steps.

It also tells the controller what each frame cost (payload bytes, RTP
packets, keyframe or not). ``encode`` runs in the sender's executor thread;
the results wait in a deque, which is thread-safe, until the event loop
takes them (``take_encoded``): the sender encodes frame N before it asks
the track for frame N+1, so they are there by then.

``install_rate_controlled_encoder`` puts one into an ``RTCRtpSender``
before its first frame, through the sender's private ``__encoder``; like
the client's hooks it refuses any aiortc but the supported one. The session
installs it only when it forced VP8 by codec preferences, so the sender
cannot have negotiated another codec.

Its libvpx contexts get ``server.media.codec_options.VP8_OPTION_OVERRIDES`` (issue
11: the denoiser off, most of the encode time for this stream; issue 24:
the fastest real-time speed) merged into the options aiortc sets, and
aiortc's thread count for the cores this process may use rather than the
machine's (``encoder_threads``); everything else stays aiortc's.
"""

from __future__ import annotations

import functools
import inspect
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional

from aiortc import RTCRtpSender
from aiortc.codecs.vpx import DEFAULT_BITRATE, MAX_BITRATE, Vp8Encoder, VpxPayloadDescriptor
from av.frame import Frame

from protocol.aiortc_internals import (
    OtherPrivate,
    SenderPrivate,
    check_aiortc_version,
    check_problems,
    code_names,
)
from server.media.codec_options import (
    VP8_OPTION_OVERRIDES,
    OptionOverrides,
    encoder_threads,
    install_sender_encoder,
    option_constants,
    usable_cores,
)

#: aiortc's default, used while the controller sets nothing.
DEFAULT_BITRATE_BPS: int = DEFAULT_BITRATE
#: Below this libvpx's quantiser limit sets the frame size anyway.
MIN_BITRATE_BPS = 10_000


@dataclass(frozen=True)
class EncodedFrame:
    """What one frame cost: payload bytes (with the VP8 descriptors) in ``packets`` RTP packets."""

    #: On the 90 kHz clock, as the frame was handed over (VP8 may make 2999 of 3000).
    pts: int
    payload_bytes: int
    packets: int
    keyframe: bool


class RateControlledVp8Encoder(Vp8Encoder):
    def __init__(self, cores: Optional[int] = None) -> None:
        self._codec: Optional[OptionOverrides] = None
        self._cores = usable_cores() if cores is None else cores
        super().__init__()
        #: The last REMB aiortc's sender passed on, in bit/s.
        self.receiver_estimate_bps: Optional[int] = None
        #: Keyframes the sender asked for (the receiver's PLI or FIR).
        self.keyframes_requested = 0
        self.keyframes = 0
        self._encoded: deque[EncodedFrame] = deque()

    @property  # type: ignore[override]  # a stand-in for the context aiortc assigns
    def codec(self) -> Optional[OptionOverrides]:
        return self._codec

    @codec.setter
    def codec(self, context: Any) -> None:
        # aiortc's encode assigns each new libvpx context here, then sets it up.
        # A function of the core count alone: a bound method here would tie
        # the context back to this encoder in a reference cycle, and every
        # ended session's libvpx context (megabytes) would wait for the
        # cyclic garbage collector instead of going with its session
        # (tests/test_faults.py: a hundred sessions in a row).
        self._codec = (
            None
            if context is None
            else OptionOverrides(
                context, VP8_OPTION_OVERRIDES, functools.partial(encoder_threads, cores=self._cores)
            )
        )

    @property
    def target_bitrate(self) -> int:
        return int(getattr(self, OtherPrivate.VP8_TARGET_BITRATE))

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        # aiortc's sender writes each REMB here; the controller decides instead.
        self.receiver_estimate_bps = bitrate

    def set_bitrate(self, bitrate_bps: Optional[int]) -> None:
        """The bitrate for the next frames; None for aiortc's default."""
        wanted = DEFAULT_BITRATE_BPS if bitrate_bps is None else bitrate_bps
        setattr(
            self, OtherPrivate.VP8_TARGET_BITRATE, max(MIN_BITRATE_BPS, min(wanted, MAX_BITRATE))
        )

    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        payloads, timestamp = super().encode(frame, force_keyframe)
        if force_keyframe:
            self.keyframes_requested += 1
        keyframe = is_vp8_keyframe(payloads)
        self.keyframes += keyframe
        self._encoded.append(
            EncodedFrame(
                # Not frame.pts: encoding rebased it to the codec's time base.
                pts=timestamp,
                payload_bytes=sum(len(p) for p in payloads),
                packets=len(payloads),
                keyframe=keyframe,
            )
        )
        return payloads, timestamp

    def take_encoded(self) -> list[EncodedFrame]:
        """The frames encoded since the last call, oldest first."""
        taken = []
        while self._encoded:
            taken.append(self._encoded.popleft())
        return taken


def is_vp8_keyframe(payloads: list[bytes]) -> bool:
    """Whether the frame packetised as ``payloads`` is a VP8 keyframe (RFC 6386 9.1)."""
    if not payloads:
        return False
    try:
        _, data = VpxPayloadDescriptor.parse(payloads[0])
    except ValueError:
        return False
    # The frame tag's lowest bit is 0 on a keyframe.
    return bool(data) and data[0] & 0x01 == 0


def check_encoder_hook() -> None:
    """Raise ``IncompatibleAiortcError`` unless aiortc works as the module docstring says."""
    check_aiortc_version()
    problems = []
    next_frame = code_names(getattr(RTCRtpSender, SenderPrivate.NEXT_ENCODED_FRAME, None))
    if SenderPrivate.ENCODER not in next_frame or "get_encoder" not in next_frame:
        problems.append("RTCRtpSender._next_encoded_frame no longer creates its __encoder lazily")
    if "target_bitrate" not in code_names(
        getattr(RTCRtpSender, SenderPrivate.HANDLE_RTCP_PACKET, None)
    ):
        problems.append("RTCRtpSender no longer passes REMB to target_bitrate")
    encode = getattr(Vp8Encoder, "encode", None)
    names = code_names(encode)
    for name in (
        "target_bitrate",
        OtherPrivate.VP8_TARGET_BITRATE,
        "bit_rate",
        "codec",
        "options",
        "thread_count",
    ):
        if name not in names:
            problems.append(f"Vp8Encoder.encode no longer uses {name}")
    if callable(encode) and list(inspect.signature(encode).parameters) != [
        "self",
        "frame",
        "force_keyframe",
    ]:
        problems.append("Vp8Encoder.encode is not (self, frame, force_keyframe)")
    for option in VP8_OPTION_OVERRIDES:
        if option not in option_constants(encode):
            problems.append(f"Vp8Encoder.encode no longer sets {option}")
    if OtherPrivate.VP8_TARGET_BITRATE not in vars(Vp8Encoder()):
        problems.append(f"Vp8Encoder has no {OtherPrivate.VP8_TARGET_BITRATE}")
    check_problems("VP8 sending", problems)


def install_rate_controlled_encoder(sender: RTCRtpSender) -> RateControlledVp8Encoder:
    """Give a VP8 ``sender`` a ``RateControlledVp8Encoder``; before its first frame.

    :raises IncompatibleAiortcError: aiortc is not the supported version, or
        the parts this module uses have changed.
    :raises RuntimeError: the sender already has an encoder (it has sent).
    """
    check_encoder_hook()
    encoder = RateControlledVp8Encoder()
    install_sender_encoder(sender, encoder, "install_rate_controlled_encoder")
    return encoder
