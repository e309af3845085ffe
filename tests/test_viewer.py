"""Browser viewers (server/console/viewer.py) against a stock aiortc peer standing in for the browser.

The peer does what a WHEP player does: a recvonly video transceiver, an offer
with every candidate in it, the answer applied. ``SessionViewers.open`` is
called directly; the HTTP layer has tests of its own. Every test checks that
what it opened is gone afterwards: no viewer counted, no asyncio task left.
"""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Callable, Optional

import aioice.ice
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lab.own_resources import open_fds
from protocol.coordinates import CoordinateReport, encode_report
from server.console.annotation import text_band
from server.console.viewer import (
    SessionViewers,
    ViewerClosed,
    ViewerLimitReached,
    ViewerTrack,
)
from server.core.ledger import FrameRecord, frame_pts
from server.core.scene import BallScene
from server.core.scenes import Scene, make_scene
from server.core.scenes.occlusion import OcclusionScene
from server.sessions.offers import InvalidDescription, receiving_video_mid
from server.sessions.session import SessionConfig, TrackingSession

pytestmark = pytest.mark.timeout(60)

WIDTH, HEIGHT = 320, 240
TRUTH = (100.0, 150.0)
REPORTED = (200.0, 170.0)


@dataclass
class FakeSession:
    """Exactly what a viewer may read of a TrackingSession."""

    name: str = "session-20261127T120000-0001"
    fps: float = 30.0
    recent_answers: deque[FrameRecord] = field(default_factory=lambda: deque(maxlen=900))
    end_reason: Optional[str] = None
    scene_name: str = "classic"
    picture: Scene = field(init=False)

    def __post_init__(self) -> None:
        motion = BallScene(WIDTH, HEIGHT, 20.0, 300.0, 160.0, 120.0, 0.6)
        self.picture = make_scene(self.scene_name, motion, self.fps, 1)

    def answer(
        self, truth: tuple[float, float], reported: Optional[tuple[float, float]]
    ) -> FrameRecord:
        """Append an answered frame, as TrackingSession does when an answer arrives."""
        index = self.recent_answers[-1].index + 1 if self.recent_answers else 0
        record = FrameRecord(index, frame_pts(index, self.fps), *truth, time.monotonic(), True)
        if reported is not None:
            record.reported_x, record.reported_y = reported
            record.error_px = float(np.hypot(reported[0] - truth[0], reported[1] - truth[1]))
        record.latency_ms = 7.0
        self.recent_answers.append(record)
        return record


class Browser:
    """A stock aiortc peer that receives a viewer's video, keeping the newest frame."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly")
        self.frames: list = []
        self.count = 0
        self.ended = asyncio.Event()
        self._reader: Optional[asyncio.Task[None]] = None
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._reader = asyncio.create_task(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                self.frames.append(await track.recv())
                self.count += 1
                del self.frames[:-5]  # keep memory flat
        except MediaStreamError:
            self.ended.set()

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer_sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))

    async def frame_after(self, count: int, timeout: float = 10.0):
        """The newest frame once ``count`` more frames have arrived."""
        start = self.count
        await wait_until(lambda: self.count >= start + count, timeout)
        return self.frames[-1]

    async def close(self) -> None:
        await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


async def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def no_tasks_but(before: set[asyncio.Task], timeout: float = 3.0) -> None:
    """Every task started since ``before`` has finished (aiortc ends some late)."""
    await wait_until(lambda: not (asyncio.all_tasks() - before), timeout)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run a scenario, then check it left no task and no file descriptor behind."""

    async def checked() -> None:
        before, fds_before = asyncio.all_tasks(), open_fds()
        await scenario()
        await no_tasks_but(before)
        await wait_until(lambda: open_fds() <= fds_before, 3.0)

    asyncio.run(checked())


async def open_viewer(viewers: SessionViewers, session: FakeSession) -> tuple[Browser, str]:
    browser = Browser()
    viewer = await viewers.open(session, await browser.offer())
    await browser.accept(viewer.answer_sdp)
    return browser, viewer.id


def picture(frame) -> np.ndarray:
    return frame.to_ndarray(format="bgr24")


