from types import SimpleNamespace

import pytest
from aiortc import RTCRtpReceiver
from aiortc.rtp import RtpPacket

from client.media.fast_jitter_buffer import IncompatibleAiortcError
from client.media.repeating_nack import RepeatingNackGenerator, install_repeating_nack


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def packet(sequence_number: int) -> RtpPacket:
    return RtpPacket(payload_type=96, sequence_number=sequence_number, timestamp=0)


def test_repeats_the_nack_while_a_packet_stays_missing() -> None:
    clock = Clock()
    generator = RepeatingNackGenerator(interval=0.1, clock=clock)
    assert generator.add(packet(10)) is False
    assert generator.add(packet(12)) is True  # 11 missing: the first NACK
    assert generator.missing == {11}
    clock.now = 0.05
    assert generator.add(packet(13)) is False  # asked 50 ms ago
    clock.now = 0.12
    assert generator.add(packet(14)) is True  # the retransmission was lost: ask again
    clock.now = 0.15
    assert generator.add(packet(11)) is False  # it arrived: nothing missing
    clock.now = 1.0
    assert generator.add(packet(15)) is False


def test_a_new_gap_is_reported_at_once() -> None:
    clock = Clock()
    generator = RepeatingNackGenerator(interval=0.1, clock=clock)
    generator.add(packet(1))
    assert generator.add(packet(3)) is True
    clock.now = 0.01
    assert generator.add(packet(5)) is True  # 4 is a new gap
    assert generator.missing == {2, 4}


def test_stops_asking_for_a_packet_missing_too_long() -> None:
    clock = Clock()
    generator = RepeatingNackGenerator(interval=0.1, clock=clock, give_up_after=0.25)
    generator.add(packet(1))
    assert generator.add(packet(3)) is True  # 2 missing
    for n, now in enumerate((0.1, 0.2), start=4):
        clock.now = now
        assert generator.add(packet(n)) is True and generator.missing == {2}
    clock.now = 0.3
    assert generator.add(packet(6)) is False  # its frame has been given up on
    assert generator.packets_given_up == 1 and generator.packets_requested == 3


def test_the_budget_limits_requests_to_the_newest() -> None:
    clock = Clock()
    generator = RepeatingNackGenerator(
        interval=0.1, clock=clock, budget_per_packet=0.25, budget_burst=4
    )
    generator.add(packet(0))
    assert generator.add(packet(11)) is True  # 10 missing, 4 allowed: the newest
    assert generator.missing == {7, 8, 9, 10}
    assert generator.requests_over_budget == 6
    clock.now = 0.2
    # Spent: each packet earns a quarter of a request, so every fourth may ask.
    assert [generator.add(packet(n)) for n in range(12, 16)] == [False, False, False, True]
    assert generator.missing == {10}


def test_repeats_follow_the_measured_round_trip() -> None:
    clock = Clock()
    generator = RepeatingNackGenerator(interval=0.1, clock=clock, min_interval=0.02)
    assert generator.repeat_interval == 0.1  # nothing measured yet
    generator.add(packet(1))
    generator.add(packet(3))  # asks for 2 at 0
    clock.now = 0.008
    generator.add(packet(2))  # its retransmission: 8 ms
    assert generator.round_trip == pytest.approx(0.008)
    assert generator.repeat_interval == pytest.approx(0.02)  # 2.5 round trips, at least 20 ms
    clock.now = 0.01
    assert generator.add(packet(5)) is True  # 4 missing
    clock.now = 0.025
    assert generator.add(packet(6)) is False  # asked 15 ms ago
    clock.now = 0.031
    assert generator.add(packet(7)) is True and generator.missing == {4}
    # A long path: repeats no more often than every 100 ms.
    for _ in range(40):
        generator._measure_round_trip(0.2)
    assert generator.repeat_interval == 0.1


def make_receiver() -> RTCRtpReceiver:
    return RTCRtpReceiver("video", SimpleNamespace(state="new"))  # type: ignore[arg-type]


def test_install_swaps_the_generator_once() -> None:
    receiver = make_receiver()
    installed = install_repeating_nack(receiver, give_up_after=0.25)
    generator = receiver._RTCRtpReceiver__nack_generator  # type: ignore[attr-defined]
    assert type(generator) is RepeatingNackGenerator and generator is installed
    assert generator._give_up_after == 0.25
    assert install_repeating_nack(receiver) is generator
    assert receiver._RTCRtpReceiver__nack_generator is generator  # type: ignore[attr-defined]


def test_install_refuses_audio_and_late_receivers() -> None:
    with pytest.raises(IncompatibleAiortcError):
        install_repeating_nack(RTCRtpReceiver("audio", SimpleNamespace(state="new")))  # type: ignore[arg-type]
    receiver = make_receiver()
    receiver._RTCRtpReceiver__nack_generator.add(packet(1))  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="before RTP arrives"):
        install_repeating_nack(receiver)
