"""Congestion control: fit the video to the link, from the answers alone.

Every frame the server sends comes back as an answer on the data channel, so
the server sees, per frame, when it left and when the client had it: a
one-way-plus-processing delay at 30 Hz, far richer than RTCP's receiver
reports (one a second) or aiortc's REMB (its estimator needs 60 deltas to
start, and aiortc's VP8 encoder clamps it to 250 kbit/s anyway, above the
links this is for). ``CongestionController`` is the control law, pure: it is
told what was sent and answered, with the time passed in (``now``, the last
argument, as everywhere in the project), and it says which
encoder bitrate and frame rate to use and whether the next frame may go.

The law, and why:

- **Base latency.** The smallest latency of the last ``base_window_s`` is the
  path without a queue (5 ms on loopback, 55 ms behind a 50 ms delay). A
  frame answered more than ``late_after_s`` above it waited somewhere.
- **Capacity samples.** Each late answer gives one. If its frame was sent
  before the previous answer arrived, it waited while that frame left the
  bottleneck, so the gap between the two answers is its own service time:
  capacity = its bytes / the gap. Otherwise its queueing delay was spent
  behind the bytes in flight when it was sent: capacity = (those bytes and
  its own) / its delay.
- **A queue, not a hiccup.** A narrow link paces the answers of queued frames
  out one service time apart; a busy CPU or a retransmission lets the
  waiting frames go together. So an answer arriving within ``min_gap_s`` of
  the previous one ends the episode (the run of late answers), and only
  ``confirm_samples`` late answers in a row confirm a queue.
- **Decrease** (multiplicative, like libwebrtc's GCC): on a confirmed queue
  the target becomes ``decrease_factor`` x the capacity: the median of the
  last three samples, or the rate the link delivered in the last second if
  lower (single samples scatter while tbf's token bucket hovers near empty;
  what gets through while a queue stands is the link's rate). Once per
  episode: only frames produced after the last decrease can cause the next.
- **Window.** While an episode runs, and while a capacity is known, a frame
  is held back (skipped at the source) if the bytes in flight would exceed
  what the link drains in the base latency plus ``window_s``: the queue the
  start of a session or a probe built is drained, not waited behind, and a
  link far narrower than the stream does not fill up while the confirmation
  travels. One frame in flight is always allowed, so on a link that keeps up
  the window never binds, and a frame unanswered for ``presumed_lost_s`` no
  longer counts (a lost answer must not stall the stream).
- **Increase.** After ``hold_s`` without a decrease, a late answer or a
  frame held back, the target grows by ``increase_factor`` every
  ``probe_interval_s``, but never beyond ``probe_ceiling`` x the rate
  actually sent (an encoder that does not use its budget gets no more). When
  even that does not bind at the full frame rate, the controller lets go:
  back to the encoder's defaults and no window, as if nothing had happened.
  A probe above the link shows as late answers once tbf's bucket is empty,
  and the decrease takes the target back below it.
- **Bitrate, then frame rate.** A target rate maps to settings
  (``settings_for_rate``): the highest frame rate whose frames still get
  ``min_frame_bytes`` of payload once each frame's fixed overhead is paid,
  and the bitrate left for that frame rate, rounded down to a geometric grid.
  The overhead is real: each frame costs an RTP packet's headers (76 bytes
  with SRTP, UDP, IP and Ethernet) and its answer's SCTP SACK coming back
  the same way as the video (110 bytes), 45 kbit/s at 30 fps, as much as a
  low-bitrate ball. Measured for this content: VP8 gives 536 bytes a frame at
  aiortc's default, 150-250 bytes at its lowest, with detection error below
  0.05 px at every setting, so frames are worth more than bits: bitrate goes
  first. The grid's steps are 25 %: aiortc rebuilds its VP8 encoder (a
  keyframe, about 700 bytes here) on any change above 10 %, so the bitrate
  changes seldom and in steps that matter.

All rates are estimated wire bits per second (payload plus that overhead).
"""

from __future__ import annotations

import math
import statistics
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Optional

#: Per RTP packet: RTP header 12 + header extensions 12 (abs-send-time, mid)
#: + SRTP tag 10 + UDP 8 + IPv4 20 + Ethernet 14 bytes.
RTP_PACKET_OVERHEAD_BYTES = 76
#: Per answer: the SCTP SACK the server returns for it, inside DTLS, UDP,
#: IPv4 and Ethernet. aiortc acknowledges every packet; measured 96 bytes at
#: the IP layer.
ANSWER_ACK_BYTES = 110

#: aiortc's VP8 default, which the controller leaves alone while unconstrained.
DEFAULT_BITRATE_BPS = 500_000
#: The lowest bitrate the grid offers. Below about 40 kbit/s at 30 fps
#: libvpx's quantiser limit, not the bitrate, sets the frame size.
MIN_BITRATE_BPS = 16_000
BITRATE_STEP = 1.25

