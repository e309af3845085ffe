"""The server's and the client's stage tracers, on a real aiortc call in one process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import aiortc
import av
import pytest
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpSender,
    VideoStreamTrack,
)
from aiortc.rtcsctptransport import DataChunk, SackChunk, serialize_packet

import client.media.stage_tracer as client_tracing
import server.media.stage_tracer as server_tracing
from client.media.fast_jitter_buffer import install_fast_jitter_buffer
from client.media.stage_tracer import ClientStageTracer, answered_rtp_timestamps
from client.media.wire_timestamps import WireTimestamps
from protocol.aiortc_internals import IncompatibleAiortcError
from protocol.coordinates import CoordinateReport, decode_report, encode_report
from protocol.stage_trace import (
    STAGE_NAMES,
    StageTrace,
    StageTraceWriter,
    merge_traces,
)
from protocol.wire_clock import VIDEO_TIME_BASE as TIME_BASE
from server.core.ledger import frame_pts
from server.core.renderer import BallRenderer
from server.media.stage_tracer import ServerStageTracer

FRAMES = 20


def sctp_packet(*chunks: Any) -> bytes:
    """Plaintext SCTP packets as aiortc builds them (one chunk each), concatenated chunks."""
    return b"".join(
        serialize_packet(5000, 5000, 1, chunk)[12 if i else 0 :] for i, chunk in enumerate(chunks)
    )


def data_chunk(payload: bytes, protocol: int = 51, flags: int = 0x03) -> DataChunk:
    chunk = DataChunk(flags=flags)
    chunk.tsn, chunk.stream_id, chunk.protocol, chunk.user_data = 7, 1, protocol, payload
    return chunk


ANSWER = encode_report(CoordinateReport(3000, 1.0, 2.0, rtp_timestamp=123_456)).encode()


def test_an_answer_is_found_in_its_sctp_packet() -> None:
    assert answered_rtp_timestamps(sctp_packet(data_chunk(ANSWER))) == [123_456]
    # A SACK before it (padded to 4 bytes), two answers bundled.
    other = encode_report(CoordinateReport(None, None, None, rtp_timestamp=9)).encode()
    packet = sctp_packet(SackChunk(), data_chunk(ANSWER), data_chunk(other))
    assert answered_rtp_timestamps(packet) == [123_456, 9]


@pytest.mark.parametrize(
    "packet",
    [
        sctp_packet(data_chunk(ANSWER, protocol=50)),  # DCEP, not a message
        sctp_packet(data_chunk(ANSWER, flags=0x02)),  # first fragment only
        sctp_packet(data_chunk(b'{"pts": 1, "x": null, "y": null}')),  # no rtp_timestamp
        sctp_packet(data_chunk(b"not json")),
        sctp_packet(SackChunk()),
        b"\x00" * 12 + b"\x00\x03\x00\x00",  # a chunk claiming no length: no endless loop
        b"\x00" * 12 + b"\x00\x03\x00\xff",  # longer than the packet
        b"",
    ],
)
def test_nothing_else_is_taken_for_an_answer(packet: bytes) -> None:
    assert answered_rtp_timestamps(packet) == []


class TracedTrack(VideoStreamTrack):
    """Ball frames at 30 fps, each reported to the server's tracer as the session does."""

    def __init__(self, tracer: ServerStageTracer) -> None:
        super().__init__()
        self._tracer = tracer
        self._renderer = BallRenderer(320, 240, 20.0)
        self._index = 0

    async def recv(self) -> av.VideoFrame:
        await asyncio.sleep(1 / 30)
        frame = self._renderer.render(100.0 + self._index, 120.0)
        frame.pts, frame.time_base = frame_pts(self._index, 30), TIME_BASE
        self._tracer.frame_produced(frame.pts, time.monotonic())
        self._index += 1
        return frame


