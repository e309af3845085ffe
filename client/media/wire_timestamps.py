"""The RTP timestamp each decoded frame travelled with, read back from aiortc's receiver.

aiortc's receiver hands frames over with ``pts`` = RTP timestamp minus the
first timestamp it saw: its ``TimestampMapper``'s origin. If the first
packets of a session are lost, that origin is a later frame's and every pts
is early for the whole session. Adding the origin back gives the timestamp as
it was on the wire, which the server matches whatever was lost (see
``protocol.coordinates``).

The origin is a private attribute of a private object, so, like the fast
jitter buffer, this refuses to run against any aiortc but the supported one.
"""

from __future__ import annotations

from typing import Optional

from aiortc import RTCRtpReceiver
from aiortc.rtcrtpreceiver import TimestampMapper

from protocol.aiortc_internals import (
    IncompatibleAiortcError,
    OtherPrivate,
    ReceiverPrivate,
    check_aiortc_version,
    code_names,
)
from protocol.wire_clock import RTP_TIMESTAMP_MODULUS

_ORIGIN = OtherPrivate.TIMESTAMP_MAPPER_ORIGIN


def check_wire_timestamps_hook() -> None:
    """Raise ``IncompatibleAiortcError`` unless the receiver maps timestamps as described."""
    check_aiortc_version()
    if ReceiverPrivate.TIMESTAMP_MAPPER not in code_names(RTCRtpReceiver.__init__):
        raise IncompatibleAiortcError(
            f"RTCRtpReceiver no longer keeps a {ReceiverPrivate.TIMESTAMP_MAPPER}"
        )
    if _ORIGIN not in code_names(TimestampMapper.map):
        raise IncompatibleAiortcError(f"TimestampMapper.map no longer subtracts {_ORIGIN}")


class WireTimestamps:
    """Maps a pts the receiver produced back to its frame's RTP timestamp."""

    def __init__(self, receiver: RTCRtpReceiver) -> None:
        check_wire_timestamps_hook()
        mapper = getattr(receiver, ReceiverPrivate.TIMESTAMP_MAPPER, None)
        if not isinstance(mapper, TimestampMapper) or not hasattr(mapper, _ORIGIN):
            raise IncompatibleAiortcError(
                f"{type(receiver).__name__} has no TimestampMapper with an {_ORIGIN} "
                f"in {ReceiverPrivate.TIMESTAMP_MAPPER}"
            )
        self._mapper = mapper

    def rtp_timestamp(self, pts: int) -> Optional[int]:
        """The wire timestamp of the frame the receiver stamped ``pts``; None before any frame."""
        origin: Optional[int] = getattr(self._mapper, _ORIGIN)
        if origin is None:
            return None
        # After a wrap of the 32-bit clock the mapper lowers its origin by
        # 2**32; the modulo undoes that.
        return (pts + origin) % RTP_TIMESTAMP_MODULUS
