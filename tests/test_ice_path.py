"""protocol/ice_path.py: aiortc's configuration, the nominated pair, the failure line."""

from __future__ import annotations

import asyncio
from typing import Optional

from aiortc import RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from protocol.ice_path import (
    CandidateTypes,
    IcePath,
    candidate_types,
    ice_failure,
    rtc_configuration,
    selected_path,
)
from protocol.ice_servers import IceServer, parse_ice_url

TURN = parse_ice_url("turn:relay.example?transport=tcp")


def test_rtc_configuration_never_falls_back_to_aiortcs_default_stun() -> None:
    empty = rtc_configuration([], "all")
    assert empty.iceServers == []  # None would mean stun.l.google.com
    relay = rtc_configuration([IceServer((str(TURN),), "u", "p")], "relay")
    assert relay.iceTransportPolicy == RTCIceTransportPolicy.RELAY
    (server,) = relay.iceServers
    assert (server.urls, server.username, server.credential) == ([str(TURN)], "u", "p")


def test_path_descriptions() -> None:
    assert IcePath("relay", "host", "tcp").describe() == "relay (tcp) -> host"
    direct = IcePath("host", "srflx", None)
    assert direct.describe() == "host -> srflx" and not direct.relayed
    assert IcePath("host", "relay", None).as_json() == {
        "local": "host",
        "remote": "relay",
        "relay_transport": None,
        "path": "host -> relay",
        "relayed": True,
    }


def test_a_turn_server_without_a_relay_candidate_is_named() -> None:
    line = ice_failure(CandidateTypes(("host",), ("host",)), [TURN], 5.0, "the server")
    assert line.startswith("ICE found no path within 5 s: the TURN server ")
    assert str(TURN) in line and "check its address and credentials" in line


def test_no_route_and_no_turn() -> None:
    line = ice_failure(CandidateTypes(("host",), ("host", "srflx")), [], None, "the server")
    assert line.startswith("ICE failed (candidates here: host; the server's: host, srflx)")
    assert "--ice-server turn:" in line


def test_a_relay_that_no_check_got_through() -> None:
    line = ice_failure(CandidateTypes(("host", "relay"), ()), [TURN], 3.0, "the client")
    assert "the client's: none" in line and "can both sides reach it?" in line


def test_a_real_pair_on_loopback_reports_host_to_host() -> None:
    async def main() -> tuple[Optional[IcePath], Optional[IcePath], CandidateTypes]:
        offerer = RTCPeerConnection(rtc_configuration([], "all"))
        answerer = RTCPeerConnection(rtc_configuration([], "all"))
        try:
            offerer.createDataChannel("x")
            assert selected_path(offerer) is None  # nothing gathered yet
            await offerer.setLocalDescription(await offerer.createOffer())
            await answerer.setRemoteDescription(offerer.localDescription)
            await answerer.setLocalDescription(await answerer.createAnswer())
            await offerer.setRemoteDescription(answerer.localDescription)
            for _ in range(100):
                if offerer.connectionState == "connected":
                    break
                await asyncio.sleep(0.05)
            return selected_path(offerer), selected_path(answerer), candidate_types(offerer)
        finally:
            await offerer.close()
            await answerer.close()

    offered, answered, types = asyncio.run(main())
    for path in (offered, answered):
        assert path is not None and path.local == "host" and not path.relayed, path
        # A check that arrives before the far side's candidates were taken
        # in makes a peer-reflexive one of the same address.
        assert path.remote in ("host", "prflx"), path
        assert path.relay_transport is None
    assert types == CandidateTypes(("host",), ("host",))
