"""A client on TCP signaling (aiortc's ``TcpSocketSignaling`` wire format).

The server offers, with the ``coordinates`` data channel in the offer: an
answerer cannot add a channel unless the offer has an ``m=application``
section. The client answers; from then on the connection only carries its
BYE (or EOF) and the server's.
"""

from __future__ import annotations

import asyncio

from aiortc import RTCIceCandidate, RTCPeerConnection

from protocol.coordinates import CHANNEL_LABEL
from protocol.signaling import Auth, Bye, SignalingChannel, SignalingError
from server.sessions.offers import MAX_CANDIDATES, check_remote_description
from server.sessions.session import (
    ANSWER_LIFETIME_MS,
    CLIENT_DISCONNECTED,
    CLIENT_SAID_BYE,
    ChannelAdopter,
)

#: How long the server's BYE may take to leave; a client that reads nothing
#: must not hold the session's end up.
BYE_TIMEOUT_S = 1.0


class SignalingLink:
    def __init__(self, channel: SignalingChannel) -> None:
        self._channel = channel

    @property
    def peer(self) -> str:
        return self._channel.peer

    async def negotiate(
        self, pc: RTCPeerConnection, adopt_channel: ChannelAdopter, timeout: float
    ) -> None:
        # Unordered, so one lost answer never holds up the next; retransmitted
        # (SCTP fast retransmit, about three answers later) only while the
        # answer is still fresh, so 5 % loss costs latency on a few frames,
        # not 5 % of the answers.
        adopt_channel(
            pc.createDataChannel(CHANNEL_LABEL, ordered=False, maxPacketLifeTime=ANSWER_LIFETIME_MS)
        )
        await pc.setLocalDescription(await pc.createOffer())
        await self._channel.send(pc.localDescription)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        candidates = 0
        while True:
            message = await self._channel.receive(max(deadline - loop.time(), 0.0))
            if message is None or isinstance(message, Bye):
                raise SignalingError("client left before answering")
            if isinstance(message, Auth):
                continue  # a token sent to a server that asks for none
            if isinstance(message, RTCIceCandidate):
                # Each candidate costs aioice work on the loop every session
                # shares; an honest client has a handful.
                candidates += 1
                if candidates > MAX_CANDIDATES:
                    raise SignalingError(f"more than {MAX_CANDIDATES} ICE candidates")
                await pc.addIceCandidate(message)
                continue
            if message.type != "answer":
                raise SignalingError(f"expected an answer, got {message.type}")
            check_remote_description(message.sdp, "answer")
            await pc.setRemoteDescription(message)
            return

    async def wait_gone(self) -> str:
        while True:
            try:
                message = await self._channel.receive()
            except SignalingError as exc:
                return f"signaling error: {exc}"
            if message is None:
                return CLIENT_DISCONNECTED
            if isinstance(message, Bye):
                return CLIENT_SAID_BYE

    async def close(self, reason: str) -> None:
        if reason not in (CLIENT_SAID_BYE, CLIENT_DISCONNECTED):
            try:
                await asyncio.wait_for(self._channel.send(Bye(reason)), BYE_TIMEOUT_S)
            except (ConnectionError, asyncio.TimeoutError):
                pass
        await self._channel.close()
