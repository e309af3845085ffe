"""What the client does with messages the server sends on the data channel."""

from __future__ import annotations

import logging

import pytest

from client.session import ClientSession
from protocol.coordinates import LatencyFeedback, encode_feedback


class LeadTaker:
    """The one part of a detector the message handler uses."""

    def __init__(self) -> None:
        self.leads: list[float] = []

    def set_lead(self, seconds: float) -> None:
        self.leads.append(seconds)


def session(detector: LeadTaker | None = None) -> ClientSession:
    # Signaling is not touched by the message handler.
    return ClientSession(signaling=None, detector=detector or LeadTaker())  # type: ignore[arg-type]


def test_the_client_keeps_the_servers_latency_figure(caplog: pytest.LogCaptureFixture) -> None:
    client = session()
    assert client.latency_feedback is None
    with caplog.at_level(logging.INFO, logger="client.session"):
        client._on_server_message(encode_feedback(LatencyFeedback(41.0, 60.0, 29)))
        client._on_server_message(encode_feedback(LatencyFeedback(12.5, 20.0, 30)))
    assert client.latency_feedback == LatencyFeedback(12.5, 20.0, 30)
    # Logged once, not once a second.
    assert caplog.text.count("the server measures our latency") == 1


def test_the_servers_latency_goes_to_the_detector_each_time() -> None:
    # Whichever placement: InlineDetector and DetectorProcess both pass it on
    # to a predictive locator (tests/test_choice.py).
    detector = LeadTaker()
    client = session(detector)
    client._on_server_message(encode_feedback(LatencyFeedback(41.0, 60.0, 29)))
    client._on_server_message("garbage")
    client._on_server_message(encode_feedback(LatencyFeedback(12.5, 20.0, 30)))
    assert detector.leads == [0.041, 0.0125]


@pytest.mark.parametrize(
    "message",
    ['{"type": "weather", "sunny": true}', "garbage", b"\x00\x01", "x" * 100000, "[1, 2]"],
)
def test_unknown_server_messages_are_ignored_and_counted(message: str | bytes) -> None:
    client = session()
    client._on_server_message(encode_feedback(LatencyFeedback(41.0, 60.0, 29)))
    client._on_server_message(message)
    assert client.server_messages_ignored == 1
    assert client.latency_feedback == LatencyFeedback(41.0, 60.0, 29)