def colour_at(image: np.ndarray, point: tuple[float, float]) -> np.ndarray:
    x, y = point
    return image[round(y), round(x)].astype(int)


def is_green(pixel: np.ndarray) -> bool:
    blue, green, red = pixel
    return green > 180 and blue < 90 and red < 90


def is_red(pixel: np.ndarray) -> bool:
    blue, green, red = pixel
    return red > 180 and blue < 90 and green < 90


def coloured(image: np.ndarray) -> int:
    """Pixels that are clearly not grey: marks and trails, not ball or text."""
    spread = image.max(axis=2).astype(int) - image.min(axis=2).astype(int)
    return int((spread > 80).sum())


# ---------------------------------------------------------------- the picture


def test_viewer_shows_ball_truth_and_answer_of_the_newest_answered_frame() -> None:
    async def scenario() -> None:
        session = FakeSession()
        session.answer((90.0, 140.0), (91.0, 141.0))
        newest = session.answer(TRUTH, REPORTED)
        viewers = SessionViewers()
        browser, _ = await open_viewer(viewers, session)
        # Past the first frames, while the encoder's rate control settles.
        frame = await browser.frame_after(10)
        image = picture(frame)
        assert image.shape == (HEIGHT, WIDTH, 3)
        assert frame.pts % 3000 in (0, 2999)  # 30 fps on the 90 kHz clock
        assert is_green(colour_at(image, TRUTH)), colour_at(image, TRUTH)
        assert is_red(colour_at(image, REPORTED)), colour_at(image, REPORTED)
        # The ball is the scene's of that frame, not where the scene is now.
        ball = session.picture.truth(newest.index)
        assert (colour_at(image, (ball.x, ball.y + 13)) > 200).all()
        assert (colour_at(image, (ball.x + 13, ball.y)) > 200).all()
        # Its caption: text pixels in the band, none below it away from the marks.
        top, bottom = text_band(2)
        assert (image[top:bottom] > 200).all(axis=2).sum() > 100
        await viewers.stop()
        await browser.close()

    run(scenario)


def test_viewer_waits_for_answers_then_follows_them_live() -> None:
    async def scenario() -> None:
        session = FakeSession()
        viewers = SessionViewers()
        browser, _ = await open_viewer(viewers, session)
        image = picture(await browser.frame_after(5))
        assert coloured(image) < 20, "marks before any answer"
        assert (image > 200).all(axis=2).sum() > 900, "no ball before any answer"
        session.answer(TRUTH, REPORTED)  # the session's state changes; the viewer reads it
        image = picture(await browser.frame_after(5))
        assert is_green(colour_at(image, TRUTH)) and is_red(colour_at(image, REPORTED))
        await viewers.stop()
        await browser.close()

    run(scenario)


def test_viewer_shows_the_session_s_own_scene() -> None:
    async def scenario() -> None:
        session = FakeSession(scene_name="occlusion")
        bar = session.picture
        assert isinstance(bar, OcclusionScene)
        viewers = SessionViewers()
        browser, _ = await open_viewer(viewers, session)
        image = picture(await browser.frame_after(10))
        # The occluder the client sees, full height, grey (luma 60 and 80) on black.
        below = image[text_band(2)[1] :, :, 1].astype(int)
        inside = below[:, bar.left + 3 : bar.right - 3]
        assert 35 < inside.mean() < 85, inside.mean()
        left, right = below[:, : max(bar.left - 45, 0)], below[:, bar.right + 45 :]
        outside = np.concatenate([left, right], axis=1)
        assert outside.mean() < 30, outside.mean()
        await viewers.stop()
        await browser.close()

    run(scenario)


def test_viewer_track_paces_itself_at_the_session_rate_at_most_30_fps() -> None:
    async def frames(fps: float) -> tuple[list[int], float]:
        track = ViewerTrack(FakeSession(fps=fps))
        start = time.monotonic()
        pts = [(await track.recv()).pts for _ in range(4)]
        elapsed = time.monotonic() - start
        track.stop()
        with pytest.raises(MediaStreamError):
            await track.recv()
        return pts, elapsed

    async def scenario() -> None:
        pts, elapsed = await frames(15.0)
        assert pts == [0, 6000, 12000, 18000] and elapsed == pytest.approx(0.2, abs=0.08)
        pts, elapsed = await frames(60.0)
        assert pts == [0, 3000, 6000, 9000] and elapsed == pytest.approx(0.1, abs=0.06)

    run(scenario)


