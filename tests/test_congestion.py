"""Tests for server.core.congestion: the control law, pure, with time passed in.

Most tests run the controller against ``TokenBucketLink``, a model of the
``tbf`` qdisc NetworkLab caps links with (a FIFO served at the rate while its
token bucket is empty, the bucket refilling at the rate up to ``burst``, a
queue limit of rate x latency + burst), and an encoder model with the frame
sizes VP8 gave for the ball (measured, see ``FRAME_BYTES``). A simulated
20-30 s session takes a few milliseconds.
"""

from __future__ import annotations

import heapq
import itertools
import random
import statistics
from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest

from server.core.congestion import (
    ANSWER_ACK_BYTES,
    BITRATE_GRID,
    BITRATE_STEP,
    DEFAULT_BITRATE_BPS,
    RTP_PACKET_OVERHEAD_BYTES,
    UNCONSTRAINED,
    CongestionController,
    EncodingSettings,
    frame_overhead_bits,
    settings_for_rate,
)
from server.media.encoder_rate import DEFAULT_BITRATE_BPS as ENCODER_DEFAULT_BITRATE_BPS

FPS = 30.0

#: Measured VP8 payload bytes a frame for the ball at 640x480 (aiortc's
#: options): per frame interval, (at aiortc's 500 kbit/s default, the
#: smallest libvpx makes however low the bitrate).
FRAME_BYTES = {1: (536, 154), 2: (608, 188), 3: (650, 245), 5: (780, 350), 6: (799, 350)}


def payload_bytes(settings: EncodingSettings) -> int:
    """The encoder model: the bitrate's share per frame, within what VP8 makes."""
    largest, smallest = FRAME_BYTES[settings.frame_interval]
    if settings.bitrate_bps is None:
        return largest
    share = settings.bitrate_bps / settings.fps(FPS) / 8
    return int(max(smallest, min(largest, share)))


class TokenBucketLink:
    """Linux tbf on one direction: exit time of each packet, or None when dropped."""

    def __init__(self, rate_bps: Optional[float], burst: int = 16384, latency_s: float = 0.2):
        self.rate_bps = rate_bps
        self._burst = burst
        self._latency_s = latency_s
        self._tokens = float(burst)
        self._tokens_at = 0.0
        self._last_exit = 0.0
        self._queued: list[tuple[float, int]] = []  # (exit time, bytes) still waiting
        self.dropped = 0

    def send(self, now: float, size: int) -> Optional[float]:
        if self.rate_bps is None:
            return now
        rate = self.rate_bps / 8
        self._queued = [(t, b) for t, b in self._queued if t > now]
        if sum(b for _, b in self._queued) + size > rate * self._latency_s + self._burst:
            self.dropped += 1
            return None
        start = max(now, self._last_exit)
        tokens = min(self._burst, self._tokens + (start - self._tokens_at) * rate)
        exit_at = start if tokens >= size else start + (size - tokens) / rate
        tokens = min(self._burst, tokens + (exit_at - start) * rate) - size
        self._tokens, self._tokens_at, self._last_exit = tokens, exit_at, exit_at
        self._queued.append((exit_at, size))
        return exit_at


@dataclass
class Session:
    """What a simulated session did, per frame."""

    sent: list[tuple[float, int, int]] = field(default_factory=list)  # (time, index, wire bytes)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (produced, latency)
    held: int = 0
    settings: list[tuple[float, EncodingSettings]] = field(default_factory=list)

    def latencies_between(self, start: float, end: float) -> list[float]:
        return [lat for produced, lat in self.latencies if start <= produced < end]

    def sent_rate_between(self, start: float, end: float) -> float:
        return sum(b for t, _, b in self.sent if start <= t < end) * 8 / (end - start)


#: An extra delay of the answer to frame ``index`` produced at ``time``: the
#: client's CPU, a retransmission. None: the answer is lost.
AnswerDelay = Callable[[int, float], Optional[float]]


def simulate(
    controller: CongestionController,
    link: Callable[[float], TokenBucketLink],
    seconds: float,
    base_s: float = 0.005,
    extra: AnswerDelay = lambda index, time: 0.0,
) -> Session:
    """Run a session: frames due at n / FPS, answers base_s after they leave the link.

    ``link(time)`` gives the link a frame sent at ``time`` crosses (so the cap
    can change during the session).
    """
    session = Session()
    events: list[tuple[float, int, str, int]] = []
    order = itertools.count()
    for index in range(int(seconds * FPS)):
        heapq.heappush(events, (index / FPS, next(order), "due", index))
    next_due = 0  # as FramePacer: every frame_interval-th frame is handed out
    while events:
        now, _, kind, index = heapq.heappop(events)
        if kind == "answer":
            controller.frame_answered(index, now)
            continue
        if index < next_due:
            continue  # thinned by the frame interval
        next_due = index + controller.settings.frame_interval
        if not controller.admit(now):
            session.held += 1
            continue
        settings = controller.settings
        session.settings.append((now, settings))
        controller.frame_sent(index, now)
        payload = payload_bytes(settings)
        controller.frame_encoded(index, payload, 1)
        wire = payload + RTP_PACKET_OVERHEAD_BYTES + ANSWER_ACK_BYTES
        session.sent.append((now, index, wire))
        left = link(now).send(now, wire)
        delay = extra(index, now)
        if left is None or delay is None:
            continue
        answered = left + base_s + delay
        session.latencies.append((now, answered - now))
        heapq.heappush(events, (answered, next(order), "answer", index))
    return session


