"""The client reads back each frame's RTP timestamp from aiortc's receiver."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import aiortc
import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver

from client.media.wire_timestamps import WireTimestamps
from protocol.aiortc_internals import IncompatibleAiortcError


def with_receiver(check: "object") -> None:
    async def scenario() -> None:
        pc = RTCPeerConnection()
        try:
            check(pc.addTransceiver("video", direction="recvonly").receiver)  # type: ignore[operator]
        finally:
            await pc.close()

    asyncio.run(scenario())


def mapper_of(receiver: RTCRtpReceiver) -> "aiortc.rtcrtpreceiver.TimestampMapper":
    return receiver._RTCRtpReceiver__timestamp_mapper


def test_pts_maps_back_to_the_wire_timestamp_even_if_the_first_frame_was_lost() -> None:
    def check(receiver: RTCRtpReceiver) -> None:
        wire = WireTimestamps(receiver)
        assert wire.rtp_timestamp(0) is None  # no frame yet
        origin = 1_000_000
        # Frames 0 and 1 were lost: the receiver's first frame is frame 2.
        mapper, received = mapper_of(receiver), []
        for index in (2, 3, 4):
            pts = mapper.map(origin + 3000 * index)
            received.append(pts)
            assert wire.rtp_timestamp(pts) == origin + 3000 * index
        assert received == [0, 3000, 6000]  # frames 2 to 4 under the pts of 0 to 2

    with_receiver(check)


def test_the_32_bit_wrap_is_undone() -> None:
    def check(receiver: RTCRtpReceiver) -> None:
        wire, mapper = WireTimestamps(receiver), mapper_of(receiver)
        for timestamp in (2**32 - 3000, 0, 3000):  # wraps after the first
            assert wire.rtp_timestamp(mapper.map(timestamp)) == timestamp

    with_receiver(check)


def test_guard_fires_on_another_aiortc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "1.17.0")
    with pytest.raises(IncompatibleAiortcError, match="1.17.0"):
        WireTimestamps(SimpleNamespace())  # type: ignore[arg-type]


def test_guard_fires_when_the_receiver_has_no_mapper() -> None:
    with pytest.raises(IncompatibleAiortcError, match="TimestampMapper"):
        WireTimestamps(SimpleNamespace())  # type: ignore[arg-type]