def test_a_track_stopped_while_it_waits_sends_nothing_more() -> None:
    async def scenario() -> None:
        track = ViewerTrack(FakeSession(fps=2.0))
        await track.recv()
        waiting = asyncio.create_task(track.recv())
        await asyncio.sleep(0.05)
        track.stop()
        with pytest.raises(MediaStreamError):
            await waiting

    run(scenario)


def test_a_real_tracking_session_is_watched_through_its_answers() -> None:
    async def scenario() -> None:
        config = SessionConfig(width=WIDTH, height=HEIGHT, fps=30.0, seed=3)
        session = TrackingSession(1, link=None, config=config)  # type: ignore[arg-type]
        # The path a frame and its answer take in a live session: sent to
        # the encoder, then answered over the data channel.
        for index in range(3):
            x, y = session.scene.position(index / config.fps)
            session._frame_sent(index, x, y, time.monotonic())
        truth = session.scene.position(2 / config.fps)
        session._on_message(encode_report(CoordinateReport(frame_pts(2, 30.0), *REPORTED)))
        assert session.recent_answers[-1].true_x == truth[0]
        viewers = SessionViewers()
        browser, _ = await open_viewer(viewers, session)
        image = picture(await browser.frame_after(5))
        assert is_green(colour_at(image, truth)), colour_at(image, truth)
        assert is_red(colour_at(image, REPORTED)), colour_at(image, REPORTED)
        await viewers.close_session(session.name)
        assert viewers.count == 0
        await browser.close()

    run(scenario)


# ---------------------------------------------------------------- lifecycle


def test_close_ends_the_track_and_frees_the_peer_connection() -> None:
    async def scenario() -> None:
        session = FakeSession()
        viewers = SessionViewers()
        browser, viewer_id = await open_viewer(viewers, session)
        await browser.frame_after(3)
        viewer = viewers.viewers(session.name)[0]
        assert await viewers.close("another-session", viewer_id) is False
        assert await viewers.close(session.name, "no-such-viewer") is False
        assert await viewers.close(session.name, viewer_id) is True
        assert viewers.count == 0
        assert viewer.track.readyState == "ended"
        assert viewer.connection_state == "closed"
        # DTLS close reaches the browser: its track ends too.
        await asyncio.wait_for(browser.ended.wait(), 5.0)
        assert await viewers.close(session.name, viewer_id) is False
        await browser.close()

    run(scenario)


def test_close_session_closes_all_its_viewers_and_only_those() -> None:
    async def scenario() -> None:
        ours, other = FakeSession(name="session-a"), FakeSession(name="session-b")
        viewers = SessionViewers()
        browsers = [await open_viewer(viewers, ours) for _ in range(2)]
        bystander, _ = await open_viewer(viewers, other)
        assert viewers.count == 3
        for browser, _ in browsers:
            await browser.frame_after(1)  # connected, so DTLS can say goodbye
        await viewers.close_session("session-a")
        assert viewers.count == 1 and viewers.viewers("session-b")
        for browser, _ in browsers:
            await asyncio.wait_for(browser.ended.wait(), 5.0)
        await bystander.frame_after(3)  # still streaming
        await viewers.close_session("no-such-session")
        await viewers.stop()
        for browser, _ in browsers:
            await browser.close()
        await bystander.close()

    run(scenario)


def test_one_viewer_more_than_the_limit_is_refused() -> None:
    async def scenario() -> None:
        session = FakeSession()
        viewers = SessionViewers(max_viewers=2)
        browsers = [Browser() for _ in range(4)]
        for browser in browsers[:2]:
            await viewers.open(session, await browser.offer())
        with pytest.raises(ViewerLimitReached):
            await viewers.open(session, await browsers[2].offer())
        assert viewers.count == 2
        opened = viewers.viewers(session.name)
        await viewers.close(session.name, opened[0].id)
        await viewers.open(session, await browsers[2].offer())  # a slot is free again
        await viewers.stop()
        with pytest.raises(ViewerClosed):
            await viewers.open(session, await browsers[3].offer())
        assert viewers.count == 0
        for browser in browsers:
            await browser.close()

    run(scenario)


