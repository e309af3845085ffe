"""One session of the load client: a real WebRTC session that answers without looking.

It speaks to the server exactly as ``client.session.ClientSession`` does --
the same signaling, the same receiver hooks (repeating NACKs, wire
timestamps, the fast jitter buffer; ``client.media.hooks``), an answer on the
``coordinates`` channel for every frame, named by both its RTP timestamp and
its pts -- but it decodes nothing and detects nothing: each complete frame's
pts comes straight from the receiver (``lab.encoded_frame_tap``) and the
answer is that frame's true centre (``lab.true_answers``). The server
renders, encodes, sends, matches and scores just as for a real client.

Every wait is bounded: the offer and the data channel by the handshake
timeout, the BYE and the peer connection's close by a few seconds each.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass
from typing import Any, Optional

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from client.media.hooks import install_receiver_hooks
from client.media.wire_timestamps import WireTimestamps
from lab.encoded_frame_tap import EncodedFrameTap
from lab.true_answers import TrueAnswers
from protocol.coordinates import CHANNEL_LABEL
from protocol.ice_path import rtc_configuration
from protocol.signaling import Bye, SignalingChannel, SignalingError

logger = logging.getLogger("lab.load_session")

#: Longest the goodbye and the peer connection's close may take.
BYE_TIMEOUT_S = 1.0
CLOSE_TIMEOUT_S = 5.0


class LoadEnd(enum.Enum):
    """How a session ended; the same cases as the real client's ``SessionEnd``."""

    FINISHED = "finished"  # stopped here (duration, signal): we said BYE
    SERVER_ENDED = "server ended"  # the server said BYE mid-stream (its --duration)
    REFUSED = "refused"  # the server said BYE instead of offering
    LOST = "lost"  # EOF, garbage, no offer, no channel, a failed connection


@dataclass(frozen=True)
class LoadOutcome:
    end: LoadEnd
    reason: str


