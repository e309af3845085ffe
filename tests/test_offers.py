"""check_remote_description: SDP that aiortc would accept and then fail on."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCPeerConnection

from server.sessions.offers import MAX_CANDIDATES, InvalidDescription, check_remote_description


def real_offer() -> str:
    async def offer() -> str:
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    return asyncio.run(offer())


def test_a_real_description_passes() -> None:
    description = check_remote_description(real_offer(), "offer")
    assert [m.kind for m in description.media] == ["video"]


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("a=fingerprint:", "the offer's video section has no DTLS fingerprint and role"),
        ("a=setup:", "the offer's video section has no DTLS fingerprint and role"),
        ("a=ice-ufrag:", "the offer's video section has no ICE credentials"),
        ("a=ice-pwd:", "the offer's video section has no ICE credentials"),
    ],
)
def test_missing_transport_parameters_are_named(drop: str, message: str) -> None:
    sdp = "\r\n".join(line for line in real_offer().split("\r\n") if not line.startswith(drop))
    with pytest.raises(InvalidDescription, match=message):
        check_remote_description(sdp, "offer")


@pytest.mark.parametrize("sdp", ["", "garbage", "v=0\r\nm=video x\r\n", "v=0\r\n"])
def test_malformed_or_empty_descriptions_are_refused(sdp: str) -> None:
    with pytest.raises(InvalidDescription):
        check_remote_description(sdp, "answer")


def test_a_description_with_too_many_candidates_is_refused_before_parsing() -> None:
    flood = "v=0\r\n" + "".join(
        f"a=candidate:{i} 1 udp 1 127.0.0.3 {10000 + i} typ host\r\n"
        for i in range(MAX_CANDIDATES + 1)
    )
    with pytest.raises(InvalidDescription, match=f"{MAX_CANDIDATES + 1} ICE candidates"):
        check_remote_description(flood, "answer")
