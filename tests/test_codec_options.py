"""Encoder options for this stream (issue 11): aiortc's settings with the overrides merged in."""

from __future__ import annotations

import asyncio
import fractions
import os
from pathlib import Path
from types import SimpleNamespace

import aiortc
import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, VideoStreamTrack
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder

from protocol.aiortc_internals import IncompatibleAiortcError
from server.core.renderer import BallRenderer
from server.media.codec_options import (
    H264_OPTION_OVERRIDES,
    VP8_OPTION_OVERRIDES,
    FastH264Encoder,
    OptionOverrides,
    check_h264_hook,
    encoder_threads,
    install_fast_h264_encoder,
    usable_cores,
)
from server.media.encoder_rate import RateControlledVp8Encoder, check_encoder_hook


def frames(count: int, width: int = 640, height: int = 480) -> list[av.VideoFrame]:
    renderer, result = BallRenderer(width, height, 20.0), []
    for index in range(count):
        picture = renderer.render(100.0 + 3 * index, 120.0 + 2 * index)
        picture.pts, picture.time_base = 3000 * index, fractions.Fraction(1, 90000)
        result.append(picture)
    return result


def test_the_options_aiortc_sets_reach_the_context_with_the_overrides() -> None:
    context = SimpleNamespace()
    wrapped = OptionOverrides(context, {"noise-sensitivity": "0"})
    wrapped.options = {"cpu-used": "-6", "noise-sensitivity": "4"}
    wrapped.width = 640
    assert context.options == {"cpu-used": "-6", "noise-sensitivity": "0"}
    assert context.width == 640 and wrapped.width == 640
    assert VP8_OPTION_OVERRIDES == {"noise-sensitivity": "0", "cpu-used": "-16"}
    assert H264_OPTION_OVERRIDES == {"preset": "ultrafast"}


def test_a_thread_policy_replaces_the_thread_count_aiortc_sets() -> None:
    context = SimpleNamespace(width=1920, height=1080)
    wrapped = OptionOverrides(context, {}, threads=lambda w, h: 3 if w * h > 2e6 else 1)
    wrapped.thread_count = 1
    assert context.thread_count == 3
    plain = OptionOverrides(SimpleNamespace(), {})
    plain.thread_count = 2
    assert plain.thread_count == 2


@pytest.mark.parametrize(
    "width, height, cores, threads",
    [
        (640, 480, 64, 1),
        (1280, 720, 2, 1),  # on a small machine the client and the rest need the other core
        (1280, 720, 3, 2),
        (1920, 1080, 2, 1),
        (1920, 1080, 8, 3),
        # A pod limited to 1 core on a 64-core node: aiortc would give it 8.
        (1920, 1080, 1, 1),
        (1920, 1080, 64, 8),
    ],
)
def test_encoder_threads_follow_the_frame_size_and_the_cores(
    width: int, height: int, cores: int, threads: int
) -> None:
    assert encoder_threads(width, height, cores) == threads


