"""The session's own parts that need no network: its scene and its latency message."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from protocol.coordinates import LatencyFeedback, decode_feedback
from server.core.scenes.occlusion import OcclusionScene
from server.core.scoreboard import Interval
from server.sessions.session import SessionConfig, TrackingSession


@dataclass
class FakeChannel:
    readyState: str = "open"
    sent: list[str] = field(default_factory=list)

    def send(self, message: str) -> None:
        self.sent.append(message)


@dataclass
class FakeLink:
    """Only what summary() reads; nothing here negotiates."""

    peer: str = "127.0.0.1:5000"


def make_session(**config: object) -> TrackingSession:
    async def build() -> TrackingSession:
        # An asyncio.Event inside wants a running loop on older Pythons.
        return TrackingSession(1, link=FakeLink(), config=SessionConfig(**config))  # type: ignore[arg-type]

    return asyncio.run(build())


def test_the_session_streams_the_configured_scene_and_reports_it() -> None:
    session = make_session(scene="occlusion", seed=4)
    assert isinstance(session.picture, OcclusionScene)
    assert session.picture.seed == 5  # seed + session number, like the motion
    assert session.picture.motion is session.scene
    assert session.summary()["scene"] == "occlusion"
    assert make_session().summary()["scene"] == "classic"


def test_the_latency_message_carries_the_last_seconds_latency() -> None:
    session = make_session()
    channel = FakeChannel()
    session._channel = channel  # type: ignore[assignment]
    session._send_latency(Interval(latencies=[float(ms) for ms in range(1, 101)]))
    [message] = channel.sent
    feedback = decode_feedback(message)
    assert feedback == LatencyFeedback(p50_ms=50.5, p95_ms=96.0, answers=100)


def test_no_latency_message_without_answers_or_an_open_channel() -> None:
    session = make_session()
    session._send_latency(Interval(latencies=[5.0]))  # no channel yet
    channel = FakeChannel()
    session._channel = channel  # type: ignore[assignment]
    session._send_latency(Interval())
    channel.readyState = "closing"
    session._send_latency(Interval(latencies=[5.0]))
    assert channel.sent == []