def test_session_ending_while_a_viewer_negotiates() -> None:
    async def scenario() -> None:
        session = FakeSession()
        viewers = SessionViewers()
        browser = Browser()
        offer = await browser.offer()
        outcomes = set()
        # End the session at each point where open may be suspended.
        for steps in range(40):
            session.end_reason = None
            opening = asyncio.create_task(viewers.open(session, offer))
            for _ in range(steps):
                await asyncio.sleep(0)
            session.end_reason = "client said bye"  # as TrackingSession does, then
            await viewers.close_session(session.name)
            try:
                viewer = await opening
            except ViewerClosed:
                outcomes.add("refused")
            else:
                assert viewer.closed  # opened just before the session ended
                outcomes.add("opened, then closed")
            assert viewers.count == 0
        assert outcomes == {"refused", "opened, then closed"}
        await browser.close()

    run(scenario)


def test_a_cancelled_open_leaves_nothing_behind() -> None:
    async def scenario() -> None:
        viewers = SessionViewers()
        browser = Browser()
        offer = await browser.offer()
        # Cancel at each point where open may be suspended (the HTTP client hung up).
        for steps in range(40):
            opening = asyncio.create_task(viewers.open(FakeSession(), offer))
            for _ in range(steps):
                await asyncio.sleep(0)
            opening.cancel()
            try:
                viewer = await opening
            except asyncio.CancelledError:
                pass
            else:
                await viewers.close("session-20261127T120000-0001", viewer.id)
            assert viewers.count == 0
        await viewers.stop()
        await browser.close()

    run(scenario)


# ---------------------------------------------------------------- vanished browsers


def test_a_browser_that_never_connects_is_dropped() -> None:
    async def scenario() -> None:
        viewers = SessionViewers(connect_timeout_s=0.5)
        browser = Browser()
        await viewers.open(FakeSession(), await browser.offer())  # answer never applied
        assert viewers.count == 1
        await wait_until(lambda: viewers.count == 0, 5.0)
        await viewers.stop()
        await browser.close()

    run(scenario)


def test_a_browser_that_closes_without_delete_is_dropped() -> None:
    async def scenario() -> None:
        viewers = SessionViewers()
        browser, _ = await open_viewer(viewers, FakeSession())
        await browser.frame_after(3)
        await browser.close()  # tab closed: DTLS close, no WHEP DELETE
        await wait_until(lambda: viewers.count == 0, 5.0)
        await viewers.stop()

    run(scenario)


