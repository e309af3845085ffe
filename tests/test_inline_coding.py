"""Encoding and decoding on the event loop (server.media.inline_encoding, client.media.inline_decoder)."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from types import SimpleNamespace
from typing import Any, Callable, Optional

import aiortc
import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, VideoStreamTrack
from aiortc.codecs import vpx
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

import client.media.inline_decoder as inline_decoder
from client.media.fast_jitter_buffer import install_fast_jitter_buffer
from client.media.inline_decoder import (
    InlineDecoder,
    NativeVp8Decoder,
    check_inline_decoder_hook,
    make_decoder,
)
from protocol.aiortc_internals import IncompatibleAiortcError
from protocol.wire_clock import VIDEO_TIME_BASE as TIME_BASE
from server.core.ledger import frame_pts
from server.core.renderer import BallRenderer
from server.media.inline_encoding import (
    InlineExecutorLoop,
    check_inline_encoding_hook,
    encode_in_loop,
)

FRAMES = 8
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)


class BallTrack(VideoStreamTrack):
    def __init__(self) -> None:
        super().__init__()
        self._renderer = BallRenderer(320, 240, 20.0)
        self._index = 0

    async def recv(self) -> av.VideoFrame:
        await asyncio.sleep(1 / 30)
        frame = self._renderer.render(100.0 + self._index, 120.0)
        frame.pts, frame.time_base = frame_pts(self._index, 30), TIME_BASE
        self._index += 1
        return frame


def threads_of(monkeypatch: pytest.MonkeyPatch, cls: type, method: str) -> list[int]:
    """The thread each call of ``cls.method`` ran in, from now on."""
    seen: list[int] = []
    original = getattr(cls, method)

    def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(threading.get_ident())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, recording)
    return seen


def call(
    on_sender: Callable[[RTCRtpSender], None] = lambda sender: None,
    on_receiver: Callable[[Any], Any] = lambda receiver: None,
) -> tuple[int, Any]:
    """A loopback VP8 call for FRAMES frames; the loop's thread and on_receiver's result."""

    async def scenario() -> tuple[int, Any]:
        offerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            transceiver = offerer.addTransceiver(BallTrack(), direction="sendonly")
            transceiver.setCodecPreferences(
                [c for c in RTCRtpSender.getCapabilities("video").codecs if c.name == "VP8"]
            )
            on_sender(transceiver.sender)
            await offerer.setLocalDescription(await offerer.createOffer())
            await answerer.setRemoteDescription(offerer.localDescription)
            receiver = answerer.getTransceivers()[0].receiver
            install_fast_jitter_buffer(receiver)
            installed = on_receiver(receiver)
            await answerer.setLocalDescription(await answerer.createAnswer())
            await offerer.setRemoteDescription(answerer.localDescription)
            for _ in range(FRAMES):
                frame = await asyncio.wait_for(receiver.track.recv(), 10)
                assert frame.width == 320
            return threading.get_ident(), installed
        finally:
            await offerer.close()
            await answerer.close()

    return asyncio.run(scenario())


# --- encoding ---------------------------------------------------------------


def test_the_stand_in_loop_runs_the_function_at_once() -> None:
    async def scenario() -> None:
        loop = InlineExecutorLoop(asyncio.get_running_loop())
        assert (await loop.run_in_executor(None, pow, 2, 10)) == 1024
        with pytest.raises(ZeroDivisionError):
            await loop.run_in_executor(None, lambda: 1 / 0)
        assert loop.time() == pytest.approx(asyncio.get_running_loop().time(), abs=1.0)

    asyncio.run(scenario())


def test_a_sender_encodes_on_its_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    encodes = threads_of(monkeypatch, vpx.Vp8Encoder, "encode")

    def in_loop(sender: RTCRtpSender) -> None:
        encode_in_loop(sender)
        encode_in_loop(sender)  # idempotent

    loop_thread, _ = call(on_sender=in_loop)
    assert len(encodes) >= FRAMES and set(encodes) == {loop_thread}


def test_without_it_aiortc_encodes_in_another_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    encodes = threads_of(monkeypatch, vpx.Vp8Encoder, "encode")
    loop_thread, _ = call()
    assert encodes and loop_thread not in encodes


def test_encoding_guard_fires_on_another_aiortc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "1.17.0")
    with pytest.raises(IncompatibleAiortcError, match="1.17.0"):
        check_inline_encoding_hook()


def test_encoding_guard_fires_when_the_sender_changed_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def _next_encoded_frame(self: RTCRtpSender, codec: object) -> None:
        return None  # encodes some other way

    monkeypatch.setattr(RTCRtpSender, "_next_encoded_frame", _next_encoded_frame)
    with pytest.raises(IncompatibleAiortcError, match="run_in_executor"):
        check_inline_encoding_hook()
    with pytest.raises(IncompatibleAiortcError):
        encode_in_loop(SimpleNamespace())  # type: ignore[arg-type]


# --- decoding ---------------------------------------------------------------


def test_a_receiver_decodes_on_its_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    decodes = threads_of(monkeypatch, NativeVp8Decoder, "decode")
    stages: list[str] = []

    def in_loop(receiver: Any) -> InlineDecoder:
        decoder = InlineDecoder(receiver)
        decoder.observer = lambda stage, pts, at: stages.append(stage)
        decoder.install()
        with pytest.raises(RuntimeError, match="hooks made after"):
            # Its hook sits on the decoder queue; a hook below it cannot come out first.
            blocker = InlineDecoder(receiver)
            blocker.install()
            decoder.remove()
        blocker.remove()
        return decoder

    loop_thread, decoder = call(on_receiver=in_loop)
    assert len(decodes) >= FRAMES and set(decodes) == {loop_thread}
    assert decoder.frames_decoded >= FRAMES and decoder.decode_errors == 0
    assert stages[:4] == ["decode_start", "decoded", "decode_start", "decoded"]


def test_without_it_aiortc_decodes_in_its_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    decodes = threads_of(monkeypatch, vpx.Vp8Decoder, "decode")
    loop_thread, _ = call()
    assert decodes and loop_thread not in decodes


def fake_receiver() -> Any:
    return SimpleNamespace(
        _RTCRtpReceiver__decoder_queue=queue.Queue(),
        _RTCRtpReceiver__decoder_error=threading.Event(),
        _RTCRtpReceiver__decoder_thread=None,
        track=SimpleNamespace(_queue=asyncio.Queue()),
    )


def test_a_frame_that_does_not_decode_asks_for_a_keyframe_as_aiortc_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = fake_receiver()
    decoder = InlineDecoder(receiver)
    decoder.install()
    with caplog.at_level(logging.WARNING, "client.media.inline_decoder"):
        receiver._RTCRtpReceiver__decoder_queue.put((VP8, JitterFrame(b"\x00" * 10, 0)))
    assert decoder.decode_errors == 1 and receiver._RTCRtpReceiver__decoder_error.is_set()
    assert "failed to decode VP8 frame" in caplog.text
    assert receiver.track._queue.empty()
    # The stop signal still reaches aiortc's thread through the real queue.
    receiver._RTCRtpReceiver__decoder_queue.put(None)
    assert receiver._RTCRtpReceiver__decoder_queue.get_nowait() is None


def test_it_must_come_before_the_receiver_starts() -> None:
    receiver = fake_receiver()
    receiver._RTCRtpReceiver__decoder_thread = threading.Thread(target=lambda: None)
    with pytest.raises(RuntimeError, match="before the receiver starts"):
        InlineDecoder(receiver).install()
    with pytest.raises(IncompatibleAiortcError, match="decoder queue"):
        InlineDecoder(SimpleNamespace(track=None)).install()  # type: ignore[arg-type]


def test_decoding_guard_fires_on_another_aiortc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "1.17.0")
    with pytest.raises(IncompatibleAiortcError, match="1.17.0"):
        check_inline_decoder_hook()


def test_decoding_guard_fires_when_the_decoder_thread_changed_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def decoder_worker(*args: Any) -> Optional[int]:
        return None  # decodes some other way

    monkeypatch.setattr(inline_decoder, "decoder_worker", decoder_worker)
    with pytest.raises(IncompatibleAiortcError, match="decoder_worker"):
        check_inline_decoder_hook()


def test_ffmpegs_vp8_decoder_makes_the_pictures_libvpx_makes() -> None:
    renderer, encoder = BallRenderer(320, 240, 20.0), vpx.Vp8Encoder()
    native, libvpx = NativeVp8Decoder(), vpx.Vp8Decoder()
    for index in range(5):
        frame = renderer.render(50.0 + 7 * index, 60.0)
        frame.pts, frame.time_base = frame_pts(index, 30), TIME_BASE
        payloads, timestamp = encoder.encode(frame)
        data = b"".join(vpx.vp8_depayload(p) for p in payloads)
        [ours] = native.decode(JitterFrame(data, timestamp))
        [theirs] = libvpx.decode(JitterFrame(data, timestamp))
        assert ours.pts == theirs.pts == timestamp
        assert ours.format.name == theirs.format.name == "yuv420p"
        assert (ours.to_ndarray() == theirs.to_ndarray()).all()
    assert isinstance(make_decoder(VP8), NativeVp8Decoder)
    h264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102)
    assert not isinstance(make_decoder(h264), NativeVp8Decoder)