def test_usable_cores_honour_a_cgroup_cpu_limit(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    assert usable_cores(cpu_max) == affinity  # no such file: the affinity alone
    cpu_max.write_text("max 100000\n")
    assert usable_cores(cpu_max) == affinity
    cpu_max.write_text("50000 100000\n")  # half a core still runs on one
    assert usable_cores(cpu_max) == 1
    cpu_max.write_text("garbage\n")
    assert usable_cores(cpu_max) == affinity


def test_a_vp8_context_gets_threads_for_the_usable_cores_not_the_machines() -> None:
    encoder = RateControlledVp8Encoder(cores=8)
    encoder.encode(frames(1, 1920, 1080)[0])
    assert encoder.codec is not None and encoder.codec.thread_count == 3
    confined = RateControlledVp8Encoder(cores=1)
    confined.encode(frames(1, 1920, 1080)[0])
    assert confined.codec is not None and confined.codec.thread_count == 1


@pytest.mark.parametrize(
    "ours, theirs", [(RateControlledVp8Encoder, Vp8Encoder), (FastH264Encoder, H264Encoder)]
)
def test_each_context_aiortc_opens_is_wrapped_and_encodes_differently(
    ours: type, theirs: type
) -> None:
    encoders = ours(), theirs()
    sizes = [[sum(len(p) for p in e.encode(f)[0]) for f in frames(20)] for e in encoders]
    # The same frames and every other setting: only the overridden options differ.
    assert sizes[0] != sizes[1]
    assert isinstance(encoders[0].codec, OptionOverrides)
    assert not isinstance(encoders[1].codec, OptionOverrides)
    encoders[0].codec = None
    assert encoders[0].codec is None


def test_a_rebuilt_vp8_context_is_wrapped_too() -> None:
    encoder = RateControlledVp8Encoder()
    encoder.encode(frames(1)[0])
    first = encoder.codec
    encoder.set_bitrate(60_000)  # more than 10 % off: aiortc opens a new context
    encoder.encode(frames(2)[1])
    assert isinstance(encoder.codec, OptionOverrides) and encoder.codec is not first
    assert encoder.codec.bit_rate == 60_000


class BallTrack(VideoStreamTrack):
    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = frames(1, 320, 240)[0]
        frame.pts, frame.time_base = pts, time_base
        return frame


def test_an_h264_sender_encodes_with_the_installed_encoder() -> None:
    async def scenario() -> FastH264Encoder:
        offerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        received: asyncio.Future = asyncio.get_running_loop().create_future()
        answerer.on("track", received.set_result)
        try:
            transceiver = offerer.addTransceiver(BallTrack(), direction="sendonly")
            transceiver.setCodecPreferences(
                [c for c in RTCRtpSender.getCapabilities("video").codecs if c.name == "H264"]
            )
            encoder = install_fast_h264_encoder(transceiver.sender)
            await offerer.setLocalDescription(await offerer.createOffer())
            await answerer.setRemoteDescription(offerer.localDescription)
            await answerer.setLocalDescription(await answerer.createAnswer())
            await offerer.setRemoteDescription(answerer.localDescription)
            track = await asyncio.wait_for(received, 5)
            for _ in range(3):
                await asyncio.wait_for(track.recv(), 5)
            with pytest.raises(RuntimeError, match="before the first frame"):
                install_fast_h264_encoder(transceiver.sender)
            return encoder
        finally:
            await offerer.close()
            await answerer.close()

    encoder = asyncio.run(scenario())
    assert encoder.codec is None or isinstance(encoder.codec, OptionOverrides)


def test_guards_fire_on_another_aiortc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "1.17.0")
    with pytest.raises(IncompatibleAiortcError, match="1.17.0"):
        check_h264_hook()


def test_vp8_guard_fires_when_aiortc_stops_setting_the_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def encode(self: Vp8Encoder, frame: object, force_keyframe: bool = False) -> object:
        # Uses every name the guard looks for, sets no noise-sensitivity.
        self.codec.options = {"target_bitrate": self.target_bitrate}  # type: ignore[union-attr]
        return self._Vp8Encoder__target_bitrate, self.codec.bit_rate  # type: ignore[attr-defined]

    monkeypatch.setattr(Vp8Encoder, "encode", encode)
    with pytest.raises(IncompatibleAiortcError, match="no longer sets noise-sensitivity"):
        check_encoder_hook()


def test_h264_guard_fires_when_the_encoder_changed_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    def _encode_frame(self: H264Encoder, frame: object, force_keyframe: bool) -> object:
        return iter(())  # sets nothing up

    monkeypatch.setattr(H264Encoder, "_encode_frame", _encode_frame)
    with pytest.raises(IncompatibleAiortcError, match="no longer"):
        check_h264_hook()
    with pytest.raises(IncompatibleAiortcError):
        install_fast_h264_encoder(SimpleNamespace())  # type: ignore[arg-type]
