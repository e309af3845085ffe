"""Which path ICE took for a peer connection, and why it found none.

Both programs configure their aiortc peer connections here from the
``IceServer`` list of ``protocol.ice_servers``, and read back the candidate
pair ICE nominated: whether the media goes straight between host (or
server-reflexive) candidates or through a TURN relay, and how this side
reaches its relay. When ICE finds no path, ``ice_failure`` turns what it had
into one line that says where to look.

aiortc exposes neither the nominated pair nor the gathered candidates, so
this reads aioice's ``Connection`` behind the ICE transport (``_connection``
and its ``_nominated`` pairs). Only for reporting: with other names in
another aiortc the path reads as unknown, and nothing else changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from protocol.ice_servers import IceServer, IceUrl

#: An ICE path line names these candidate types (RFC 8445).
CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")


def rtc_configuration(servers: Sequence[IceServer], transport_policy: str) -> RTCConfiguration:
    """aiortc's configuration for ``servers``; never aiortc's default STUN server.

    aiortc uses the first STUN and the first TURN URL it can (UDP or TCP
    TURN, TLS over TCP for turns:) and ignores the rest.
    """
    policy = RTCIceTransportPolicy.RELAY if transport_policy == "relay" else None
    ice_servers = [
        RTCIceServer(list(s.urls), username=s.username, credential=s.credential) for s in servers
    ]
    if policy is None:
        return RTCConfiguration(iceServers=ice_servers)
    return RTCConfiguration(iceServers=ice_servers, iceTransportPolicy=policy)


@dataclass(frozen=True)
class IcePath:
    """The nominated candidate pair, as a report records it."""

    local: str
    remote: str
    #: How this side reaches its own relay (udp, tcp, tls); None when its
    #: candidate is not a relay. A relay on the far side is known only by type.
    relay_transport: Optional[str]

    @property
    def relayed(self) -> bool:
        return "relay" in (self.local, self.remote)

    def describe(self) -> str:
        """``relay (tcp) -> host``: this side first, as the report's readers see it."""
        local = f"{self.local} ({self.relay_transport})" if self.relay_transport else self.local
        return f"{local} -> {self.remote}"

    def as_json(self) -> dict[str, Any]:
        entry = asdict(self)
        entry["path"] = self.describe()
        entry["relayed"] = self.relayed
        return entry


def _connection(pc: RTCPeerConnection) -> Any:
    """aioice's ``Connection`` of ``pc`` (bundled: one for all its media), or None."""
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport or transceiver.sender.transport
        if dtls is not None:
            return getattr(dtls.transport, "_connection", None)
    if pc.sctp is not None:
        return getattr(pc.sctp.transport.transport, "_connection", None)
    return None


def selected_path(pc: RTCPeerConnection) -> Optional[IcePath]:
    """The nominated pair of ``pc``'s first component, or None before (or without) one."""
    connection = _connection(pc)
    nominated = getattr(connection, "_nominated", None)
    if not nominated:
        return None
    pair = nominated[min(nominated)]
    local, remote = pair.local_candidate.type, pair.remote_candidate.type
    transport = None
    if local == "relay":
        transport = "tls" if connection.turn_ssl else connection.turn_transport
    return IcePath(local, remote, transport)


@dataclass(frozen=True)
class CandidateTypes:
    """The kinds of candidates each side had: enough to say why ICE failed."""

    local: tuple[str, ...]
    remote: tuple[str, ...]

    def as_json(self) -> dict[str, list[str]]:
        return {"local": list(self.local), "remote": list(self.remote)}

    def describe(self, peer: str) -> str:
        """``candidates here: host, relay; the server's: host``."""
        local = ", ".join(self.local) or "none"
        remote = ", ".join(self.remote) or "none"
        return f"candidates here: {local}; {peer}'s: {remote}"


def candidate_types(pc: RTCPeerConnection) -> CandidateTypes:
    """Distinct candidate types on each side, in ``CANDIDATE_TYPES`` order."""
    connection = _connection(pc)

    def kinds(candidates: Any) -> tuple[str, ...]:
        present = {c.type for c in candidates or ()}
        return tuple(t for t in CANDIDATE_TYPES if t in present)

    if connection is None:
        return CandidateTypes((), ())
    return CandidateTypes(kinds(connection.local_candidates), kinds(connection.remote_candidates))


def ice_failure(
    candidates: CandidateTypes,
    turn_urls: Sequence[IceUrl],
    waited_s: Optional[float],
    peer: str,
    flags: str = "--ice-server",
) -> str:
    """One line naming ICE: what failed, and where to look.

    ``waited_s`` None: ICE itself gave up; a number: nothing connected in that long.
    """
    when = "failed" if waited_s is None else f"found no path within {waited_s:g} s"
    if turn_urls and "relay" not in candidates.local:
        return (
            f"ICE {when}: the TURN server {turn_urls[0]} gave no relay candidate: "
            f"check its address and credentials ({flags}, --turn-secret or "
            "--ice-username/--ice-credential)"
        )
    line = f"ICE {when} ({candidates.describe(peer)})"
    if "relay" in candidates.local or "relay" in candidates.remote:
        return line + ": a relay was offered but no check got through it; can both sides reach it?"
    return line + f": no direct route; a TURN server both sides reach helps ({flags} turn:...)"
