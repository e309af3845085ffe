"""A WHEP player made of a stock aiortc peer: the console's protocol, from Python.

Tests and bench/viewers.py watch sessions with it exactly as any WHEP player
would: POST an SDP offer, get 201 with the answer and a Location, DELETE it.
"""

from __future__ import annotations

import asyncio
from typing import Optional

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from yarl import URL


class WhepViewer:
    """A stock aiortc peer that watches one session over WHEP and decodes it."""

    def __init__(self, endpoint: str) -> None:
        self._endpoint = endpoint
        self._pc = RTCPeerConnection()
        self._location: Optional[str] = None
        self._consumer: Optional[asyncio.Task[None]] = None
        self.frames = 0
        self.frame_size: Optional[tuple[int, int]] = None

    async def start(self, http: aiohttp.ClientSession) -> None:
        self._pc.addTransceiver("video", direction="recvonly")
        self._pc.on("track", lambda track: self._consume(track))
        await self._pc.setLocalDescription(await self._pc.createOffer())
        headers = {"Content-Type": "application/sdp"}
        async with http.post(
            self._endpoint, data=self._pc.localDescription.sdp, headers=headers
        ) as response:
            if response.status != 201:
                raise RuntimeError(f"WHEP: {response.status} {await response.text()}")
            self._location = str(response.url.join(URL(response.headers["Location"])))
            answer = await response.text()
        await self._pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    def _consume(self, track: object) -> None:
        async def consume() -> None:
            try:
                while True:
                    frame = await track.recv()  # type: ignore[attr-defined]
                    self.frame_size = (frame.width, frame.height)
                    self.frames += 1
            except MediaStreamError:
                pass

        self._consumer = asyncio.create_task(consume())

    async def stop(self, http: aiohttp.ClientSession) -> Optional[int]:
        """DELETE the viewer; the status of that request (None if never started)."""
        status = None
        if self._location is not None:
            async with http.delete(self._location) as response:
                status = response.status
        await self._pc.close()
        if self._consumer is not None:
            self._consumer.cancel()
        return status

    async def delete_again(self, http: aiohttp.ClientSession) -> int:
        """DELETE the same Location once more: the resource is gone."""
        assert self._location is not None
        async with http.delete(self._location) as response:
            return response.status