async def traced_call(server_path: Path, client_path: Path) -> None:
    """A server-like offerer and a client-like answerer, both traced, for FRAMES answers."""
    offerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    server_writer = StageTraceWriter(server_path, "server")
    client_writer = StageTraceWriter(client_path, "client")
    server_tracer = ServerStageTracer(server_writer, "server-session")
    client_tracer: Optional[ClientStageTracer] = None
    answered = asyncio.Event()
    answers = 0

    def on_answer(message: str) -> None:
        nonlocal answers
        report = decode_report(message)
        assert report.pts is not None
        # The pts comes back within a tick (VP8); the session has it exactly.
        server_tracer.answer_received(round(report.pts / 3000) * 3000, time.monotonic())
        answers += 1
        if answers >= FRAMES:
            answered.set()

    try:
        transceiver = offerer.addTransceiver(TracedTrack(server_tracer), direction="sendonly")
        server_tracer.attach(transceiver.sender)
        channel = offerer.createDataChannel("coordinates", ordered=False, maxRetransmits=0)
        channel.on("message", on_answer)
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        receiver = answerer.getTransceivers()[0].receiver
        install_fast_jitter_buffer(receiver)
        wire = WireTimestamps(receiver)
        client_tracer = ClientStageTracer(client_writer, "client-session", wire)
        client_tracer.attach(receiver, answerer.sctp)
        client_channel: asyncio.Future[RTCDataChannel] = asyncio.get_running_loop().create_future()
        answerer.on("datachannel", client_channel.set_result)
        await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(answerer.localDescription)
        back = await asyncio.wait_for(client_channel, 10)
        if back.readyState != "open":
            opened = asyncio.Event()
            back.on("open", opened.set)
            await asyncio.wait_for(opened.wait(), 10)
        track = receiver.track

        async def consume() -> None:
            while True:
                frame = await track.recv()
                pts = int(frame.pts)
                assert client_tracer is not None
                client_tracer.delivered(pts, time.monotonic())
                client_tracer.handed_to_detector(pts, time.monotonic())
                started = time.monotonic()  # a detector that takes no time
                client_tracer.detected(pts, started, time.monotonic())
                rtp = wire.rtp_timestamp(pts)
                back.send(encode_report(CoordinateReport(pts, 1.0, 1.0, rtp_timestamp=rtp)))
                assert rtp is not None
                client_tracer.answer_queued(rtp, time.monotonic())

        consuming = asyncio.create_task(consume())
        try:
            await asyncio.wait_for(answered.wait(), 20)
        finally:
            consuming.cancel()
            await asyncio.gather(consuming, return_exceptions=True)
    finally:
        server_tracer.close()
        if client_tracer is not None:
            client_tracer.close()
        await offerer.close()
        await answerer.close()
        server_writer.close()
        client_writer.close()


def test_a_traced_call_records_every_stage_of_every_answered_frame_in_order(
    tmp_path: Path,
) -> None:
    server_path, client_path = tmp_path / "server.jsonl", tmp_path / "client.jsonl"
    asyncio.run(traced_call(server_path, client_path))
    frames = merge_traces(StageTrace.read(server_path), StageTrace.read(client_path))
    complete = [t for t in frames.values() if set(t) == set(STAGE_NAMES)]
    assert len(complete) >= FRAMES - 2, {rtp: sorted(t) for rtp, t in frames.items()}
    for times in complete:
        path = [times[stage] for stage in STAGE_NAMES]
        assert path == sorted(path), times


def test_the_hooks_are_on_the_objects_and_come_out(tmp_path: Path) -> None:
    async def scenario() -> None:
        offerer, answerer = RTCPeerConnection(), RTCPeerConnection()
        try:
            offerer.addTransceiver("video", direction="sendonly")
            await offerer.setLocalDescription(await offerer.createOffer())
            await answerer.setRemoteDescription(offerer.localDescription)
            receiver = answerer.getTransceivers()[0].receiver
            queue = receiver._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]
            with StageTraceWriter(tmp_path / "c.jsonl", "client") as writer:
                tracer = ClientStageTracer(writer, "c", WireTimestamps(receiver))
                tracer.attach(receiver, None)
                hooked = (vars(receiver), vars(queue), vars(receiver.track._queue))
                assert "_handle_rtp_packet" in hooked[0]
                assert {"_put", "_get"} <= set(hooked[1]) and "put" in hooked[2]
                tracer.close()
                assert "_handle_rtp_packet" not in vars(receiver)
                assert not {"_put", "_get"} & set(vars(queue))
                assert "put" not in vars(receiver.track._queue)
        finally:
            await offerer.close()
            await answerer.close()

    asyncio.run(scenario())


