"""Tests for server.media.encoder_rate: the VP8 encoder the congestion controller drives."""

from __future__ import annotations

import asyncio
import fractions
import statistics

import aiortc
import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, VideoStreamTrack
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import MediaStreamTrack

from protocol.aiortc_internals import IncompatibleAiortcError
from server.core.renderer import BallRenderer
from server.core.scene import BallScene
from server.media.encoder_rate import (
    DEFAULT_BITRATE_BPS,
    MIN_BITRATE_BPS,
    RateControlledVp8Encoder,
    check_encoder_hook,
    install_rate_controlled_encoder,
    is_vp8_keyframe,
)

TIME_BASE = fractions.Fraction(1, 90000)


def ball_frames(count: int, interval: int = 1) -> list[av.VideoFrame]:
    """The server's frames: 640x480, the ball at 300 px/s, every ``interval``-th of 30 fps."""
    scene = BallScene.from_seed(640, 480, 20.0, 300.0, 0)
    renderer = BallRenderer(640, 480, 20.0)
    frames = []
    for n in range(0, count * interval, interval):
        frame = renderer.render(*scene.position(n / 30))
        frame.pts = n * 3000
        frame.time_base = TIME_BASE
        frames.append(frame)
    return frames


def test_keyframes_are_recognised() -> None:
    encoder = RateControlledVp8Encoder()
    frames = ball_frames(4)
    assert is_vp8_keyframe(encoder.encode(frames[0])[0])  # a new encoder starts with one
    assert not is_vp8_keyframe(encoder.encode(frames[1])[0])
    assert is_vp8_keyframe(encoder.encode(frames[2], force_keyframe=True)[0])
    assert not is_vp8_keyframe(encoder.encode(frames[3])[0])
    assert (encoder.keyframes, encoder.keyframes_requested) == (2, 1)
    assert not is_vp8_keyframe([]) and not is_vp8_keyframe([b""])


def test_reports_what_each_frame_cost() -> None:
    encoder = RateControlledVp8Encoder()
    sizes = []
    for frame in ball_frames(3):
        payloads, _ = encoder.encode(frame)
        sizes.append(sum(len(p) for p in payloads))
    encoded = encoder.take_encoded()
    # The 90 kHz timestamp the sender sends (libvpx's rounding may make 2999 of 3000).
    assert [round(e.pts / 3000) for e in encoded] == [0, 1, 2]
    assert [e.payload_bytes for e in encoded] == sizes
    assert [e.packets for e in encoded] == [1, 1, 1]  # a ball on black fits one packet
    assert [e.keyframe for e in encoded] == [True, False, False]
    assert encoder.take_encoded() == []


def test_bitrates_below_aiortcs_clamp_make_smaller_frames() -> None:
    def mean_size(bitrate: int) -> float:
        encoder = RateControlledVp8Encoder()
        encoder.set_bitrate(bitrate)
        sizes = [sum(map(len, encoder.encode(f)[0])) for f in ball_frames(60)]
        return statistics.mean(sizes[1:])

    default, low = mean_size(DEFAULT_BITRATE_BPS), mean_size(40_000)
    # Measured: 536 and 167 bytes; aiortc's own encoder stops at 250 kbit/s (485).
    assert low < 0.5 * default, (low, default)


def test_remb_is_recorded_not_obeyed() -> None:
    encoder = RateControlledVp8Encoder()
    encoder.set_bitrate(60_000)
    encoder.target_bitrate = 1_200_000  # what aiortc's sender does with a REMB
    assert encoder.receiver_estimate_bps == 1_200_000
    assert encoder.target_bitrate == 60_000
    encoder.set_bitrate(None)
    assert encoder.target_bitrate == DEFAULT_BITRATE_BPS
    encoder.set_bitrate(1)
    assert encoder.target_bitrate == MIN_BITRATE_BPS


def test_a_new_bitrate_rebuilds_the_encoder_with_a_keyframe() -> None:
    encoder = RateControlledVp8Encoder()
    frames = ball_frames(4)
    encoder.encode(frames[0])
    encoder.encode(frames[1])
    encoder.set_bitrate(60_000)
    assert is_vp8_keyframe(encoder.encode(frames[2])[0])
    assert encoder.codec is not None and encoder.codec.bit_rate == 60_000
    assert not is_vp8_keyframe(encoder.encode(frames[3])[0])


class BallVideoTrack(VideoStreamTrack):
    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = ball_frames(1)[0]
        frame.pts, frame.time_base = pts, time_base
        return frame


def test_a_sender_encodes_with_the_installed_encoder() -> None:
    async def scenario() -> RateControlledVp8Encoder:
        offerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        received: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        answerer.on("track", received.set_result)
        try:
            transceiver = offerer.addTransceiver(BallVideoTrack(), direction="sendonly")
            vp8 = [
                c
                for c in RTCRtpSender.getCapabilities("video").codecs
                if c.mimeType.lower() == "video/vp8"
            ]
            transceiver.setCodecPreferences(vp8)
            encoder = install_rate_controlled_encoder(transceiver.sender)
            encoder.set_bitrate(30_000)
            await offerer.setLocalDescription(await offerer.createOffer())
            await answerer.setRemoteDescription(offerer.localDescription)
            await answerer.setLocalDescription(await answerer.createAnswer())
            await offerer.setRemoteDescription(answerer.localDescription)
            track = await asyncio.wait_for(received, 5)
            for _ in range(5):
                await asyncio.wait_for(track.recv(), 5)
            with pytest.raises(RuntimeError, match="before the first frame"):
                install_rate_controlled_encoder(transceiver.sender)
            return encoder
        finally:
            await offerer.close()
            await answerer.close()

    encoder = asyncio.run(scenario())
    assert len(encoder.take_encoded()) >= 5
    assert encoder.codec is None or encoder.codec.bit_rate == 30_000


def test_guard_fires_on_another_aiortc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "1.17.0")
    with pytest.raises(IncompatibleAiortcError, match="1.17.0"):
        check_encoder_hook()


def test_guard_fires_when_the_encoder_changed_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    check_encoder_hook()

    def encode(self: Vp8Encoder, frame: av.VideoFrame, force_keyframe: bool = False) -> None:
        return None

    monkeypatch.setattr(Vp8Encoder, "encode", encode)
    with pytest.raises(IncompatibleAiortcError, match="Vp8Encoder.encode no longer uses"):
        check_encoder_hook()


def test_guard_fires_when_the_sender_changed_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    async def _next_encoded_frame(self: RTCRtpSender, codec: object) -> None:
        return None

    monkeypatch.setattr(RTCRtpSender, "_next_encoded_frame", _next_encoded_frame)
    with pytest.raises(IncompatibleAiortcError, match="__encoder lazily"):
        check_encoder_hook()