class LoadSession:
    """Lifecycle: ``run()`` once, to the end; ``stop()`` from outside at any time.

    ``offered`` is set once the server's offer is in (``offer_received``: the
    server has numbered the session) or the session ended before one came.
    The session then waits for ``answer()`` before it answers, so that N
    sessions offered one after another can all start streaming together; it
    answers anyway when half its handshake timeout has passed, well before
    the server's (the same 10 s by default) runs out.
    """

    def __init__(
        self,
        signaling: SignalingChannel,
        answers: TrueAnswers,
        handshake_timeout: float,
        name: str,
    ) -> None:
        self._signaling = signaling
        self._answers = answers
        self._handshake_timeout = handshake_timeout
        self.name = name
        self.offered = asyncio.Event()
        self.offer_received = False
        self._go = asyncio.Event()
        self._channel_open = asyncio.Event()
        self._channel: Optional[RTCDataChannel] = None
        self._wire_timestamps: Optional[WireTimestamps] = None
        self._tap: Optional[EncodedFrameTap] = None
        self._outcome: Optional[LoadOutcome] = None
        self._ended = asyncio.Event()
        self.frames_received = 0
        self.answers_sent = 0
        #: Frames that arrived while the channel was not open: not answered.
        self.frames_unanswered = 0

    def answer(self) -> None:
        """Answer the offer now (or as soon as it is in)."""
        self._go.set()

    def stop(self, reason: str) -> None:
        self._end(LoadEnd.FINISHED, reason)
        self._go.set()

    def _end(self, end: LoadEnd, reason: str) -> None:
        if self._outcome is None:
            self._outcome = LoadOutcome(end, reason)
            self._ended.set()

    async def run(self) -> LoadOutcome:
        pc = RTCPeerConnection(rtc_configuration([], "all"))
        tasks: list[asyncio.Task[Any]] = []
        try:
            if await self._negotiate(pc):
                tasks.append(asyncio.create_task(self._watch_signaling()))
                tasks.append(asyncio.create_task(self._expect_channel()))
            await self._ended.wait()
        except asyncio.TimeoutError:
            self._end(LoadEnd.LOST, f"no offer within {self._handshake_timeout:g} s")
        except SignalingError as exc:
            self._end(LoadEnd.LOST, f"signaling error: {exc}")
        except ConnectionError as exc:
            self._end(LoadEnd.LOST, f"signaling connection lost: {exc}")
        except (ValueError, AssertionError) as exc:  # aiortc on an offer it cannot take
            self._end(LoadEnd.LOST, f"the server's offer was rejected: {exc!r}")
        finally:
            self.offered.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._end(LoadEnd.LOST, "the session failed")  # only if nothing ended it
            assert self._outcome is not None
            if self._outcome.end is LoadEnd.FINISHED:
                try:
                    await asyncio.wait_for(self._signaling.send(Bye()), BYE_TIMEOUT_S)
                except (ConnectionError, asyncio.TimeoutError):
                    pass
            try:
                await asyncio.wait_for(pc.close(), CLOSE_TIMEOUT_S)
            except asyncio.TimeoutError:
                logger.warning("%s: the peer connection did not close in time", self.name)
            if self._tap is not None:
                self._tap.remove()
            await self._signaling.close()
        return self._outcome

    async def _negotiate(self, pc: RTCPeerConnection) -> bool:
        """Answer the server's offer; False if it refused instead."""

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label == CHANNEL_LABEL:
                self._channel = channel
                # The server's latency messages need no reading: nothing to adapt.
                if channel.readyState == "open":
                    self._channel_open.set()
                channel.on("open", self._channel_open.set)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "failed":
                self._end(LoadEnd.LOST, "WebRTC connection failed")

        deadline = time.monotonic() + self._handshake_timeout
        while True:
            message = await self._signaling.receive(max(deadline - time.monotonic(), 0.0))
            if message is None:
                raise ConnectionError("the server closed the connection before its offer")
            if isinstance(message, Bye):
                self._end(LoadEnd.REFUSED, message.reason or "the server said bye")
                return False
            if isinstance(message, RTCSessionDescription) and message.type == "offer":
                break
            # Candidates travel inside the SDP (no trickle); anything else is wrong.
            raise SignalingError(f"expected an offer, got {message!r}")
        self.offer_received = True
        self.offered.set()
        try:
            await asyncio.wait_for(self._go.wait(), self._handshake_timeout / 2)
        except asyncio.TimeoutError:
            pass  # answer now: the server's own handshake timeout is running
        if self._outcome is not None:  # stopped meanwhile
            return False
        await pc.setRemoteDescription(message)
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "video":
                # The real client's hooks, minus the decoder: the tap takes its place.
                hooks = install_receiver_hooks(transceiver.receiver, pc.sctp, decoder_thread=True)
                self._wire_timestamps = hooks.wire_timestamps
                self._tap = EncodedFrameTap(transceiver.receiver, self._answer)
                self._tap.install()
        await pc.setLocalDescription(await pc.createAnswer())
        await self._signaling.send(pc.localDescription)
        return True

    async def _expect_channel(self) -> None:
        try:
            await asyncio.wait_for(self._channel_open.wait(), self._handshake_timeout)
        except asyncio.TimeoutError:
            self._end(LoadEnd.LOST, f"no data channel within {self._handshake_timeout:g} s")

    async def _watch_signaling(self) -> None:
        try:
            message = await self._signaling.receive_bye()
        except SignalingError as exc:
            self._end(LoadEnd.LOST, f"signaling error: {exc}")
            return
        if message is None:
            self._end(LoadEnd.LOST, "lost the connection to the server")
        else:
            self._end(LoadEnd.SERVER_ENDED, f"server ended the session: {message.reason or 'bye'}")

    def _answer(self, pts: int) -> None:
        """One complete frame: its true centre goes back at once."""
        self.frames_received += 1
        channel = self._channel
        if channel is None or channel.readyState != "open" or self._outcome is not None:
            self.frames_unanswered += 1
            return
        wire = self._wire_timestamps
        rtp_timestamp = wire.rtp_timestamp(pts) if wire is not None else None
        channel.send(self._answers.message(pts, rtp_timestamp))
        self.answers_sent += 1
