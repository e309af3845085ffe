"""NACKs that are repeated while a packet is still missing, within bounds.

aiortc's ``NackGenerator`` reports a missing packet once, when the gap is
first seen; the receiver sends a NACK only when ``add()`` finds a *new* gap.
If the retransmission is lost too, the packet is asked for again only with
the next, unrelated loss, which at 5 % loss and one packet per frame can be
seconds away, and every frame behind the hole waits for it.
``RepeatingNackGenerator`` also reports the outstanding gaps again, so a
lost retransmission costs about one repeat interval: two and a half round
trips, measured from the retransmissions themselves (a packet asked for and
then received), between ``min_interval`` (20 ms) and ``interval`` (100 ms,
also used until a round trip is measured). A retransmission cannot come back
sooner than a round trip, and repeats come with arriving packets, one a
frame here: on a short path a lost retransmission costs a frame or two.

Repeating without limits is what collapses a link narrower than the stream
(measured at 100 kbit/s: 8030 packets dropped by the cap in 20 s, for a
stream of 600 one-packet frames): the cap drops packets, each is asked for
every 100 ms, the retransmissions queue with the new frames and are dropped
in turn. So two bounds:

- ``give_up_after``: a packet missing for longer is no longer asked for. The
  fast jitter buffer gives up on its frame after the same time (it asks for
  a keyframe instead), so a later retransmission would only load the link.
- A retransmission budget: each packet received in order earns
  ``budget_per_packet`` requests, up to ``budget_burst``; a NACK asks for
  the newest missing packets the budget allows. 5 % loss needs about 0.06
  requests a packet.

Like ``fast_jitter_buffer`` it swaps a private part of aiortc's receiver and
is tied to the same aiortc version. The receiver reads ``missing`` right
after ``add()`` returns True and sends a NACK for exactly those packets.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from aiortc import RTCRtpReceiver
from aiortc.rtcrtpreceiver import NackGenerator
from aiortc.rtp import RTP_HISTORY_SIZE, RtpPacket
from aiortc.utils import uint16_add, uint16_gt

from protocol.aiortc_internals import (
    IncompatibleAiortcError,
    ReceiverPrivate,
    check_aiortc_version,
    code_names,
)

#: Long enough for a retransmission to arrive on any sane path, short enough
#: that a lost one costs a few frames, not seconds.
REPEAT_INTERVAL_S = 0.1
#: The shortest repeat interval, however short the round trip.
MIN_REPEAT_INTERVAL_S = 0.02
#: Repeat after this many measured round trips.
REPEAT_ROUND_TRIPS = 2.5
#: Requests each packet received in order earns, and the most saved up.
BUDGET_PER_PACKET = 0.25
BUDGET_BURST = 16.0

logger = logging.getLogger("client.nack")


class RepeatingNackGenerator(NackGenerator):
    """A ``NackGenerator`` whose ``missing`` is what to ask for now.

    :param interval: Ask again for packets still missing after this long (s),
        at most; after ``REPEAT_ROUND_TRIPS`` measured round trips if shorter.
    :param give_up_after: Stop asking for a packet missing this long (s);
        None asks as long as aiortc's history keeps it.
    """

    def __init__(
        self,
        interval: float = REPEAT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        give_up_after: Optional[float] = None,
        budget_per_packet: float = BUDGET_PER_PACKET,
        budget_burst: float = BUDGET_BURST,
        min_interval: float = MIN_REPEAT_INTERVAL_S,
    ) -> None:
        super().__init__()
        self._interval = interval
        self._min_interval = min_interval
        #: Smoothed time from a request to its retransmission (s).
        self.round_trip: Optional[float] = None
        self._requested_at: dict[int, float] = {}
        self._clock = clock
        self._give_up_after = give_up_after
        self._budget_per_packet = budget_per_packet
        self._budget_burst = budget_burst
        self._budget = budget_burst
        self._last_report: Optional[float] = None
        #: Every packet missing, with when its gap was seen.
        self._missing_since: dict[int, float] = {}
        self.packets_requested = 0
        self.packets_given_up = 0
        self.requests_over_budget = 0

    def add(self, packet: RtpPacket) -> bool:
        """True when the receiver should send a NACK for ``missing`` now."""
        now = self._clock()
        sequence_number = packet.sequence_number
        new_gap = False
        if self.max_seq is None:
            self.max_seq = sequence_number
        elif uint16_gt(sequence_number, self.max_seq):
            missed = uint16_add(self.max_seq, 1)
            while uint16_gt(sequence_number, missed):
                self._missing_since[missed] = now
                new_gap = True
                missed = uint16_add(missed, 1)
            self.max_seq = sequence_number
            self._budget = min(self._budget_burst, self._budget + self._budget_per_packet)
        elif self._missing_since.pop(sequence_number, None) is not None:
            asked = self._requested_at.pop(sequence_number, None)
            if asked is not None:
                self._measure_round_trip(now - asked)
        self._forget_old(now)
        self.missing = set()
        if not self._missing_since:
            return False
        due = self._last_report is None or now - self._last_report >= self.repeat_interval
        if not (new_gap or due):
            return False
        # The newest first: their frames can still make it in time.
        newest = self.max_seq
        assert newest is not None  # set by the first packet, before any gap
        wanted = sorted(self._missing_since, key=lambda s: uint16_add(s, -newest), reverse=True)
        allowed = int(self._budget)
        self.requests_over_budget += max(0, len(wanted) - allowed)
        self.missing = set(wanted[:allowed])
        if not self.missing:
            return False
        self._budget -= len(self.missing)
        self.packets_requested += len(self.missing)
        for requested in self.missing:
            # The first request: a retransmission of the first or a later one
            # then makes the sample too long, never too short.
            self._requested_at.setdefault(requested, now)
        self._last_report = now
        return True

    @property
    def repeat_interval(self) -> float:
        if self.round_trip is None:
            return self._interval
        return max(self._min_interval, min(self._interval, REPEAT_ROUND_TRIPS * self.round_trip))

    def _measure_round_trip(self, sample: float) -> None:
        # Smoothed like TCP's SRTT (RFC 6298).
        if self.round_trip is None:
            self.round_trip = sample
        else:
            self.round_trip += (sample - self.round_trip) / 8

    def truncate(self) -> None:
        # aiortc's own add() calls this; ours forgets in _forget_old.
        pass

    def _forget_old(self, now: float) -> None:
        assert self.max_seq is not None
        oldest = uint16_add(self.max_seq, -RTP_HISTORY_SIZE)
        for sequence_number, since in list(self._missing_since.items()):
            beyond_history = uint16_gt(oldest, sequence_number)
            stale = self._give_up_after is not None and now - since > self._give_up_after
            if beyond_history or stale:
                del self._missing_since[sequence_number]
                asked = self._requested_at.pop(sequence_number, None)
                self.packets_given_up += 1
                logger.debug(
                    "gave up on packet %d, missing %.0f ms, first asked for %s",
                    sequence_number,
                    (now - since) * 1000,
                    "never" if asked is None else f"{(now - asked) * 1000:.0f} ms ago",
                )


def check_repeating_nack_hook() -> None:
    """Raise ``IncompatibleAiortcError`` unless the receiver consults its NACK generator
    as the module docstring says."""
    check_aiortc_version()
    names = code_names(getattr(RTCRtpReceiver, ReceiverPrivate.HANDLE_RTP_PACKET, None))
    if not {ReceiverPrivate.NACK_GENERATOR, "missing"} <= set(names):
        raise IncompatibleAiortcError(
            f"RTCRtpReceiver no longer keeps a NackGenerator in {ReceiverPrivate.NACK_GENERATOR} "
            "and sends a NACK for its missing"
        )


def install_repeating_nack(
    receiver: RTCRtpReceiver, give_up_after: Optional[float] = None
) -> RepeatingNackGenerator:
    """Give a video ``receiver`` a ``RepeatingNackGenerator``; idempotent.

    :raises IncompatibleAiortcError: aiortc is not the supported version, or
        the receiver no longer keeps or consults its NACK generator as expected.
    """
    check_repeating_nack_hook()
    current = getattr(receiver, ReceiverPrivate.NACK_GENERATOR, None)
    if isinstance(current, RepeatingNackGenerator):
        return current
    if type(current) is not NackGenerator:
        raise IncompatibleAiortcError(
            f"{type(receiver).__name__} has no NackGenerator in {ReceiverPrivate.NACK_GENERATOR}"
        )
    if current.max_seq is not None:
        raise RuntimeError("install_repeating_nack must run before RTP arrives")
    generator = RepeatingNackGenerator(give_up_after=give_up_after)
    setattr(receiver, ReceiverPrivate.NACK_GENERATOR, generator)
    return generator
