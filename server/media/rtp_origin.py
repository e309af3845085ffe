"""The RTP timestamp origin of the session's video sender, read from aiortc.

An answer that names its frame by ``rtp_timestamp`` names it as it was on the
wire: the frame's pts plus the random origin aiortc's ``RTCRtpSender`` draws
when it starts sending. aiortc keeps that origin in a local variable of
``_run_rtp``, but the sender remembers the timestamp of the last packet it
sent. The sender asks the track for frame N+1 only once every packet of frame
N has left, so at that moment the last timestamp sent is frame N's, and
origin = that timestamp - frame N's pts. After the very first frame there is
only one frame it can be, so an answer to frame 0 is matched as soon as one of
its packets is out.

The attributes are private; like the client's hooks this refuses to run
against any aiortc but the supported one.
"""

from __future__ import annotations

from typing import Optional

from aiortc import RTCRtpSender

from protocol.aiortc_internals import (
    IncompatibleAiortcError,
    SenderPrivate,
    check_aiortc_version,
    check_problems,
    code_names,
)
from protocol.wire_clock import RTP_TIMESTAMP_MODULUS


def check_sender_shape() -> None:
    """Raise ``IncompatibleAiortcError`` if the sender no longer works as described above."""
    check_aiortc_version()
    problems = []
    run_rtp = code_names(getattr(RTCRtpSender, SenderPrivate.RUN_RTP, None))
    for name in (SenderPrivate.RTP_TIMESTAMP, SenderPrivate.PACKET_COUNT, "random32"):
        if name not in run_rtp:
            problems.append(f"RTCRtpSender._run_rtp no longer uses {name}")
    if "recv" not in code_names(getattr(RTCRtpSender, SenderPrivate.NEXT_ENCODED_FRAME, None)):
        problems.append("RTCRtpSender._next_encoded_frame no longer calls the track's recv()")
    check_problems("RTCRtpSender", problems)


class SenderTimestampOrigin:
    """Learns one sender's RTP timestamp origin from the frames its track hands over."""

    def __init__(self) -> None:
        self._sender: Optional[RTCRtpSender] = None
        self._frames_handed = 0
        self._last_pts: Optional[int] = None
        self._origin: Optional[int] = None

    def attach(self, sender: RTCRtpSender) -> None:
        """Watch ``sender``, the one that sends the track whose frames are reported."""
        check_sender_shape()
        for name in (SenderPrivate.RTP_TIMESTAMP, SenderPrivate.PACKET_COUNT):
            if not hasattr(sender, name):
                raise IncompatibleAiortcError(f"{type(sender).__name__} has no {name}")
        self._sender = sender

    def frame_handed(self, pts: int) -> None:
        """The track is handing the frame stamped ``pts`` to the sender (inside its recv())."""
        self._learn()  # every packet of the previous frame has left by now
        self._frames_handed += 1
        self._last_pts = pts

    @property
    def origin(self) -> Optional[int]:
        """The RTP timestamp of pts 0, or None until a packet has been sent."""
        if self._origin is None and self._frames_handed == 1:
            self._learn()  # a packet on the wire can only be the first frame's
        return self._origin

    def _learn(self) -> None:
        sender = self._sender
        if self._origin is not None or sender is None or self._last_pts is None:
            return
        if getattr(sender, SenderPrivate.PACKET_COUNT) == 0:
            return
        last_timestamp: int = getattr(sender, SenderPrivate.RTP_TIMESTAMP)
        self._origin = (last_timestamp - self._last_pts) % RTP_TIMESTAMP_MODULUS