def capped(rate_bps: Optional[float]) -> Callable[[float], TokenBucketLink]:
    link = TokenBucketLink(rate_bps)
    return lambda now: link


# ----------------------------------------------------------------- the mapping


def test_the_grid_steps_are_large_enough_to_be_worth_a_keyframe() -> None:
    # aiortc rebuilds its VP8 encoder on a change above 10 %.
    assert BITRATE_STEP >= 1.2
    for low, high in zip(BITRATE_GRID, BITRATE_GRID[1:]):
        assert high / low > 1.15
    assert BITRATE_GRID[-1] < DEFAULT_BITRATE_BPS == ENCODER_DEFAULT_BITRATE_BPS


def test_a_wide_link_leaves_the_encoder_alone() -> None:
    assert settings_for_rate(2e6, FPS) == UNCONSTRAINED
    assert (
        settings_for_rate(DEFAULT_BITRATE_BPS + FPS * frame_overhead_bits(), FPS) == UNCONSTRAINED
    )


def test_bitrate_goes_first_then_the_frame_rate() -> None:
    assert settings_for_rate(150e3, FPS) == EncodingSettings(95_000, 1)
    assert settings_for_rate(100e3, FPS) == EncodingSettings(49_000, 1)
    assert settings_for_rate(85e3, FPS).frame_interval == 2
    assert settings_for_rate(42e3, FPS).frame_interval == 3
    assert settings_for_rate(1e3, FPS) == EncodingSettings(16_000, 6)


@pytest.mark.parametrize("rate", [30e3, 45e3, 60e3, 85e3, 127e3, 170e3, 300e3])
def test_the_settings_fit_the_rate(rate: float) -> None:
    settings = settings_for_rate(rate, FPS)
    assert settings.bitrate_bps is not None
    fps = settings.fps(FPS)
    assert settings.bitrate_bps + fps * frame_overhead_bits() <= rate
    assert settings.bitrate_bps / fps >= 200 * 8  # frames worth sending


def test_more_rate_never_means_fewer_frames_or_bits() -> None:
    previous = settings_for_rate(10e3, FPS)
    for rate in range(10_000, 700_000, 1_000):
        settings = settings_for_rate(rate, FPS)
        assert settings.frame_interval <= previous.frame_interval
        if settings.frame_interval == previous.frame_interval and settings.bitrate_bps:
            assert settings.bitrate_bps >= (previous.bitrate_bps or 0)
        previous = settings


# ----------------------------------------------------------------- narrow links


@pytest.mark.parametrize("cap_kbps", [150, 100, 50])
def test_the_stream_fits_a_narrow_link_and_stays_fast(cap_kbps: int) -> None:
    link = TokenBucketLink(cap_kbps * 1000)
    controller = CongestionController(FPS)
    session = simulate(controller, lambda now: link, seconds=30)
    assert controller.decreases >= 1
    # The last third: no queue (the bound for 150 kbit/s is 60 ms)
    # and nothing lost at the cap.
    late = session.latencies_between(20, 30)
    assert statistics.median(late) < 0.02, statistics.median(late)
    assert max(late) < 0.3
    # tbf's bucket lets a probe above the cap through for a while.
    assert session.sent_rate_between(10, 30) <= cap_kbps * 1000 + 16384 * 8 / 20
    # The start costs a queue, briefly: most frames are answered fast.
    every = [lat for _, lat in session.latencies]
    assert sorted(every)[int(0.9 * len(every))] < 0.1
    assert link.dropped <= 3
    # Frames are worth more than bits: at 100 kbit/s and up at least 15 fps.
    if cap_kbps >= 100:
        assert all(s.frame_interval <= 2 for t, s in session.settings if t > 10)


def test_a_link_wider_than_the_stream_changes_nothing() -> None:
    for rate in (None, 1e6, 200e3):
        controller = CongestionController(FPS)
        session = simulate(controller, capped(rate), seconds=20)
        assert controller.decreases == 0 and session.held == 0
        assert all(s == UNCONSTRAINED for _, s in session.settings)


