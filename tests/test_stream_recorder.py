"""server.media.stream_recorder: the hook's guard, and what it keeps from a real sender.

What it keeps is checked byte for byte end to end in tests/test_replay.py (a
replay of the kept frames matches the live client's answers); here, that
the hook refuses an aiortc it was not written for, and that a real aiortc
sender streaming to a real receiver over loopback has every frame it sent
kept, with the RTP timestamp the receiver saw.
"""

from __future__ import annotations

import asyncio
import fractions

import aiortc
import av
import pytest
from aiortc import RTCPeerConnection, VideoStreamTrack

from protocol.aiortc_internals import IncompatibleAiortcError
from server.media.stream_recorder import check_stream_recorder_hook, install_stream_recorder

pytestmark = pytest.mark.timeout(60)


def test_the_hook_fits_the_installed_aiortc() -> None:
    check_stream_recorder_hook()


def test_another_aiortc_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "0.0.1")
    with pytest.raises(IncompatibleAiortcError, match="written for aiortc"):
        check_stream_recorder_hook()


class Frames(VideoStreamTrack):
    """Grey frames whose brightness steps, at 30 fps from pts 0."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(160, 120, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([(self.count * 20) % 256]) * plane.buffer_size)
        frame.pts, frame.time_base = pts, time_base
        self.count += 1
        return frame


async def stream_and_keep(frames: int) -> tuple[list[tuple[int, bytes]], list[int], int]:
    sender_pc, receiver_pc = RTCPeerConnection(), RTCPeerConnection()
    kept: list[tuple[int, bytes]] = []
    received: list[int] = []
    transceiver = sender_pc.addTransceiver(Frames(), direction="sendonly")
    recorder = install_stream_recorder(transceiver.sender, lambda t, d: kept.append((t, d)))
    done = asyncio.Event()

    @receiver_pc.on("track")
    def on_track(track: aiortc.MediaStreamTrack) -> None:
        async def read() -> None:
            while len(received) < frames:
                frame = await track.recv()
                received.append(int(frame.pts))
            done.set()

        asyncio.ensure_future(read())

    await sender_pc.setLocalDescription(await sender_pc.createOffer())
    await receiver_pc.setRemoteDescription(sender_pc.localDescription)
    await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
    await sender_pc.setRemoteDescription(receiver_pc.localDescription)
    await asyncio.wait_for(done.wait(), 30)
    recorder.remove()
    origin = recorder.origin
    await sender_pc.close()
    await receiver_pc.close()
    assert origin is not None
    return kept, received, origin


def test_every_frame_sent_is_kept_with_its_rtp_timestamp() -> None:
    kept, received, origin = asyncio.run(stream_and_keep(20))
    assert len(kept) >= len(received)
    timestamps = [t for t, _ in kept]
    # The first frame kept is pts 0; every one is origin + pts, 3000 apart at
    # 30 fps (aiortc's VP8 encoder rounds some a tick down: the wire has that).
    assert timestamps[0] == origin
    assert all(abs(t - origin - 3000 * n) <= 1 for n, t in enumerate(timestamps[:20]))
    # Exactly what the receiver saw: its pts is the wire timestamp minus the first.
    assert received == [t - origin for t in timestamps[:20]]
    # And the kept bytes decode to as many pictures with FFmpeg's VP8 decoder.
    decoder = av.CodecContext.create("vp8", "r")
    pictures = 0
    for timestamp, data in kept:
        packet = av.Packet(data)
        packet.pts, packet.time_base = timestamp - origin, fractions.Fraction(1, 90000)
        pictures += len(decoder.decode(packet))
    assert pictures == len(kept)
