"""The message a client sends on the ``coordinates`` data channel.

``{"pts": int, "x": float | null, "y": float | null}``: the pts of the frame
as the client received it, and the ball's centre in that frame's pixel
coordinates (pixel centres at integers, origin top-left). ``x`` and ``y`` are
both null when no ball was found.

The pts convention: the server stamps frame ``n`` with
``round(n * 90000 / fps)`` on the 90 kHz RTP clock, starting at 0. aiortc's
receiver subtracts the first RTP timestamp it sees, so the client reads the
same numbers back, give or take one tick (VP8 sometimes yields 2999 for 3000).
The server therefore matches a reported pts to the nearest frame it sent.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Optional, Union

#: The channel label the server creates and the client answers on.
CHANNEL_LABEL = "coordinates"

#: A valid message is under 80 bytes; anything longer is rejected unparsed.
MAX_MESSAGE_BYTES = 256

_PTS_LIMIT = 1 << 63

#: No frame is a million pixels across; a larger coordinate is garbage and
#: would swamp the session's mean error.
COORDINATE_LIMIT = 1e6


class InvalidReport(ValueError):
    """A data channel message that is not a valid coordinates report."""


@dataclass(frozen=True)
class CoordinateReport:
    pts: int
    x: Optional[float]
    y: Optional[float]

    @property
    def found(self) -> bool:
        return self.x is not None


def encode_report(report: CoordinateReport) -> str:
    return json.dumps({"pts": report.pts, "x": report.x, "y": report.y}, allow_nan=False)


def decode_report(message: Union[str, bytes]) -> CoordinateReport:
    """Parse and validate one message; raises ``InvalidReport``."""
    if len(message) > MAX_MESSAGE_BYTES:
        raise InvalidReport(f"message longer than {MAX_MESSAGE_BYTES} bytes")
    try:
        body = json.loads(message, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidReport(f"not JSON: {exc}") from None
    if not isinstance(body, dict) or set(body) != {"pts", "x", "y"}:
        raise InvalidReport("expected an object with exactly pts, x and y")
    pts, x, y = body["pts"], body["x"], body["y"]
    if not _is_int(pts) or not 0 <= pts < _PTS_LIMIT:
        raise InvalidReport(f"pts must be a non-negative integer, got {pts!r}")
    if x is None and y is None:
        return CoordinateReport(pts, None, None)
    if not (_is_finite_number(x) and _is_finite_number(y)):
        raise InvalidReport("x and y must both be finite coordinates or both null")
    return CoordinateReport(pts, float(x), float(y))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    if not (_is_int(value) or isinstance(value, float)):
        return False
    try:
        return math.isfinite(value) and abs(value) <= COORDINATE_LIMIT
    except OverflowError:  # an int too large for a float
        return False
