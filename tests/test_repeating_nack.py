from types import SimpleNamespace

import pytest
from aiortc import RTCRtpReceiver
from aiortc.rtp import RtpPacket

from client.fast_jitter_buffer import IncompatibleAiortcError
from client.repeating_nack import RepeatingNackGenerator, install_repeating_nack


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


def make_receiver() -> RTCRtpReceiver:
    return RTCRtpReceiver("video", SimpleNamespace(state="new"))  # type: ignore[arg-type]


def test_install_swaps_the_generator_once() -> None:
    receiver = make_receiver()
    install_repeating_nack(receiver)
    generator = receiver._RTCRtpReceiver__nack_generator  # type: ignore[attr-defined]
    assert type(generator) is RepeatingNackGenerator
    install_repeating_nack(receiver)
    assert receiver._RTCRtpReceiver__nack_generator is generator  # type: ignore[attr-defined]


def test_install_refuses_audio_and_late_receivers() -> None:
    with pytest.raises(IncompatibleAiortcError):
        install_repeating_nack(RTCRtpReceiver("audio", SimpleNamespace(state="new")))  # type: ignore[arg-type]
    receiver = make_receiver()
    receiver._RTCRtpReceiver__nack_generator.add(packet(1))  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="before RTP arrives"):
        install_repeating_nack(receiver)
