"""A client that offers over WHEP: a browser tracking on the console's ``/track`` page.

The browser POSTs an offer with a receive-only video section and its own
``coordinates`` data channel; the server answers with the ball. The HTTP
request waits for the answer (``answer()``), returns it with the session's
resource URL, and a DELETE of that URL is the client's BYE. Anything else
that ends the session (its duration, a failed connection, shutdown) reaches
the browser as the peer connection closing.
"""

from __future__ import annotations

import asyncio
import secrets

from aiortc import RTCPeerConnection, RTCSessionDescription

from server.console.viewer import ViewerError
from server.sessions.offers import rejected_offer
from server.sessions.session import CLIENT_SAID_BYE, ChannelAdopter

#: Random bytes in a resource id: its DELETE URL is the session's capability.
RESOURCE_ID_BYTES = 9


class SessionGone(ViewerError):
    """The session ended before its answer was ready (shutdown, for one)."""


class WhepLink:
    def __init__(self, offer_sdp: str, peer: str) -> None:
        self.resource_id = secrets.token_urlsafe(RESOURCE_ID_BYTES)
        self._offer_sdp = offer_sdp
        self._peer = peer
        self._answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        # Nobody may be left to read a failure (the browser hung up).
        self._answer.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._deleted = asyncio.Event()

    @property
    def peer(self) -> str:
        return f"{self._peer} (WHEP)"

    async def answer(self) -> str:
        """The answer SDP, once the session has made it; raises ``InvalidDescription`` or
        ``SessionGone``."""
        return await asyncio.shield(self._answer)

    def delete(self) -> None:
        """The browser's DELETE: the client is gone."""
        self._deleted.set()

    async def negotiate(
        self, pc: RTCPeerConnection, adopt_channel: ChannelAdopter, timeout: float
    ) -> None:
        # adopt_channel is not needed: the browser's channel arrives on pc.
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=self._offer_sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # aiortc raises whatever a bad offer trips
            if not self._answer.done():
                self._answer.set_exception(rejected_offer(exc))
            raise rejected_offer(exc) from exc
        if not self._answer.done():
            self._answer.set_result(pc.localDescription.sdp)

    async def wait_gone(self) -> str:
        await self._deleted.wait()
        return CLIENT_SAID_BYE

    async def close(self, reason: str) -> None:
        if not self._answer.done():
            self._answer.set_exception(SessionGone(f"the session ended: {reason}"))
