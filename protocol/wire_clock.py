"""The clock frames are stamped with on the wire, which both sides must share.

RTP video runs a 90 kHz clock (RFC 3551, section 5); a pts and an RTP
timestamp count its ticks. RTP timestamps are 32 bits wide and wrap after
13 hours at that rate; a pts does not wrap (see ``protocol.coordinates``).
"""

from __future__ import annotations

import fractions
from typing import Final

#: Ticks per second of every pts and RTP timestamp.
VIDEO_CLOCK_RATE: Final = 90_000
#: The time base of a pts, as PyAV and aiortc take it.
VIDEO_TIME_BASE: Final = fractions.Fraction(1, VIDEO_CLOCK_RATE)
#: RTP timestamps are modulo this.
RTP_TIMESTAMP_MODULUS: Final = 1 << 32
