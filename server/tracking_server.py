"""The server process: signaling, sessions, the console's table, shutdown.

``TrackingServer`` owns everything that lives as long as the process and
hands each signaling connection to a fresh ``TrackingSession``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, Optional, Protocol

from protocol.signaling import SignalingChannel
from server.ledger import FrameRecord
from server.report_plotter import ReportPlotter
from server.session import SessionConfig, SessionObserver, TrackingSession
from server.session_table import REPORT_SUFFIXES, SessionTable
from server.signaling_server import SignalingServer

logger = logging.getLogger("server")

#: How long a shutdown waits for sessions to write their reports.
SHUTDOWN_TIMEOUT_S = 10.0


class SessionWatchers(Protocol):
    """Whoever watches a session (the console's viewers) and must let go at its end."""

    async def close_session(self, session_id: str) -> None: ...


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
        watchers: Optional[SessionWatchers] = None,
    ) -> None:
        self._config = config
        self._report_dir = report_dir
        self._once = once
        self._observer = observer
        self._watchers = watchers
        self._signaling = SignalingServer(host, port, max_sessions, self._run_session)
        self._sessions: dict[str, TrackingSession] = {}
        self._table = SessionTable()
        self._reports_being_written: set[asyncio.Task[None]] = set()
        self._plotter = ReportPlotter()
        self._stopping = asyncio.Event()

    @property
    def port(self) -> int:
        return self._signaling.port

    @property
    def ready(self) -> bool:
        return self._signaling.listening and not self._stopping.is_set()

    def latest_answer(self) -> Optional[FrameRecord]:
        """The newest answered frame of any session, for the display."""
        answers = [s.last_answer for s in self._sessions.values() if s.last_answer is not None]
        return max(answers, key=lambda a: a.produced_at, default=None)

    def live_session(self, session_id: str) -> Optional[TrackingSession]:
        session = self._sessions.get(session_id)
        return session if session is not None and not session.ended else None

    def session_rows(self) -> list[dict[str, Any]]:
        """The console's table: live sessions, then the most recent ended ones."""
        return self._table.rows(s.summary() for s in self._sessions.values())

    def report_path(self, file_name: str) -> Optional[Path]:
        """A finished session's report file, if this server wrote it."""
        if self._report_dir is None:
            return None
        path = self._report_dir / file_name
        return path if path.is_file() else None

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
        for session in list(self._sessions.values()):
            session.stop("server shutting down")
        try:
            await asyncio.wait_for(self._signaling.wait_sessions(), SHUTDOWN_TIMEOUT_S)
        except asyncio.TimeoutError:
            logger.error("sessions did not end within %.0f s", SHUTDOWN_TIMEOUT_S)
        if self._reports_being_written:
            await asyncio.wait(self._reports_being_written, timeout=SHUTDOWN_TIMEOUT_S)
        await asyncio.to_thread(self._plotter.close)

    async def _run_session(self, number: int, channel: SignalingChannel) -> None:
        session = TrackingSession(number, channel, self._config, self._observer, self._report_dir)
        self._sessions[session.name] = session
        try:
            summary = await session.run()
        finally:
            del self._sessions[session.name]
            if self._watchers is not None:
                await self._watchers.close_session(session.name)
        self._table.session_ended(summary, self._report_links(session.name))
        print(json.dumps(summary, indent=2), flush=True)
        # Returning gives the session's slot back; its report follows.
        writing = asyncio.create_task(session.write_report(self._plotter))
        self._reports_being_written.add(writing)
        writing.add_done_callback(self._reports_being_written.discard)
        if self._once:
            self.stop()

    def _report_links(self, name: str) -> Optional[dict[str, str]]:
        # The files are written just after the session ends; a link that is
        # followed a moment too early gets a 404 and works once they are there.
        if self._report_dir is None:
            return None
        return {suffix: f"/reports/{name}.{suffix}" for suffix in REPORT_SUFFIXES}