#: Frame intervals (send every k-th frame of the nominal timeline) to choose from.
FRAME_INTERVALS = (1, 2, 3, 5, 6)


def bitrate_grid(low: int = MIN_BITRATE_BPS, high: int = DEFAULT_BITRATE_BPS) -> tuple[int, ...]:
    """Geometric steps of ``BITRATE_STEP`` from ``low`` up to, not including, ``high``."""
    steps = []
    value = float(low)
    while value < high:
        steps.append(int(round(value, -3)))
        value *= BITRATE_STEP
    return tuple(steps)


BITRATE_GRID = bitrate_grid()


@dataclass(frozen=True)
class EncodingSettings:
    """What the encoder and the pacer do."""

    #: None: the encoder's own default (unconstrained).
    bitrate_bps: Optional[int]
    #: Send every ``frame_interval``-th frame of the nominal timeline.
    frame_interval: int = 1

    def fps(self, nominal_fps: float) -> float:
        return nominal_fps / self.frame_interval


UNCONSTRAINED = EncodingSettings(None, 1)


def frame_overhead_bits(packets: int = 1) -> int:
    """Wire bits a frame costs besides its payload."""
    return (packets * RTP_PACKET_OVERHEAD_BYTES + ANSWER_ACK_BYTES) * 8


def settings_for_rate(
    rate_bps: float, nominal_fps: float, min_frame_bytes: int = 200
) -> EncodingSettings:
    """The settings that keep the estimated wire rate within ``rate_bps``.

    The highest frame rate whose frames get at least ``min_frame_bytes`` of
    payload, with the bitrate left over for it; the lowest frame rate at the
    lowest bitrate when nothing fits.
    """
    for interval in FRAME_INTERVALS:
        fps = nominal_fps / interval
        payload_bps = rate_bps - fps * frame_overhead_bits()
        if payload_bps / fps < min_frame_bytes * 8:
            continue
        if interval == 1 and payload_bps >= DEFAULT_BITRATE_BPS:
            return UNCONSTRAINED
        below = [step for step in BITRATE_GRID if step <= payload_bps]
        return EncodingSettings(below[-1] if below else MIN_BITRATE_BPS, interval)
    return EncodingSettings(MIN_BITRATE_BPS, FRAME_INTERVALS[-1])


@dataclass(frozen=True)
class CongestionConfig:
    """The control law's constants; see the module docstring for each one's role."""

    #: Latency above the base that marks a frame as queued.
    late_after_s: float = 0.025
    #: How long the smallest latency counts as the base.
    base_window_s: float = 10.0
    #: Two answers closer than this came out together; their gap says nothing.
    min_gap_s: float = 0.005
    #: The target after a decrease, as a share of the measured capacity.
    decrease_factor: float = 0.85
    #: Queueing the window allows on top of the base latency.
    window_s: float = 0.06
    #: Late answers in a row (not in a burst) that confirm a queue.
    confirm_samples: int = 3
    #: Quiet time (no decrease, late answer or frame held back) before an increase.
    hold_s: float = 2.0
    probe_interval_s: float = 2.0
    increase_factor: float = 1.2
    #: The target never exceeds this many times the rate actually sent.
    probe_ceiling: float = 1.5
    #: A frame unanswered this long is lost, whatever else happened.
    loss_timeout_s: float = 1.0
    #: The window stops counting a frame unanswered this long: a queue the
    #: window allows drains well within it.
    presumed_lost_s: float = 0.3
    #: A frame unanswered after a later one's answer is this old is lost.
    loss_reorder_s: float = 0.03
    #: Window over which the sent rate is measured.
    rate_window_s: float = 1.0
    min_frame_bytes: int = 200


@dataclass
class _Flight:
    """One frame sent: its cost on the wire and, once known, its answer."""

    produced_at: float
    #: Bytes in flight when it was sent, not counting itself.
    ahead_bytes: int
    wire_bytes: int
    answered_at: Optional[float] = None


@dataclass(frozen=True)
class ControllerState:
    """A snapshot for logs, the per-second record and tests."""

    target_bps: Optional[float]
    capacity_bps: Optional[float]
    settings: EncodingSettings
    sent_bps: float
    inflight_bytes: int
    base_latency_s: Optional[float]


