"""The signaling contract, checked against aiortc's own serialisation both ways."""

import asyncio
import json
import time
from typing import cast

import pytest
from aiortc import RTCSessionDescription
from aiortc.contrib.signaling import BYE, object_from_string, object_to_string
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.signaling import (
    MAX_LINE_BYTES,
    Auth,
    Bye,
    SignalingChannel,
    SignalingError,
    decode_message,
    encode_message,
)

SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
CANDIDATE = {
    "candidate": "candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host",
    "id": "0",
    "label": 0,
    "type": "candidate",
}


@pytest.mark.parametrize("kind", ["offer", "answer"])
def test_description_bytes_equal_aiortc(kind: str) -> None:
    description = RTCSessionDescription(sdp=SDP, type=kind)
    assert encode_message(description) == object_to_string(description).encode() + b"\n"
    assert decode_message(encode_message(description)) == description


def test_we_read_what_aiortc_writes() -> None:
    for obj in (RTCSessionDescription(sdp=SDP, type="offer"), BYE):
        decoded = decode_message(object_to_string(obj).encode() + b"\n")
        if obj is BYE:
            assert decoded == Bye()
        else:
            assert decoded == obj


def test_aiortc_reads_what_we_write_including_bye_with_reason() -> None:
    assert object_from_string(encode_message(Bye()).decode()) is BYE
    assert object_from_string(encode_message(Bye("server busy")).decode()) is BYE
    offer = RTCSessionDescription(sdp=SDP, type="offer")
    assert object_from_string(encode_message(offer).decode()) == offer


def test_candidate_round_trip_matches_aiortc() -> None:
    line = json.dumps(CANDIDATE, sort_keys=True).encode() + b"\n"
    ours = decode_message(line)
    theirs = object_from_string(line.decode())
    assert ours == theirs
    assert encode_message(ours) == object_to_string(theirs).encode() + b"\n"


def test_bye_reason_survives() -> None:
    assert decode_message(encode_message(Bye("full"))) == Bye("full")


@pytest.mark.parametrize(
    "line",
    [
        b"garbage\n",
        b"\xff\xfe\n",
        b"[1, 2]\n",
        b'{"type": "hello"}\n',
        b'{"type": "offer"}\n',
        b'{"type": "offer", "sdp": 5}\n',
        b'{"type": "answer", "sdp": "not sdp"}\n',
        b'{"type": "candidate", "candidate": "nonsense"}\n',
        b'{"type": "candidate", "candidate": "candidate:1 x"}\n',
        b"{}\n",
    ],
)
def test_garbage_raises_signaling_error(line: bytes) -> None:
    with pytest.raises(SignalingError):
        decode_message(line)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_fuzz_decode_only_raises_signaling_error(line: bytes) -> None:
    try:
        decode_message(line)
    except SignalingError:
        pass


async def _pair() -> tuple[SignalingChannel, asyncio.StreamWriter, asyncio.AbstractServer]:
    accepted: asyncio.Future[SignalingChannel] = asyncio.get_running_loop().create_future()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(SignalingChannel(reader, writer))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0, limit=MAX_LINE_BYTES)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    return await accepted, writer, server


def test_channel_over_tcp_eof_long_lines_and_timeouts() -> None:
    async def scenario() -> None:
        channel, raw, server = await _pair()
        raw.write(encode_message(Bye("x")))
        assert await channel.receive(1.0) == Bye("x")
        with pytest.raises(asyncio.TimeoutError):
            await channel.receive(0.05)
        raw.write(b"a" * (MAX_LINE_BYTES + 10))
        with pytest.raises(SignalingError):
            await channel.receive(1.0)
        await channel.close()
        raw.close()
        server.close()

        channel, raw, server = await _pair()
        raw.write(b'{"type": "by')
        raw.close()
        with pytest.raises(SignalingError):
            await channel.receive(1.0)
        await channel.close()

        channel, raw, server2 = await _pair()
        raw.close()
        assert await channel.receive(1.0) is None
        await channel.close()
        server.close()
        server2.close()

    asyncio.run(scenario())


def test_receive_bye_skips_other_messages_and_takes_eof_for_bye() -> None:
    async def scenario() -> None:
        channel, raw, server = await _pair()
        raw.write(encode_message(RTCSessionDescription(sdp=SDP, type="offer")))
        raw.write(encode_message(Bye("done")))
        assert await asyncio.wait_for(channel.receive_bye(), 1.0) == Bye("done")
        raw.close()
        assert await asyncio.wait_for(channel.receive_bye(), 1.0) is None
        await channel.close()
        server.close()

    asyncio.run(scenario())


def test_channel_talks_to_aiortc_tcp_socket_signaling() -> None:
    """aiortc's own client reads our offer and we read its answer."""
    from aiortc.contrib.signaling import TcpSocketSignaling

    async def scenario() -> None:
        sent: asyncio.Future[SignalingChannel] = asyncio.get_running_loop().create_future()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            channel = SignalingChannel(reader, writer)
            await channel.send(RTCSessionDescription(sdp=SDP, type="offer"))
            sent.set_result(channel)

        server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        theirs = TcpSocketSignaling("127.0.0.1", server.sockets[0].getsockname()[1])
        assert await theirs.receive() == RTCSessionDescription(sdp=SDP, type="offer")
        await theirs.send(RTCSessionDescription(sdp=SDP, type="answer"))
        ours = await sent
        assert await ours.receive(1.0) == RTCSessionDescription(sdp=SDP, type="answer")
        await theirs.close()  # sends BYE
        assert await ours.receive(1.0) == Bye()
        await ours.close()
        server.close()

    asyncio.run(scenario())


