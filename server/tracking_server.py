"""The server process: signaling, sessions, health endpoint, shutdown.

``TrackingServer`` owns everything that lives as long as the process and
hands each signaling connection to a fresh ``TrackingSession``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Optional

from protocol.signaling import SignalingChannel
from server.ledger import FrameRecord
from server.session import SessionConfig, SessionObserver, TrackingSession
from server.signaling_server import SignalingServer

logger = logging.getLogger("server")

#: How long a shutdown waits for sessions to write their reports.
SHUTDOWN_TIMEOUT_S = 10.0


class TrackingServer:
    def __init__(
        self,
        host: str,
        port: int,
        config: SessionConfig,
        max_sessions: int,
        report_dir: Optional[Path] = None,
        once: bool = False,
        observer: Optional[SessionObserver] = None,
    ) -> None:
        self._config = config
        self._report_dir = report_dir
        self._once = once
        self._observer = observer
        self._signaling = SignalingServer(host, port, max_sessions, self._run_session)
        self._sessions: set[TrackingSession] = set()
        self._stopping = asyncio.Event()

    @property
    def port(self) -> int:
        return self._signaling.port

    @property
    def ready(self) -> bool:
        return self._signaling.listening and not self._stopping.is_set()

    def latest_answer(self) -> Optional[FrameRecord]:
        """The newest answered frame of any session, for the display."""
        answers = [s.last_answer for s in self._sessions if s.last_answer is not None]
        return max(answers, key=lambda a: a.produced_at, default=None)

    async def start(self) -> None:
        await self._signaling.start()

    def stop(self) -> None:
        """Begin a graceful shutdown (safe to call from a signal handler)."""
        self._stopping.set()

    async def stop_listening(self) -> None:
        await self._signaling.stop_listening()

    async def run(self) -> None:
        """Serve until ``stop()`` or, with ``once``, until the first session ends."""
        await self._stopping.wait()
        await self._signaling.stop_listening()
        for session in list(self._sessions):
            session.stop("server shutting down")
        try:
            await asyncio.wait_for(self._signaling.wait_sessions(), SHUTDOWN_TIMEOUT_S)
        except asyncio.TimeoutError:
            logger.error("sessions did not end within %.0f s", SHUTDOWN_TIMEOUT_S)

    async def _run_session(self, number: int, channel: SignalingChannel) -> None:
        session = TrackingSession(number, channel, self._config, self._observer, self._report_dir)
        self._sessions.add(session)
        try:
            summary = await session.run()
        finally:
            self._sessions.discard(session)
        print(json.dumps(summary, indent=2), flush=True)
        if self._once:
            self.stop()
