"""The message a client sends on the ``coordinates`` data channel.

``{"rtp_timestamp": int, "pts": int, "x": float | null, "y": float | null}``:
the frame the answer is about, and the ball's centre in that frame's pixel
coordinates (pixel centres at integers, origin top-left). ``x`` and ``y`` are
both null when no ball was found. An answer names its frame by either key or
by both; with both, ``rtp_timestamp`` wins.

- ``rtp_timestamp`` (uint32) is the frame's RTP timestamp exactly as it
  travelled on the wire, the random origin of the server's sender included.
  Every WebRTC stack can read it: a browser gets it as ``rtpTimestamp`` in
  ``requestVideoFrameCallback``'s metadata. The server subtracts its own
  sender's origin, so losing the first packets changes nothing.
- ``pts`` is what aiortc's receiver makes of it: the RTP timestamp minus the
  first one the receiver saw. The server stamps frame ``n`` with
  ``round(n * 90000 / fps)`` on the 90 kHz clock, starting at 0, so the
  client reads the same numbers back, give or take one tick (VP8 sometimes
  yields 2999 for 3000), *as long as the first frame arrived*. If the first
  packets are lost, every pts is early by the frames lost, for the whole
  session. It stays accepted for clients (and servers) that only know it.

The server matches either to the nearest frame it sent, within one tick.

The server talks back on the same channel with one small message, about once
a second while answers arrive:

``{"type": "latency", "p50_ms": float, "p95_ms": float, "answers": int}``

the median and 95th percentile of the latency (frame produced to answer
received, on the server's clock) over the ``answers`` answered in the last
second. A predictive tracker uses it to aim where the ball will be when its
answer lands. A client must ignore every server message it does not know
(``decode_feedback`` returns None for them): a client that never reads the
channel, like the first clients and the browser's ``/track`` page, is one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Optional, TypeGuard, Union

from protocol.wire_clock import RTP_TIMESTAMP_MODULUS

#: The channel label the server creates and the client answers on.
CHANNEL_LABEL = "coordinates"

#: A valid message is under 120 bytes; anything longer is rejected unparsed.
MAX_MESSAGE_BYTES = 256

_PTS_LIMIT = 1 << 63

#: The keys that name the frame; an answer has at least one of them.
FRAME_KEYS = frozenset({"rtp_timestamp", "pts"})

#: No frame is a million pixels across; a larger coordinate is garbage and
#: would swamp the session's mean error.
COORDINATE_LIMIT = 1e6


#: ``"type"`` of the server's latency message.
LATENCY_MESSAGE = "latency"


class InvalidReport(ValueError):
    """A data channel message that is not a valid coordinates report."""


@dataclass(frozen=True)
class CoordinateReport:
    pts: Optional[int]
    x: Optional[float]
    y: Optional[float]
    rtp_timestamp: Optional[int] = None

    def __post_init__(self) -> None:
        if self.pts is None and self.rtp_timestamp is None:
            raise ValueError("a report names its frame by pts, rtp_timestamp or both")

    @property
    def found(self) -> bool:
        return self.x is not None


def encode_report(report: CoordinateReport) -> str:
    body: dict[str, Any] = {}
    if report.rtp_timestamp is not None:
        body["rtp_timestamp"] = report.rtp_timestamp
    if report.pts is not None:
        body["pts"] = report.pts
    body.update(x=report.x, y=report.y)
    return json.dumps(body, allow_nan=False)


def decode_report(message: Union[str, bytes]) -> CoordinateReport:
    """Parse and validate one message; raises ``InvalidReport``."""
    if len(message) > MAX_MESSAGE_BYTES:
        raise InvalidReport(f"message longer than {MAX_MESSAGE_BYTES} bytes")
    try:
        body = json.loads(message, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidReport(f"not JSON: {exc}") from None
    if (
        not isinstance(body, dict)
        or not {"x", "y"} < set(body)
        or not set(body) - {"x", "y"} <= FRAME_KEYS
    ):
        raise InvalidReport("expected an object with x, y and rtp_timestamp, pts or both")
    pts = body.get("pts")
    if "pts" in body and not (_is_int(pts) and 0 <= pts < _PTS_LIMIT):
        raise InvalidReport(f"pts must be a non-negative integer, got {pts!r}")
    rtp_timestamp = body.get("rtp_timestamp")
    if "rtp_timestamp" in body and not (
        _is_int(rtp_timestamp) and 0 <= rtp_timestamp < RTP_TIMESTAMP_MODULUS
    ):
        raise InvalidReport(f"rtp_timestamp must be a uint32, got {rtp_timestamp!r}")
    x, y = body["x"], body["y"]
    if x is None and y is None:
        return CoordinateReport(pts, None, None, rtp_timestamp)
    if not (_is_finite_number(x) and _is_finite_number(y)):
        raise InvalidReport("x and y must both be finite coordinates or both null")
    return CoordinateReport(pts, float(x), float(y), rtp_timestamp)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    if not (_is_int(value) or isinstance(value, float)):
        return False
    try:
        return math.isfinite(value) and abs(value) <= COORDINATE_LIMIT
    except OverflowError:  # an int too large for a float
        return False


@dataclass(frozen=True)
class LatencyFeedback:
    """The session's recent latency, as the server measured it."""

    p50_ms: float
    p95_ms: float
    answers: int


def encode_feedback(feedback: LatencyFeedback) -> str:
    return json.dumps(
        {
            "type": LATENCY_MESSAGE,
            "p50_ms": round(feedback.p50_ms, 3),
            "p95_ms": round(feedback.p95_ms, 3),
            "answers": feedback.answers,
        },
        allow_nan=False,
    )


def decode_feedback(message: Union[str, bytes]) -> Optional[LatencyFeedback]:
    """The latency message, or None for anything else: unknown messages are ignored."""
    if len(message) > MAX_MESSAGE_BYTES:
        return None
    try:
        body = json.loads(message, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(body, dict) or body.get("type") != LATENCY_MESSAGE:
        return None
    p50, p95, answers = body.get("p50_ms"), body.get("p95_ms"), body.get("answers")
    quantiles = []
    for value in (p50, p95):
        if not _is_finite_number(value) or not isinstance(value, (int, float)) or value < 0:
            return None
        quantiles.append(float(value))
    if not isinstance(answers, int) or isinstance(answers, bool) or answers < 0:
        return None
    return LatencyFeedback(quantiles[0], quantiles[1], answers)