def test_bye_bytes_are_sorted_like_aiortcs() -> None:
    assert encode_message(Bye("full")) == b'{"reason": "full", "type": "bye"}\n'
    assert encode_message(Bye()) == b'{"type": "bye"}\n'


def test_a_bye_reason_that_is_not_text_is_dropped() -> None:
    assert decode_message(b'{"type": "bye", "reason": 5}\n') == Bye()


def test_ipv6_candidate_round_trip_matches_aiortc() -> None:
    ipv6 = dict(CANDIDATE, candidate="candidate:1 1 udp 2130706431 2001:db8::1 5000 typ host")
    line = json.dumps(ipv6, sort_keys=True).encode() + b"\n"
    ours = decode_message(line)
    assert ours == object_from_string(line.decode())
    assert ours.ip == "2001:db8::1" and ours.port == 5000


@pytest.mark.parametrize(
    "line,reason",
    [
        (b"garbage\n", "not JSON: Expecting value"),
        (b"[1, 2]\n", "not a JSON object"),
        (b'{"type": "hello"}\n', "unknown message type 'hello'"),
        (b'{"type": "answer", "sdp": "not sdp"}\n', "answer without a valid sdp"),
        (b'{"type": "candidate", "candidate": 5}\n', "candidate without a candidate line"),
        (b'{"type": "candidate", "candidate": "nonsense"}\n', "candidate without a candidate line"),
        (b'{"type": "candidate", "candidate": "candidate:1 x"}\n', "bad candidate: "),
    ],
)
def test_each_rejection_says_why(line: bytes, reason: str) -> None:
    with pytest.raises(SignalingError) as caught:
        decode_message(line)
    assert str(caught.value).startswith(reason)  # json's or aiortc's words may follow
    assert "None" not in str(caught.value)


class _FakeWriter:
    """Just enough of a StreamWriter to name a peer."""

    def __init__(self, peer: object) -> None:
        self._peer = peer

    def get_extra_info(self, name: str) -> object:
        return self._peer if name == "peername" else None


def channel_with_peer(peer: object) -> SignalingChannel:
    reader = cast(asyncio.StreamReader, None)  # never read: the writer names the peer
    return SignalingChannel(reader, cast(asyncio.StreamWriter, _FakeWriter(peer)))


def test_channel_names_its_peer() -> None:
    assert channel_with_peer(("192.0.2.7", 4242)).peer == "192.0.2.7:4242"
    assert channel_with_peer("/run/signaling.sock").peer == "/run/signaling.sock"


def test_connect_bounds_lines() -> None:
    async def scenario() -> None:
        accepted: asyncio.Future[asyncio.StreamWriter] = asyncio.get_running_loop().create_future()

        async def on_client(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.set_result(writer)

        # Not the default address: the host argument must reach the socket.
        server = await asyncio.start_server(on_client, "127.0.0.2", 0)
        port = server.sockets[0].getsockname()[1]
        channel = await SignalingChannel.connect("127.0.0.2", port)
        assert channel.peer == f"127.0.0.2:{port}"
        raw = await accepted
        raw.write(encode_message(Bye("hello")))
        assert await channel.receive(1.0) == Bye("hello")
        raw.write(b"a" * (MAX_LINE_BYTES + 10))
        with pytest.raises(SignalingError, match=f"^line longer than {MAX_LINE_BYTES} bytes$"):
            await channel.receive(1.0)
        await channel.close()
        raw.close()
        server.close()

    asyncio.run(scenario())


def test_a_line_cut_by_the_peer_says_so() -> None:
    async def scenario() -> None:
        channel, raw, server = await _pair()
        raw.write(b'{"type": "by')
        raw.close()
        with pytest.raises(SignalingError, match="^connection closed mid-line$"):
            await channel.receive(1.0)
        await channel.close()
        server.close()

    asyncio.run(scenario())


def test_close_gives_up_after_a_second_on_a_peer_that_never_reads() -> None:
    async def scenario() -> None:
        channel, raw, server = await _pair()
        channel._writer.write(b"x" * (32 << 20))  # more than the kernel buffers hold
        started = time.monotonic()
        await asyncio.wait_for(channel.close(), 5.0)
        assert 0.9 < time.monotonic() - started < 1.8
        raw.close()
        server.close()

    asyncio.run(scenario())


def test_auth_round_trips_and_never_shows_its_token() -> None:
    line = encode_message(Auth("s3cret"))
    assert json.loads(line) == {"token": "s3cret", "type": "auth"}
    assert decode_message(line) == Auth("s3cret")
    assert "s3cret" not in repr(Auth("s3cret"))
    with pytest.raises(SignalingError, match="auth without a token"):
        decode_message(b'{"type": "auth", "token": 7}\n')