def test_the_server_tracer_ties_packets_to_the_frame_encoded_last(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    with StageTraceWriter(path, "server") as writer:
        tracer = ServerStageTracer(writer, "s")
        tracer._ssrc = 0xABC  # as attach() reads it from the sender

        def packet(timestamp: int, marker: bool, ssrc: int = 0xABC) -> bytes:
            return bytes([0x80, 0x80 * marker | 96]) + (
                (1).to_bytes(2, "big") + timestamp.to_bytes(4, "big") + ssrc.to_bytes(4, "big")
            )

        for pts, rtp, base in ((0, 1_000, 1.0), (3000, 4_000, 2.0)):
            tracer.frame_produced(pts, base)
            tracer._encoded.append((pts, base + 0.001, base + 0.002))  # the encoder thread
            tracer.packet_sent(packet(rtp, False), base + 0.003)
            tracer.packet_sent(packet(rtp, False, ssrc=0xDEF), base + 0.0035)  # RTX: ignored
            tracer.packet_sent(packet(rtp, True), base + 0.004)
        tracer.packet_sent(packet(1_000, True), 3.0)  # a late resend without RTX: ignored
        tracer.answer_received(0, 1.01)
        tracer.answer_received(3000, 2.01)
        tracer.close()
    frames = StageTrace.read(path).frames
    assert frames[1_000].times == {
        "produced": 1.0,
        "encode_start": 1.001,
        "encode_end": 1.002,
        "first_packet_sent": 1.003,
        "last_packet_sent": 1.004,
        "answer_received": 1.01,
    }
    assert frames[4_000].times["first_packet_sent"] == 2.003


def test_guards_fire_on_another_aiortc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "1.17.0")
    for check in (server_tracing.check_tracer_hooks, client_tracing.check_tracer_hooks):
        with pytest.raises(IncompatibleAiortcError, match="1.17.0"):
            check()


def test_server_guard_fires_when_the_sender_changed_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    async def _run_rtp(self: RTCRtpSender, codec: object) -> None:
        await self.transport._send_data(b"")  # no _next_encoded_frame, no _send_rtp

    monkeypatch.setattr(RTCRtpSender, "_run_rtp", _run_rtp)
    with pytest.raises(IncompatibleAiortcError, match="_next_encoded_frame"):
        server_tracing.check_tracer_hooks()


def test_client_guard_fires_when_the_decoder_changed_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_tracing, "decoder_worker", lambda *args: None)
    with pytest.raises(IncompatibleAiortcError, match="decoder_worker"):
        client_tracing.check_tracer_hooks()


def test_a_receiver_without_its_queues_is_refused(tmp_path: Path) -> None:
    with StageTraceWriter(tmp_path / "c.jsonl", "client") as writer:
        tracer = ClientStageTracer(writer, "c", SimpleNamespace())  # type: ignore[arg-type]
        with pytest.raises(IncompatibleAiortcError, match="decoder queue"):
            tracer.attach(SimpleNamespace(track=None), None)  # type: ignore[arg-type]


def test_tracing_warns_when_the_peer_is_on_another_host(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with StageTraceWriter(tmp_path / "s.jsonl", "server") as writer:
        tracer = ServerStageTracer(writer, "s")
        tracer.warn_unless_local("127.0.0.1:40000")
        ClientStageTracer.warn_unless_local("localhost")
        assert not caplog.records
        tracer.warn_unless_local("192.0.2.1:40000")
        ClientStageTracer.warn_unless_local("192.0.2.1")
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
    assert all("only the round trip" in r.getMessage() for r in caplog.records)
