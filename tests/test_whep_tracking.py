"""Tracking over WHEP (``/api/track/whep``), end to end, with a stock aiortc peer.

The real server runs as a process with its HTTP port on. The tracker is what
the browser page does, made of aiortc's stock receiver: its answers name
frames by RTP timestamp only, so these tests also show that the server maps
wire timestamps through its sender's origin. The browser itself is in
``test_track_page.py``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from lab.programs import Program, free_port, start_client, start_server, wait_for_reports
from lab.whep_tracker import ENDPOINT, WhepTracker
from tests.test_faults import wait_until

pytestmark = pytest.mark.e2e

HANDSHAKE_TIMEOUT_S = 3.0


class Server(NamedTuple):
    program: Program
    signaling_port: int
    base_url: str
    report_dir: Path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A server with one session slot, so WHEP and TCP clients compete for it."""
    http_port, signaling_port = free_port(), free_port()
    program = start_server(
        signaling_port,
        "--max-sessions",
        "1",
        "--handshake-timeout",
        f"{HANDSHAKE_TIMEOUT_S:g}",
        "--report-dir",
        str(tmp_path),
        http_port=http_port,
    )
    program.wait_for_output("console on", timeout=30)
    try:
        yield Server(program, signaling_port, f"http://127.0.0.1:{http_port}", tmp_path)
    finally:
        program.close()


async def sessions(http: aiohttp.ClientSession, server: Server) -> list[dict[str, Any]]:
    async with http.get(server.base_url + "/api/sessions") as response:
        rows: list[dict[str, Any]] = (await response.json())["sessions"]
        return rows


async def post_offer(
    http: aiohttp.ClientSession, server: Server, body: str, content_type: str = "application/sdp"
) -> tuple[int, str]:
    headers = {"Content-Type": content_type}
    async with http.post(server.base_url + ENDPOINT, data=body, headers=headers) as response:
        return response.status, await response.text()


def test_a_whep_client_is_tracked_scored_listed_and_reported(server: Server) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as http:
            tracker = WhepTracker(server.base_url)
            await tracker.start(http)
            await asyncio.sleep(3.0)
            rows = await sessions(http, server)
            assert await tracker.stop(http) == 200
            assert tracker.answers_sent > 60
            async with http.delete(str(tracker.location)) as again:
                assert again.status == 404
            return rows

    rows = asyncio.run(scenario())
    assert [(r["state"], r["peer"].endswith("(WHEP)")) for r in rows] == [("live", True)]
    report = wait_for_reports(server.report_dir, 1)[0]
    assert report["session"] == rows[0]["id"]
    assert report["end_reason"] == "client said bye"
    assert report["invalid_messages"] == 0, report["invalid_by_reason"]
    # Answers by RTP timestamp alone hit their very frames...
    assert report["error_px"]["mean"] < 0.1, report["error_px"]
    # ...and nearly all of them: stock aiortc holds the last frame back.
    assert report["answered_ratio"] >= 0.9, report


def test_whep_and_tcp_clients_share_the_session_slots(server: Server) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            tracker = WhepTracker(server.base_url)
            await tracker.start(http)
            try:
                # The one slot is the WHEP client's: a TCP client is refused...
                client = start_client(server.signaling_port, "--connect-timeout", "5")
                try:
                    assert await asyncio.to_thread(client.wait, 30) == 3, client.describe()
                    assert "server busy: 1 sessions active" in client.stderr
                finally:
                    client.close()
                # ...and so is a second browser.
                second = WhepTracker(server.base_url)
                with pytest.raises(RuntimeError, match="503 server busy"):
                    await second.start(http)
                await second.stop(http)
            finally:
                await tracker.stop(http)
            # Freed, the slot takes a TCP client, and then a browser is refused.
            client = start_client(server.signaling_port, "--duration", "3")
            try:
                server.program.wait_for_output("streaming to", timeout=20, count=2)
                status, text = await post_offer(http, server, await _offer())
                assert (status, text) == (503, "server busy: 1 sessions active\n")
                assert await asyncio.to_thread(client.wait, 30) == 0, client.describe()
            finally:
                client.close()

    asyncio.run(scenario())
    reasons = [r["end_reason"] for r in wait_for_reports(server.report_dir, 2)]
    assert sorted(reasons) == ["client said bye", "client said bye"]


async def _offer(*, data_channel: bool = True, video: str = "recvonly") -> str:
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("video", direction=video)
        if data_channel:
            pc.createDataChannel("coordinates")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


def test_bad_offers_get_a_clear_error_and_start_no_session(server: Server) -> None:
    async def scenario() -> list[tuple[int, str]]:
        async with aiohttp.ClientSession() as http:
            answers = [
                await post_offer(http, server, await _offer(), content_type="text/plain"),
                await post_offer(http, server, "v=0\r\nthis is not sdp\r\n"),
                await post_offer(http, server, await _offer(data_channel=False)),
                await post_offer(http, server, await _offer(video="sendonly")),
                await post_offer(http, server, ""),
            ]
            assert await sessions(http, server) == []
            async with http.delete(server.base_url + ENDPOINT + "/nonsense") as response:
                answers.append((response.status, await response.text()))
            return answers

    answers = asyncio.run(scenario())
    assert answers == [
        (415, "the offer must be application/sdp\n"),
        (400, answers[1][1]),
        (400, "the offer has no data channel (m=application) for the answers\n"),
        (400, "the offer has no video section that can receive (recvonly or sendrecv)\n"),
        (400, "the offer is empty\n"),
        (404, "no such tracking session\n"),
    ]
    assert answers[1][1].startswith("the offer "), answers[1]  # aiortc's parser is lenient
    assert list(server.report_dir.glob("session-*.json")) == []
    assert "Traceback" not in server.program.stderr


def test_a_browser_that_never_connects_frees_its_slot(server: Server) -> None:
    async def scenario() -> float:
        async with aiohttp.ClientSession() as http:
            status, _ = await post_offer(http, server, await _offer())
            assert status == 201
            posted = time.monotonic()
            while any(r["state"] == "live" for r in await sessions(http, server)):
                assert time.monotonic() - posted < 20
                await asyncio.sleep(0.1)
            return time.monotonic() - posted

    freed_after = asyncio.run(scenario())
    # It never streamed a frame, so it leaves no report files, only the
    # summary the server prints for every session.
    assert wait_until(lambda: bool(server.program.json_documents()), 10)
    [report] = server.program.json_documents()
    assert list(server.report_dir.glob("session-*")) == []
    # It names ICE: no candidate pair came up (the timeout), or ICE gave up first.
    assert report["end_reason"].startswith(
        (f"ICE found no path within {HANDSHAKE_TIMEOUT_S:g} s", "ICE failed")
    ), report
    assert report["ice"]["path"] is None, report
    assert freed_after < HANDSHAKE_TIMEOUT_S + 2.0
