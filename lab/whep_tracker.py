"""A WHEP tracking client made of a stock aiortc peer: ``/track``'s protocol, from Python.

It does what the browser page does, with aiortc's own receiver (stock jitter
buffer, stock NACKs): POST an offer with a receive-only video section and a
``coordinates`` data channel, detect the ball in each frame, answer with the
frame's RTP timestamp only (no pts), and DELETE the Location at the end.
"""

from __future__ import annotations

import asyncio
import json
from typing import Optional

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from yarl import URL

from client.detection.detector import CentroidDetector
from client.detection.frame_exchange import luma_view
from client.media.wire_timestamps import WireTimestamps
from protocol.coordinates import CHANNEL_LABEL

ENDPOINT = "/api/track/whep"


class WhepTracker:
    def __init__(self, base_url: str) -> None:
        self._base_url = base_url
        self._pc = RTCPeerConnection()
        self._channel = self._pc.createDataChannel(
            CHANNEL_LABEL, ordered=False, maxPacketLifeTime=300
        )
        self._detector = CentroidDetector()
        self._consumer: Optional[asyncio.Task[None]] = None
        self.location: Optional[str] = None
        self.session_id: Optional[str] = None
        self.answers_sent = 0

    async def start(self, http: aiohttp.ClientSession) -> None:
        """Offer; raises ``RuntimeError`` with the status and text unless it gets 201."""
        transceiver = self._pc.addTransceiver("video", direction="recvonly")
        self._pc.on("track", self._consume)
        await self._pc.setLocalDescription(await self._pc.createOffer())
        headers = {"Content-Type": "application/sdp"}
        async with http.post(
            self._base_url + ENDPOINT, data=self._pc.localDescription.sdp, headers=headers
        ) as response:
            if response.status != 201:
                raise RuntimeError(f"{response.status} {await response.text()}")
            self.location = str(response.url.join(URL(response.headers["Location"])))
            self.session_id = response.headers["X-Session-Id"]
            answer = await response.text()
        await self._pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        self._wire_timestamps = WireTimestamps(transceiver.receiver)

    def _consume(self, track: object) -> None:
        async def consume() -> None:
            try:
                while True:
                    frame = await track.recv()  # type: ignore[attr-defined]
                    centre = self._detector.detect(luma_view(frame))
                    rtp_timestamp = self._wire_timestamps.rtp_timestamp(int(frame.pts))
                    if self._channel.readyState == "open" and rtp_timestamp is not None:
                        x, y = centre if centre is not None else (None, None)
                        self._channel.send(
                            json.dumps({"rtp_timestamp": rtp_timestamp, "x": x, "y": y})
                        )
                        self.answers_sent += 1
            except MediaStreamError:
                pass

        self._consumer = asyncio.create_task(consume())

    async def stop(self, http: aiohttp.ClientSession) -> Optional[int]:
        """DELETE the session; the status of that request (None if never started)."""
        status = None
        if self.location is not None:
            async with http.delete(self.location) as response:
                status = response.status
        await self._pc.close()
        if self._consumer is not None:
            self._consumer.cancel()
            await asyncio.gather(self._consumer, return_exceptions=True)
        return status
