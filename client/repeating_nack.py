"""NACKs that are repeated while a packet is still missing.

aiortc's ``NackGenerator`` reports a missing packet once, when the gap is
first seen; the receiver sends a NACK only when ``add()`` finds a *new* gap.
If the retransmission is lost too, the packet is asked for again only with
the next, unrelated loss, which at 5 % loss and one packet per frame can be
seconds away, and every frame behind the hole waits for it.
``RepeatingNackGenerator`` also reports the outstanding gaps every
``interval`` seconds, so a lost retransmission costs about one interval.

Like ``fast_jitter_buffer`` it swaps a private part of aiortc's receiver and
is tied to the same aiortc version.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from aiortc import RTCRtpReceiver
from aiortc.rtcrtpreceiver import NackGenerator
from aiortc.rtp import RtpPacket

from protocol.aiortc_internals import IncompatibleAiortcError, check_aiortc_version, code_names

#: Long enough for a retransmission to arrive on any sane path, short enough
#: that a lost one costs a few frames, not seconds.
REPEAT_INTERVAL_S = 0.1

_RECEIVER_NACK_ATTRIBUTE = "_RTCRtpReceiver__nack_generator"


class RepeatingNackGenerator(NackGenerator):
    def __init__(
        self, interval: float = REPEAT_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._last_report: Optional[float] = None

    def add(self, packet: RtpPacket) -> bool:
        """True when the receiver should send a NACK for ``missing`` now."""
        new_gap = super().add(packet)
        if not self.missing:
            return False
        now = self._clock()
        due = self._last_report is None or now - self._last_report >= self._interval
        if new_gap or due:
            self._last_report = now
            return True
        return False


def install_repeating_nack(receiver: RTCRtpReceiver) -> None:
    """Give a video ``receiver`` a ``RepeatingNackGenerator``; idempotent.

    :raises IncompatibleAiortcError: aiortc is not the supported version, or
        the receiver no longer keeps or consults its NACK generator as expected.
    """
    check_aiortc_version()
    current = getattr(receiver, _RECEIVER_NACK_ATTRIBUTE, None)
    if isinstance(current, RepeatingNackGenerator):
        return
    names = code_names(getattr(RTCRtpReceiver, "_handle_rtp_packet", None))
    if type(current) is not NackGenerator or _RECEIVER_NACK_ATTRIBUTE not in names:
        raise IncompatibleAiortcError(
            f"RTCRtpReceiver no longer keeps a NackGenerator in {_RECEIVER_NACK_ATTRIBUTE}"
        )
    if current.max_seq is not None:
        raise RuntimeError("install_repeating_nack must run before RTP arrives")
    setattr(receiver, _RECEIVER_NACK_ATTRIBUTE, RepeatingNackGenerator())