def test_recovers_when_the_link_widens() -> None:
    narrow, wide = TokenBucketLink(50e3), TokenBucketLink(None)
    controller = CongestionController(FPS)
    session = simulate(controller, lambda now: narrow if now < 15 else wide, seconds=60)
    assert any(s.frame_interval >= 2 for t, s in session.settings if t < 15)
    assert controller.settings == UNCONSTRAINED
    assert max(session.latencies_between(15, 60)) < 0.05


def test_follows_a_link_that_narrows() -> None:
    wide, narrow = TokenBucketLink(None), TokenBucketLink(100e3)
    controller = CongestionController(FPS)
    session = simulate(controller, lambda now: wide if now < 10 else narrow, seconds=40)
    assert all(s == UNCONSTRAINED for t, s in session.settings if t < 10)
    assert statistics.median(session.latencies_between(30, 40)) < 0.02
    assert session.sent_rate_between(20, 40) <= 100e3 + 16384 * 8 / 20


# ----------------------------------------------------------------- not a narrow link


def test_a_stalled_client_is_not_a_narrow_link() -> None:
    # Every 2 s the client stalls for 120 ms; the frames that waited are
    # answered together when it resumes.
    def stall(index: int, time: float) -> float:
        into = time % 2.0
        return 1.12 - into + 0.0002 * (index % 4) if 1.0 <= into < 1.12 else 0.0

    controller = CongestionController(FPS)
    session = simulate(controller, capped(None), seconds=20, extra=stall)
    assert controller.decreases == 0
    assert controller.settings == UNCONSTRAINED
    assert session.held <= 10 * 2  # at most a frame or two per stall


def test_losses_repaired_by_retransmission_are_not_a_narrow_link() -> None:
    # 5 % of the frames wait for a retransmission (40-140 ms); the ones
    # behind them come out together with them.
    rng = random.Random(7)
    waits: dict[int, float] = {}

    def retransmission(index: int, time: float) -> float:
        if index - 1 in waits and waits[index - 1] > 1 / FPS:
            waits[index] = waits[index - 1] - 1 / FPS
        elif rng.random() < 0.05:
            waits[index] = rng.choice((0.04, 0.04, 0.04, 0.14))
        return waits.get(index, 0.0)

    controller = CongestionController(FPS)
    simulate(controller, capped(None), seconds=30, extra=retransmission)
    assert controller.decreases == 0


def test_a_lost_answer_never_stalls_the_stream() -> None:
    # On a narrow link (the window is active) every 20th answer is lost.
    controller = CongestionController(FPS)
    session = simulate(
        controller,
        capped(100e3),
        seconds=30,
        extra=lambda index, time: None if index % 20 == 0 else 0.0,
    )
    sent_times = [t for t, _, _ in session.sent if t > 5]
    gaps = [b - a for a, b in zip(sent_times, sent_times[1:])]
    assert max(gaps) <= 0.3 + 2 / FPS + 1e-9
    assert statistics.median(session.latencies_between(20, 30)) < 0.02


def test_a_constant_delay_is_not_a_queue() -> None:
    controller = CongestionController(FPS)
    session = simulate(controller, capped(None), seconds=20, base_s=0.055)
    assert controller.decreases == 0 and session.held == 0


# ----------------------------------------------------------------- the pieces


def test_three_paced_late_answers_decrease_once_per_episode() -> None:
    controller = CongestionController(FPS)
    now = 0.0
    for index in range(30):  # a second of frames, answered 5 ms after
        assert controller.admit(now)
        controller.frame_sent(index, now)
        controller.frame_encoded(index, 600, 1)
        controller.frame_answered(index, now + 0.005)
        now += 1 / FPS
    # Three frames queue behind each other at ~60 kbit/s: 100 ms apart.
    for index in range(30, 33):
        controller.frame_sent(index, now + (index - 30) / FPS)
        controller.frame_encoded(index, 600, 1)
    for count, index in enumerate(range(30, 33)):
        controller.frame_answered(index, now + 0.1 * (count + 1))
    assert controller.decreases == 1
    state = controller.state(now + 0.3)
    assert state.capacity_bps == pytest.approx((600 + 76 + 110) * 8 / 0.1, rel=0.01)
    assert state.target_bps == pytest.approx(0.85 * state.capacity_bps)
    # A fourth late answer of a frame sent before the decrease: no second one.
    controller.frame_sent(33, now + 0.2)
    controller.frame_answered(33, now + 0.45)
    assert controller.decreases == 1


def test_sent_and_delivered_rates() -> None:
    controller = CongestionController(FPS)
    for index in range(60):
        now = index / FPS
        controller.frame_sent(index, now)
        controller.frame_encoded(index, 814, 1)  # 1000 bytes on the wire
        controller.frame_answered(index, now + 0.005)
    assert controller.sent_rate(2.0) == pytest.approx(30 * 8000, rel=0.05)
    assert controller.delivered_rate(2.0) == pytest.approx(30 * 8000, rel=0.05)
    assert controller.sent_rate(10.0) == 0.0