#: A browser in a process of its own, to be killed without a goodbye.
BROWSER_PROCESS = """
import asyncio, json, sys
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

async def main():
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    receiving = asyncio.Event()

    async def read(track):
        try:
            while True:
                await track.recv()
                receiving.set()
        except MediaStreamError:
            pass

    pc.on("track", lambda track: asyncio.ensure_future(read(track)))
    await pc.setLocalDescription(await pc.createOffer())
    print(json.dumps(pc.localDescription.sdp), flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await pc.setRemoteDescription(RTCSessionDescription(json.loads(line), "answer"))
    await receiving.wait()
    print("receiving", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_a_killed_browser_is_dropped_when_its_consent_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # RFC 7675 consent: aioice checks every 5 s and gives up after 6
    # failures, so a vanished browser goes in about 30 s. Faster here.
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 3)

    async def scenario() -> None:
        viewers = SessionViewers()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            BROWSER_PROCESS,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            offer = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
            viewer = await viewers.open(FakeSession(), offer)
            process.stdin.write(json.dumps(viewer.answer_sdp).encode() + b"\n")
            await process.stdin.drain()
            assert await asyncio.wait_for(process.stdout.readline(), 30) == b"receiving\n"
            process.send_signal(signal.SIGKILL)
            await process.wait()
            killed_at = time.monotonic()
            await wait_until(lambda: viewers.count == 0, 15.0)
            print(f"\nkilled browser dropped after {time.monotonic() - killed_at:.1f} s")
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await viewers.stop()

    run(scenario)


# ---------------------------------------------------------------- bad offers


def test_garbage_is_an_invalid_offer() -> None:
    async def scenario() -> None:
        viewers = SessionViewers()
        valid = await (browser := Browser()).offer()
        garbage = [
            "",
            "   ",
            "hello",
            "v=0\r\nm=video x UDP/TLS/RTP/SAVPF 96\r\n",
            "\x00\xff" * 50,
            valid[: len(valid) // 2],
            valid.replace("a=ice-ufrag", "a=x-ice-ufrag"),
            valid.replace("a=rtcp-mux\r\n", ""),
            valid.replace("VP8/90000", "XYZ/90000").replace("H264/90000", "XYZ/90000"),
        ]
        for sdp in garbage:
            with pytest.raises(InvalidDescription) as raised:
                await viewers.open(FakeSession(), sdp)
            assert str(raised.value), sdp
            assert viewers.count == 0
        await browser.close()

    run(scenario)


async def offer_for(*transceivers: tuple[str, str]) -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind, direction in transceivers:
        pc.addTransceiver(kind, direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def test_an_offer_that_cannot_receive_video_is_invalid() -> None:
    async def scenario() -> None:
        viewers = SessionViewers()
        for offer in (
            await offer_for(("audio", "recvonly")),
            await offer_for(("video", "sendonly")),
            await offer_for(("video", "inactive")),
        ):
            with pytest.raises(InvalidDescription, match="no video section that can receive"):
                await viewers.open(FakeSession(), offer)
        assert viewers.count == 0

    run(scenario)


def test_audio_and_extra_video_sections_are_answered_inactive() -> None:
    async def scenario() -> None:
        viewers = SessionViewers()
        offer = await offer_for(("audio", "sendrecv"), ("video", "sendrecv"), ("video", "recvonly"))
        assert receiving_video_mid(offer) == "1"
        viewer = await viewers.open(FakeSession(), offer)
        directions = [
            line for line in viewer.answer_sdp.splitlines() if line in ("a=sendonly", "a=inactive")
        ]
        assert directions == ["a=inactive", "a=sendonly", "a=inactive"]
        await viewers.stop()

    run(scenario)


SDP_TOKENS = [
    " ",
    ":",
    "/",
    "=",
    "0",
    "-1",
    "99999",
    "x",
    "m=audio 9 ",
    "m=application 9 ",
    "a=mid:0",
    "a=group:BUNDLE 7",
    "sendonly",
    "inactive",
    "a=setup:",
    "VP8",
    "rtx/90000 ",
    "apt=",
    "\n",
]


@st.composite
def damaged_offers(draw: st.DrawFn, valid: str) -> str:
    lines = valid.split("\r\n")
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "duplicate", "truncate", "token", "junk"]))
        if action == "drop":
            del lines[at]
        elif action == "duplicate":
            lines.insert(at, lines[at])
        elif action == "truncate":
            lines[at] = lines[at][: draw(st.integers(0, max(len(lines[at]) - 1, 0)))]
        elif action == "token":
            # A plausible value in the wrong place: where aiortc's parser
            # and negotiation trust what they read.
            cut = draw(st.integers(0, len(lines[at])))
            lines[at] = lines[at][:cut] + draw(st.sampled_from(SDP_TOKENS)) + lines[at][cut + 1 :]
        else:
            lines[at] = draw(st.text(max_size=40))
    return "\r\n".join(lines)


@functools.cache
def valid_offer() -> str:
    return asyncio.run(offer_for(("video", "recvonly"), ("audio", "recvonly")))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_damaged_offer_is_answered_or_invalid_never_anything_else(data: st.DataObject) -> None:
    offer = data.draw(damaged_offers(valid_offer()))

    async def scenario() -> None:
        viewers = SessionViewers()
        try:
            await viewers.open(FakeSession(), offer)
            event("answered")
        except InvalidDescription as exc:
            event(f"invalid: {str(exc)[:40]}")
            assert viewers.count == 0
        await viewers.stop()
        assert viewers.count == 0

    run(scenario)
