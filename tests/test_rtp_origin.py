"""The server learns its video sender's random RTP timestamp origin."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import aiortc
import pytest
from aiortc import RTCPeerConnection, VideoStreamTrack

from protocol.aiortc_internals import IncompatibleAiortcError
from server.media.rtp_origin import SenderTimestampOrigin

ORIGIN = 4_294_960_000  # near the top: the wire timestamps wrap


class FakeSender(SimpleNamespace):
    """aiortc's sender as the origin reader sees it: its last timestamp and packet count."""

    def __init__(self) -> None:
        super().__init__()
        self._RTCRtpSender__rtp_timestamp = 0
        self._RTCRtpSender__packet_count = 0

    def send(self, pts: int, packets: int = 1) -> None:
        self._RTCRtpSender__rtp_timestamp = (ORIGIN + pts) % 2**32
        count = self._RTCRtpSender__packet_count
        self._RTCRtpSender__packet_count = count + packets


def attached() -> tuple[SenderTimestampOrigin, FakeSender]:
    reader, sender = SenderTimestampOrigin(), FakeSender()
    reader.attach(sender)  # type: ignore[arg-type]
    return reader, sender


def test_unknown_until_a_packet_has_left() -> None:
    reader, sender = attached()
    assert reader.origin is None
    reader.frame_handed(0)
    assert reader.origin is None  # frame 0 is being encoded
    sender.send(0)
    assert reader.origin == ORIGIN  # an answer to frame 0 can be matched already


def test_learned_when_the_next_frame_is_asked_for() -> None:
    reader, sender = attached()
    reader.frame_handed(0)
    reader.frame_handed(3000)  # frame 0 was dropped by the sender: nothing sent
    assert reader.origin is None
    sender.send(3000, packets=3)
    # Two frames handed over: a packet on the wire could be either, until
    # the sender asks for the third, when frame 3000's packets have all left.
    assert reader.origin is None
    reader.frame_handed(6000)
    assert reader.origin == ORIGIN
    sender.send(6000)
    reader.frame_handed(9000)
    assert reader.origin == ORIGIN  # learned once, kept


def test_nothing_attached_knows_nothing() -> None:
    reader = SenderTimestampOrigin()
    reader.frame_handed(0)
    reader.frame_handed(3000)
    assert reader.origin is None


def test_a_real_aiortc_sender_has_what_it_reads() -> None:
    async def scenario() -> None:
        pc = RTCPeerConnection()
        try:
            transceiver = pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
            SenderTimestampOrigin().attach(transceiver.sender)
        finally:
            await pc.close()

    asyncio.run(scenario())


def test_guard_fires_on_another_aiortc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "1.17.0")
    with pytest.raises(IncompatibleAiortcError, match="1.17.0"):
        SenderTimestampOrigin().attach(FakeSender())  # type: ignore[arg-type]


def test_guard_fires_when_the_sender_changed_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(IncompatibleAiortcError, match="__packet_count"):
        SenderTimestampOrigin().attach(SimpleNamespace(_RTCRtpSender__rtp_timestamp=0))  # type: ignore[arg-type]

    async def _run_rtp(self: Any, codec: Any) -> None: ...

    monkeypatch.setattr(aiortc.RTCRtpSender, "_run_rtp", _run_rtp)
    with pytest.raises(IncompatibleAiortcError, match="_run_rtp"):
        SenderTimestampOrigin().attach(FakeSender())  # type: ignore[arg-type]
