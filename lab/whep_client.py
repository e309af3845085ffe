"""A WHEP player made of a stock aiortc peer: the console's protocol, from Python.

Tests and bench/viewers.py watch sessions with it exactly as any WHEP player
would: POST an SDP offer, get 201 with the answer and a Location, DELETE it.

Run as a program (``python -m lab.whep_client BASE_URL``) it watches the
first live session with the ICE servers it learns from the ``Link`` headers
of the endpoint's ``OPTIONS`` response, and nothing else (aiortc does not
trickle, so it needs them before its offer), then prints what it got as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, Optional, Sequence

import aiohttp
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from yarl import URL

from protocol.ice_path import selected_path
from protocol.ice_servers import IceServer, parse_link_headers


class WhepViewer:
    """A stock aiortc peer that watches one session over WHEP and decodes it."""

    def __init__(self, endpoint: str, configuration: Optional[RTCConfiguration] = None) -> None:
        self._endpoint = endpoint
        self._pc = RTCPeerConnection(configuration)
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


async def ice_servers_from_options(http: aiohttp.ClientSession, endpoint: str) -> list[IceServer]:
    """The ICE servers in the ``Link`` headers of the endpoint's ``OPTIONS`` response."""
    async with http.options(endpoint) as response:
        if response.status not in (200, 204):
            raise RuntimeError(f"OPTIONS: {response.status} {await response.text()}")
        return parse_link_headers(response.headers.getall("Link", []))


async def watch_first_live_session(base_url: str, seconds: float, relay: bool) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async with http.get(f"{base_url}/api/sessions") as response:
            live = [s for s in (await response.json())["sessions"] if s["state"] == "live"]
        if not live:
            raise RuntimeError("no live session to watch")
        endpoint = f"{base_url}/api/sessions/{live[0]['id']}/whep"
        servers = await ice_servers_from_options(http, endpoint)
        configuration = RTCConfiguration(
            iceServers=[RTCIceServer(list(s.urls), s.username, s.credential) for s in servers],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY if relay else RTCIceTransportPolicy.ALL,
        )
        viewer = WhepViewer(endpoint, configuration)
        await viewer.start(http)
        await asyncio.sleep(seconds)
        path = selected_path(viewer._pc)
        frames, frame_size = viewer.frames, viewer.frame_size
        status = await viewer.stop(http)
        return {
            "ice_servers": [s.as_json() for s in servers],
            "frames": frames,
            "frame_size": frame_size,
            "ice": path.as_json() if path is not None else None,
            "delete_status": status,
        }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Watch the first live session over WHEP.")
    parser.add_argument("base_url", help="the console, e.g. http://ball-server:8080")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--relay", action="store_true", help="iceTransportPolicy relay")
    args = parser.parse_args(argv)
    result = asyncio.run(watch_first_live_session(args.base_url, args.seconds, args.relay))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
