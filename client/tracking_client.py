"""The client process: connects, runs sessions, and decides the exit status.

A server that refuses for lack of room ("server busy", "server shutting
down") is tried again with back-off until ``--connect-timeout`` has passed
since the first try: behind a Kubernetes Service the next connection may
land on a pod with room, and a lone server frees a slot when a session ends.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import random
import signal
import sys
import time
from typing import Any, Optional

from client.detection.interface import Detector
from client.display import ClientDisplay
from client.media.stage_tracer import ClientStageTracer
from client.session import ClientSession, SessionEnd, SessionOutcome
from client.signaling_client import ServerUnreachable, connect_with_retry
from protocol.stage_trace import StageTraceWriter

logger = logging.getLogger("client")

EXIT_OK = 0
EXIT_FAILED = 1  # unreachable, lost the server, detector died
EXIT_REFUSED = 3  # the server is full

DETECTOR_START_TIMEOUT_S = 30.0

#: Back-off between tries at a full server: doubling, with jitter so that
#: clients refused together do not all come back together.
FIRST_BUSY_RETRY_S = 0.5
LONGEST_BUSY_RETRY_S = 4.0


class TrackingClient:
    """Connects, runs sessions (again after a loss with ``reconnect``), and exits."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        # Any locator, ours or a user's, in either place (--detect-in): the
        # same isolation and dropping in the process, the same guard inline.
        self._detector: Detector = args.detection.build()
        self._display = ClientDisplay() if args.display else None
        self._session: Optional[ClientSession] = None
        self._stop_reason: Optional[str] = None
        self._sessions = 0
        self._frames_received = 0
        self._results_sent = 0
        #: The media path of the latest session that connected.
        self._ice_path: Optional[dict[str, Any]] = None
        #: Ends the client --duration seconds after its first session began
        #: (time spent waiting for a full server does not count).
        self._duration_timer: Optional[asyncio.TimerHandle] = None
        #: --trace-stages: every session's frames go to this one file.
        self._stage_trace: Optional[StageTraceWriter] = None

    def stop(self, reason: str) -> None:
        self._stop_reason = self._stop_reason or reason
        if self._session is not None:
            self._session.stop(reason)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop, signal.Signals(signum).name)
        try:
            if self._args.trace_stages is not None:
                ClientStageTracer.warn_unless_local(self._args.signaling_host)
                self._stage_trace = StageTraceWriter(self._args.trace_stages, "client")
            self._detector.start()
            # Spawning imports numpy and cv2 afresh (about a second); frames
            # that arrive before it is ready would go unanswered.
            if not await asyncio.to_thread(self._detector.wait_ready, DETECTOR_START_TIMEOUT_S):
                print("error: the detector process did not start", file=sys.stderr)
                return EXIT_FAILED
            if self._display is not None:
                self._display.start()
            return await self._run_sessions()
        finally:
            self._detector.close()
            if self._stage_trace is not None:
                self._stage_trace.close()
            if self._display is not None:
                self._display.close()
            print(json.dumps(self.summary()), flush=True)  # one line, for log shippers

    async def _run_sessions(self) -> int:
        args = self._args
        connect_until = time.monotonic() + args.connect_timeout
        busy_retry_s = FIRST_BUSY_RETRY_S
        while True:
            try:
                signaling = await self._connect(max(connect_until - time.monotonic(), 0.1))
            except ServerUnreachable as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_FAILED
            if signaling is None:  # stopped while connecting
                return EXIT_OK
            logger.info("connected to %s", signaling.peer)
            if args.duration is not None and self._duration_timer is None:
                self._duration_timer = asyncio.get_running_loop().call_later(
                    args.duration, self.stop, "duration reached"
                )
            session = ClientSession(
                signaling,
                self._detector,
                args.jitter_buffer,
                self._display,
                stage_trace=self._stage_trace,
                name=f"client-session-{self._sessions + 1}",
                decoder_thread=args.decoder_thread,
                handshake_timeout=args.handshake_timeout,
                ice=args.ice,
            )
            self._session = session
            if self._stop_reason:
                session.stop(self._stop_reason)
            outcome = await session.run()
            self._session = None
            if outcome.end is SessionEnd.REFUSED and outcome.worth_retrying:
                wait_s = min(
                    busy_retry_s * random.uniform(0.75, 1.25), connect_until - time.monotonic()
                )
                if wait_s > 0 and not self._stop_reason:
                    logger.info("%s; trying again in %.1f s", outcome.reason, wait_s)
                    if self._duration_timer is not None:
                        self._duration_timer.cancel()
                        self._duration_timer = None
                    if await self._sleep_unless_stopped(wait_s):
                        return EXIT_OK
                    busy_retry_s = min(busy_retry_s * 2, LONGEST_BUSY_RETRY_S)
                    continue
            if outcome.end is not SessionEnd.REFUSED:
                self._sessions += 1
                self._frames_received += session.frames_received
                self._results_sent += session.results_sent
                if session.ice_path is not None:
                    self._ice_path = session.ice_path.as_json()
            logger.info("session ended: %s", outcome.reason)
            # A server that shuts down (a rolling update) ends its sessions
            # with a BYE saying so; another server behind the same name may
            # take the client at once, as after a loss.
            server_left = outcome.end is SessionEnd.LOST or (
                outcome.end is SessionEnd.SERVER_ENDED and outcome.worth_retrying
            )
            if (
                server_left
                and args.reconnect
                and not self._stop_reason
                and not self._detector.failed
            ):
                logger.warning("%s; reconnecting", outcome.reason)
                connect_until = time.monotonic() + args.connect_timeout
                continue
            return self._exit_status(outcome)

    async def _connect(self, connect_timeout: float) -> Any:
        args = self._args
        connecting = asyncio.create_task(
            connect_with_retry(
                args.signaling_host,
                args.signaling_port,
                connect_timeout,
                getattr(args, "access_token", None),
            )
        )
        while not connecting.done():
            await asyncio.wait({connecting}, timeout=0.1)
            if self._stop_reason and not connecting.done():
                connecting.cancel()
                return None
        return connecting.result()

    async def _sleep_unless_stopped(self, seconds: float) -> bool:
        """Sleep; True if the client was stopped meanwhile."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            if self._stop_reason:
                return True
            await asyncio.sleep(min(0.1, until - time.monotonic()))
        return bool(self._stop_reason)

    def _exit_status(self, outcome: SessionOutcome) -> int:
        if outcome.end is SessionEnd.REFUSED:
            print(f"error: the server refused the session: {outcome.reason}", file=sys.stderr)
            return EXIT_REFUSED
        if outcome.end is SessionEnd.LOST:
            print(f"error: {outcome.reason}", file=sys.stderr)
            return EXIT_FAILED
        return EXIT_OK

    def summary(self) -> dict[str, Any]:
        return {
            "sessions": self._sessions,
            "frames_received": self._frames_received,
            "results_sent": self._results_sent,
            "ice": self._ice_path,
            "detector": dataclasses.asdict(self._detector.stats()),
        }