class CongestionController:
    """The control law described in the module docstring; pure, time passed in.

    Per frame: ``admit(now)`` (may the frame due now go?), then ``frame_sent``
    if it went, ``frame_encoded`` once the encoder knows its size, and
    ``frame_answered`` when its answer arrives. ``settings`` is what the
    encoder and the pacer should use from now on.
    """

    def __init__(self, nominal_fps: float, config: CongestionConfig = CongestionConfig()) -> None:
        self._fps = nominal_fps
        self._config = config
        #: Frames in flight or answered but not yet forgotten, oldest first.
        self._flights: OrderedDict[int, _Flight] = OrderedDict()
        #: The frames sent, and those answered, in the last ``rate_window_s``.
        self._recent: deque[_Flight] = deque()
        self._recent_answered: deque[_Flight] = deque()
        self._first_sent_at: Optional[float] = None
        self._inflight_bytes = 0
        #: Wire size assumed for a frame until the encoder reports its own.
        self._typical_frame_bytes = 0
        #: (time, latency) with increasing latencies: the running minimum.
        self._base: deque[tuple[float, float]] = deque()
        self._last_answer_at: Optional[float] = None
        self._newest_answered: Optional[tuple[int, float]] = None  # (index, arrival)
        self._target: Optional[float] = None
        self._capacity: Optional[float] = None
        #: Capacity samples of the current run of late answers (an episode).
        self._episode: list[float] = []
        self._last_decrease_at = -math.inf
        self._last_change_at = -math.inf
        #: The last late answer and the last frame held back: probing waits for quiet.
        self._last_late_at = -math.inf
        self._last_held_at = -math.inf
        self.settings: EncodingSettings = UNCONSTRAINED
        self.decreases = 0
        self.increases = 0
        self.frames_held = 0
        self.frames_lost = 0
        #: The last capacity sample (bit/s) and the latency of its frame (s).
        self.last_sample: Optional[tuple[float, float]] = None

    # ----------------------------------------------------------------- events
    def frame_sent(self, index: int, now: float) -> None:
        """Frame ``index`` was handed to the encoder at ``now``."""
        self._expire(now)
        flight = _Flight(now, self._inflight_bytes, self._typical_frame_bytes)
        self._flights[index] = flight
        self._recent.append(flight)
        self._inflight_bytes += flight.wire_bytes
        if self._first_sent_at is None:
            self._first_sent_at = now

    def frame_encoded(self, index: int, payload_bytes: int, packets: int) -> None:
        """The encoder made ``packets`` RTP packets of ``payload_bytes`` from frame ``index``."""
        wire = payload_bytes + packets * RTP_PACKET_OVERHEAD_BYTES + ANSWER_ACK_BYTES
        self._typical_frame_bytes = wire
        flight = self._flights.get(index)
        if flight is not None:
            if flight.answered_at is None:
                self._inflight_bytes += wire - flight.wire_bytes
            flight.wire_bytes = wire

    def frame_answered(self, index: int, now: float) -> None:
        """The answer for frame ``index`` arrived at ``now``."""
        flight = self._flights.get(index)
        if flight is None or flight.answered_at is not None:
            return
        flight.answered_at = now
        self._inflight_bytes -= flight.wire_bytes
        self._recent_answered.append(flight)
        previous_at, self._last_answer_at = self._last_answer_at, now
        if self._newest_answered is None or index > self._newest_answered[0]:
            self._newest_answered = (index, now)
        latency = now - flight.produced_at
        self._update_base(latency, now)
        delay = latency - self._base[0][1]
        if delay <= self._config.late_after_s:
            self._episode.clear()  # no queue in the way of this one
            return
        self._last_late_at = now
        gap = math.inf if previous_at is None else now - previous_at
        if gap < self._config.min_gap_s:
            # Out together with the previous answer: a stall or a
            # retransmission let them go at once, not a narrow link.
            self._episode.clear()
            return
        if previous_at is not None and flight.produced_at < previous_at:
            # It waited while the previous frame left: the gap is its
            # service time at the bottleneck.
            capacity = flight.wire_bytes * 8 / gap
        else:
            # Its own queueing delay, for the bytes it found ahead of it.
            capacity = (flight.ahead_bytes + flight.wire_bytes) * 8 / delay
        self.last_sample = (capacity, latency)
        self._sample(capacity, flight, now)

    # ----------------------------------------------------------------- decisions
    def admit(self, now: float) -> bool:
        """Whether the frame due at ``now`` may be sent; updates ``settings``."""
        self._expire(now)
        self._maybe_increase(now)
        window = self._window_bytes(now)
        if window is None:
            return True
        # A frame unanswered this long is not in the queue the window is
        # about: it was lost (its answer, or the frame itself). Holding new
        # frames back until it is declared lost would stall the stream.
        recent = now - self._config.presumed_lost_s
        inflight = sum(
            f.wire_bytes
            for f in self._flights.values()
            if f.answered_at is None and f.produced_at > recent
        )
        if inflight <= 0 or inflight + self._typical_frame_bytes <= window:
            return True
        self.frames_held += 1
        self._last_held_at = now
        return False

    def state(self, now: float) -> ControllerState:
        return ControllerState(
            target_bps=self._target,
            capacity_bps=self._capacity,
            settings=self.settings,
            sent_bps=self.sent_rate(now),
            inflight_bytes=self._inflight_bytes,
            base_latency_s=self._base[0][1] if self._base else None,
        )

    def sent_rate(self, now: float) -> float:
        """Estimated wire bits per second sent over the last ``rate_window_s``."""
        window = self._config.rate_window_s
        while self._recent and self._recent[0].produced_at <= now - window:
            self._recent.popleft()
        return self._rate(self._recent, now)

    def delivered_rate(self, now: float) -> float:
        """Estimated wire bits per second of the frames answered in the last ``rate_window_s``."""
        window = self._config.rate_window_s
        answered = self._recent_answered
        while answered and (answered[0].answered_at or 0.0) <= now - window:
            answered.popleft()
        return self._rate(answered, now)

    def _rate(self, flights: deque[_Flight], now: float) -> float:
        if self._first_sent_at is None:
            return 0.0
        # A session younger than the window has sent over its age only.
        span = min(self._config.rate_window_s, now - self._first_sent_at + 1.0 / self._fps)
        return sum(flight.wire_bytes for flight in flights) * 8 / span

    # ----------------------------------------------------------------- internals
    def _sample(self, capacity: float, flight: _Flight, now: float) -> None:
        config = self._config
        self._episode.append(capacity)
        if len(self._episode) < config.confirm_samples:
            return  # a late answer or two may be a hiccup; they only open the window
        # A queue, confirmed. Single samples scatter when the link's bucket
        # hovers near empty, but what got through in the last second is what
        # the link carries while a queue stands: the lower of the two.
        estimate = min(statistics.median(self._episode[-3:]), self.delivered_rate(now))
        self._capacity = estimate
        target = config.decrease_factor * estimate
        # One decrease per episode: only frames sent after the last one can
        # show whether it was enough.
        if flight.produced_at > self._last_decrease_at and (
            self._target is None or target < self._target
        ):
            self._set_target(target, now)
            self._last_decrease_at = now
            self.decreases += 1

    def _maybe_increase(self, now: float) -> None:
        config = self._config
        if self._target is None or self._episode:
            return
        # Probe only from a quiet link: no decrease, no late answer and no
        # frame held back for hold_s (a standing queue is no reason to send more).
        last_trouble = max(self._last_decrease_at, self._last_late_at, self._last_held_at)
        if now - last_trouble < config.hold_s:
            return
        if now - self._last_change_at < config.probe_interval_s:
            return
        ceiling = config.probe_ceiling * self.sent_rate(now)
        if self._target >= ceiling and self.settings.frame_interval == 1:
            # The encoder does not use what it is given: the link no longer binds.
            self._release(now)
            return
        target = min(self._target * config.increase_factor, max(self._target, ceiling))
        if target > self._target:
            self._set_target(target, now)
            self.increases += 1

    def _set_target(self, target: float, now: float) -> None:
        self._last_change_at = now
        settings = settings_for_rate(target, self._fps, self._config.min_frame_bytes)
        if settings == UNCONSTRAINED:
            self._release(now)
            return
        self._target = target
        self.settings = settings

    def _release(self, now: float) -> None:
        """Back to the encoder's defaults and no window: the link does not bind."""
        self._target = None
        self._capacity = None
        self._last_change_at = now
        self.settings = UNCONSTRAINED

    def _window_bytes(self, now: float) -> Optional[float]:
        if self._episode:
            # A queue is building: even before it is confirmed, send no more
            # than the link seems to drain.
            capacity: Optional[float] = statistics.median(self._episode[-3:])
        elif self._capacity is not None and self._target is not None:
            # Probing up: let the window grow with the target.
            capacity = max(self._capacity, self._target)
        else:
            capacity = self._capacity
        if capacity is None:
            return None
        base = self._base[0][1] if self._base else 0.0
        return capacity * (base + self._config.window_s) / 8

    def _update_base(self, latency: float, now: float) -> None:
        while self._base and self._base[-1][1] >= latency:
            self._base.pop()
        self._base.append((now, latency))
        while self._base[0][0] < now - self._config.base_window_s:
            self._base.popleft()

    def _expire(self, now: float) -> None:
        """Forget answered frames; declare lost those that will never be answered."""
        config = self._config
        newest = self._newest_answered
        while self._flights:
            index, flight = next(iter(self._flights.items()))
            if flight.answered_at is None:
                overtaken = (
                    newest is not None
                    and newest[0] > index
                    and now - newest[1] >= config.loss_reorder_s
                )
                if not overtaken and now - flight.produced_at < config.loss_timeout_s:
                    break
                self._inflight_bytes -= flight.wire_bytes
                self.frames_lost += 1
            self._flights.popitem(last=False)
