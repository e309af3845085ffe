"""Tests for server.media.link_adaptation: the controller wired to a track, an encoder and the report."""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from aiortc import RTCPeerConnection, VideoStreamTrack

from server.media.encoder_rate import DEFAULT_BITRATE_BPS, RateControlledVp8Encoder
from server.media.link_adaptation import LinkAdaptation
from server.reports.report import SECOND_COLUMNS
from tests.test_encoder_rate import ball_frames

FPS = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def attached(codec: str = "vp8") -> tuple[LinkAdaptation, Clock, list[dict[str, Any]]]:
    """An adaptation attached to a real aiortc sender; its clock and its rows."""
    clock = Clock()
    rows: list[dict[str, Any]] = []
    adaptation = LinkAdaptation(FPS, clock, on_second=rows.append, name="s")

    async def attach() -> None:
        pc = RTCPeerConnection()
        try:
            adaptation.attach(pc.addTransceiver(VideoStreamTrack()).sender, codec)
        finally:
            await pc.close()

    asyncio.run(attach())
    return adaptation, clock, rows


def encoder_of(adaptation: LinkAdaptation) -> Optional[RateControlledVp8Encoder]:
    return adaptation._encoder


def stream(
    adaptation: LinkAdaptation,
    clock: Clock,
    frames: range,
    latency_s: float = 0.005,
    spacing_s: Optional[float] = None,
) -> None:
    """Frames due at n / FPS, encoded at once, answered ``latency_s`` after
    (or, with ``spacing_s``, paced out of a queue that far apart)."""
    encoder = encoder_of(adaptation)
    pictures = ball_frames(len(frames))
    answered_at = 0.0
    for picture, index in zip(pictures, frames):
        clock.now = 100.0 + index / FPS
        if not adaptation.admit(clock.now):
            adaptation.frames_skipped(1, clock.now)  # as the track reports a frame held back
            continue
        adaptation.frame_sent(index, clock.now)
        if encoder is not None:
            picture.pts = index * 3000
            encoder.encode(picture)
        sent_at = clock.now
        answered_at = (
            max(answered_at + spacing_s, sent_at + latency_s) if spacing_s else sent_at + latency_s
        )
        clock.now = answered_at
        adaptation.frame_answered(index, (answered_at - sent_at) * 1000, answered_at)


def test_one_row_a_second_with_what_was_sent() -> None:
    adaptation, clock, rows = attached()
    stream(adaptation, clock, range(90))
    adaptation.close(clock.now)
    assert [row["second"] for row in rows] == [0, 1, 2]
    assert all(tuple(row) == SECOND_COLUMNS for row in rows)
    record = rows[1]
    assert record["frames_sent"] == 30 and record["frames_answered"] == 30
    assert record["frames_skipped_for_rate"] == 0
    assert abs(record["latency_p50_ms"] - 5.0) < 0.01
    assert 100 < record["sent_kbps"] < 300  # the ball at aiortc's default, with overhead
    assert record["payload_kbps"] < record["sent_kbps"]
    assert record["target_kbps"] is None and record["capacity_kbps"] is None
    assert record["bitrate_kbps"] == DEFAULT_BITRATE_BPS / 1000 and record["fps"] == FPS
    assert rows[0]["keyframes"] == 1


def test_a_queue_lowers_the_encoders_bitrate_and_then_the_frame_rate() -> None:
    adaptation, clock, rows = attached()
    stream(adaptation, clock, range(30))
    # The answers come out of a 60 kbit/s queue from frame 30 on.
    stream(adaptation, clock, range(30, 120), spacing_s=0.1)
    encoder = encoder_of(adaptation)
    assert encoder is not None
    assert encoder.target_bitrate < DEFAULT_BITRATE_BPS
    assert adaptation.frame_interval > 1
    summary = adaptation.summary()
    rate = summary["rate_control"]
    assert rate["decreases"] >= 1 and rate["bitrate_controlled"]
    assert rate["lowest_fps"] < FPS and rate["lowest_bitrate_kbps"] < 100
    assert rate["frames_held"] >= 0
    assert summary["keyframes_sent"] >= 2  # the first, and the rebuild at the new bitrate
    adaptation.close(clock.now)
    skipped = sum(row["frames_skipped_for_rate"] for row in rows)
    assert skipped == rate["frames_held"]  # the only skips this test reports
    assert any(row["target_kbps"] for row in rows)


def test_h264_adapts_the_frame_rate_only() -> None:
    adaptation, clock, rows = attached("h264")
    assert encoder_of(adaptation) is None
    stream(adaptation, clock, range(40))
    adaptation.close(clock.now)
    record = rows[0]
    assert record["sent_kbps"] is None and record["payload_kbps"] is None
    summary = adaptation.summary()
    assert summary["keyframes_sent"] is None
    assert summary["rate_control"]["bitrate_controlled"] is False


def test_nothing_sent_nothing_written() -> None:
    adaptation, clock, rows = attached()
    adaptation.close(clock.now)
    assert rows == []
    assert adaptation.summary()["rate_control"]["decreases"] == 0
