"""The server process: session slots, signaling, the console's table, shutdown.

``TrackingServer`` owns everything that lives as long as the process. Each
signaling connection and each WHEP offer from the ``/track`` page gets a
fresh ``TrackingSession`` while one of the ``max_sessions`` slots is free
and its source address holds fewer than ``max_sessions_per_peer``
(``server.sessions.admission``). With an access token, a signaling
connection must present it (``protocol.signaling.Auth``) within
``AUTH_TIMEOUT_S`` before it is offered anything.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import secrets
from pathlib import Path
from typing import Any, Coroutine, Optional, Protocol

from protocol.signaling import (
    ACCESS_DENIED,
    AUTH_TIMEOUT_S,
    SERVER_BUSY,
    SERVER_SHUTTING_DOWN,
    Auth,
    SignalingChannel,
    SignalingError,
)
from protocol.stage_trace import StageTraceWriter
from server.console.session_table import REPORT_SUFFIXES, SessionTable
from server.core.frame_phases import FramePhases
from server.core.ledger import FrameRecord
from server.reports.plotter import ReportPlotter
from server.reports.retention import ReportRetention
from server.sessions.admission import Admission, Ticket
from server.sessions.offers import MAX_CANDIDATES, InvalidDescription, check_tracking_offer
from server.sessions.session import ClientLink, SessionConfig, SessionObserver, TrackingSession
from server.sessions.signaling_link import SignalingLink
from server.sessions.signaling_server import SignalingServer
from server.sessions.whep_link import WhepLink

logger = logging.getLogger("server")

#: How long a shutdown waits for sessions to write their reports.
SHUTDOWN_TIMEOUT_S = 10.0


class SessionWatchers(Protocol):
    """Whoever watches a session (the console's viewers) and must let go at its end."""

    async def close_session(self, session_id: str) -> None: ...


class ServerBusy(Exception):
    """Every session slot is taken, or the server is shutting down."""


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
        stage_trace: Optional[StageTraceWriter] = None,
        max_sessions_per_peer: Optional[int] = None,
        access_token: Optional[str] = None,
        report_max_bytes: Optional[int] = None,
    ) -> None:
        self._config = config
        self._stage_trace = stage_trace
        self._admission = Admission(max_sessions, max_sessions_per_peer or max_sessions)
        self._access_token = access_token
        self._report_dir = report_dir
        self._retention = (
            ReportRetention(report_dir, report_max_bytes, max_sessions, self._live_names)
            if report_dir is not None and report_max_bytes is not None
            else None
        )
        self._once = once
        self._observer = observer
        self._watchers = watchers
        self._signaling = SignalingServer(
            host, port, self._on_signaling_connection, screen=self._screen
        )
        self._numbers = itertools.count(1)
        # Keeps the sessions' frames apart on the one event loop (issue 24).
        self._frame_phases = FramePhases(config.fps)
        #: Random per process: session ids stay unique across pods and restarts.
        self._instance = secrets.token_hex(3)
        #: Every session that holds a slot, from its first step to its last.
        self._running: set[asyncio.Task[None]] = set()
        self._sessions: dict[str, TrackingSession] = {}
        self._whep_links: dict[str, tuple[WhepLink, TrackingSession]] = {}
        self._table = SessionTable()
        #: Reports being written and busy clients being told so; shutdown waits for them.
        self._background: set[asyncio.Task[None]] = set()
        self._plotter = ReportPlotter()
        self._stopping = asyncio.Event()

    @property
    def port(self) -> int:
        return self._signaling.port

    @property
    def ready(self) -> bool:
        """Readiness: a new client would get a session here now.

        A full server is not ready, so a Kubernetes Service sends new clients
        to a pod with room; it is still alive (``/livez``), and must not be
        restarted for being full.
        """
        return self._signaling.listening and self._admission.room_for_anyone()

    @property
    def free_slots(self) -> int:
        """Sessions one more client could still have (``/metrics``)."""
        return max(0, self._admission.max_sessions - len(self._running))

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
        if self._retention is not None:
            self._retention.start()

    def stop(self) -> None:
        """Begin a graceful shutdown (safe to call from a signal handler)."""
        self._admission.stopping = True
        self._stopping.set()

    async def stop_listening(self) -> None:
        await self._signaling.stop_listening()

    async def run(self) -> None:
        """Serve until ``stop()`` or, with ``once``, until the first session ends."""
        await self._stopping.wait()
        await self._signaling.stop_listening()
        for session in list(self._sessions.values()):
            session.stop(SERVER_SHUTTING_DOWN)
        if self._running:
            _, late = await asyncio.wait(self._running, timeout=SHUTDOWN_TIMEOUT_S)
            if late:
                logger.error("sessions did not end within %.0f s", SHUTDOWN_TIMEOUT_S)
        if self._background:
            await asyncio.wait(self._background, timeout=SHUTDOWN_TIMEOUT_S)
        await asyncio.to_thread(self._plotter.close)
        if self._retention is not None:
            await self._retention.stop()

    # -- admission ---------------------------------------------------------------

    def _screen(self, address: str) -> Optional[str]:
        """Why a new connection from ``address`` is refused before it is read; or None."""
        refusal = self._admission.refusal(address, session=self._access_token is None)
        if refusal is not None:
            self._count_refusal(refusal)
        return refusal

    def _count_refusal(self, reason: str, signaling: bool = True) -> None:
        if self._observer is None:
            return
        kind = reason.split(":", 1)[0]
        if signaling:
            self._observer.connection_refused(kind)
        if kind == SERVER_SHUTTING_DOWN:
            self._observer.session_refused("shutting_down")
        elif kind == SERVER_BUSY:
            self._observer.session_refused("busy")

    def _on_signaling_connection(self, channel: SignalingChannel) -> None:
        waits_for_token = self._access_token is not None
        refusal = self._admission.refusal(channel.address, session=not waits_for_token)
        if refusal is not None:
            self._refuse(channel, refusal)
            return
        ticket = self._admission.admit(channel.address, session=not waits_for_token)
        if waits_for_token:
            self._in_background(self._authenticate(channel, ticket))
        else:
            self._start(SignalingLink(channel), ticket)

    async def _authenticate(self, channel: SignalingChannel, ticket: Ticket) -> None:
        """Offer only to a connection whose first line carries the access token."""
        assert self._access_token is not None
        try:
            message = await channel.receive(AUTH_TIMEOUT_S)
        except (SignalingError, asyncio.TimeoutError):
            message = None
        if not isinstance(message, Auth):
            refusal: Optional[str] = f"{ACCESS_DENIED}: no access token within {AUTH_TIMEOUT_S:g} s"
        elif not hmac.compare_digest(message.token.encode(), self._access_token.encode()):
            refusal = f"{ACCESS_DENIED}: wrong access token"
        else:
            refusal = self._admission.start_session(ticket)
        if refusal is not None:
            ticket.release()
            self._refuse(channel, refusal)
            return
        self._start(SignalingLink(channel), ticket)

    def _refuse(self, channel: SignalingChannel, reason: str) -> None:
        # Cheap by design: no task, no wait. The BYE goes into the socket's
        # buffer and the close sends it; a peer that reads nothing loses it.
        self._count_refusal(reason)
        logger.debug("refusing %s: %s", channel.peer, reason)
        channel.refuse(reason)

    async def open_whep_session(
        self, offer_sdp: str, peer: str
    ) -> tuple[WhepLink, TrackingSession]:
        """Start a session for a browser's WHEP offer; return once it has answered.

        Raises ``ServerBusy``, ``InvalidDescription`` (nothing was started) or
        ``SessionGone`` (the session ended before its answer was ready).
        """
        refusal = self._admission.refusal(peer)
        if refusal is not None:
            self._count_refusal(refusal, signaling=False)
            raise ServerBusy(refusal)
        candidates = offer_sdp.count("a=candidate:")
        if candidates > MAX_CANDIDATES:  # counted before any parsing, which is what costs
            raise InvalidDescription(
                f"the offer has {candidates} ICE candidates (at most {MAX_CANDIDATES})"
            )
        check_tracking_offer(offer_sdp)
        link = WhepLink(offer_sdp, peer)
        session = self._start(link, self._admission.admit(peer))
        self._whep_links[link.resource_id] = (link, session)
        await link.answer()
        return link, session

    def delete_whep_session(self, resource_id: str) -> bool:
        """A browser's WHEP DELETE; False when no such session is live."""
        entry = self._whep_links.pop(resource_id, None)
        if entry is None:
            return False
        entry[0].delete()
        return True

    def _start(self, link: ClientLink, ticket: Ticket) -> TrackingSession:
        session = TrackingSession(
            next(self._numbers),
            link,
            self._config,
            self._observer,
            self._report_dir,
            stage_trace=self._stage_trace,
            instance=self._instance,
            report_limit_bytes=(
                self._retention.session_limit_bytes if self._retention is not None else None
            ),
            on_report_failure=self._report_failed,
            frame_phases=self._frame_phases,
        )
        self._sessions[session.name] = session
        task = asyncio.create_task(self._run_session(session, ticket))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return session

    async def _run_session(self, session: TrackingSession, ticket: Ticket) -> None:
        try:
            summary = await session.run()
        except Exception:
            # A bug in one session must not take the server down with it.
            logger.exception("%s failed", session.name)
            summary = session.summary()
        finally:
            ticket.release()
            del self._sessions[session.name]
            for resource_id in [k for k, (_, s) in self._whep_links.items() if s is session]:
                del self._whep_links[resource_id]
            if self._watchers is not None:
                await self._watchers.close_session(session.name)
        self._table.session_ended(
            summary, self._report_links(session.name) if session.has_report else None
        )
        # One line: log shippers split a pretty-printed document into fragments.
        print(json.dumps(summary), flush=True)
        # Returning gives the session's slot back; its report follows.
        if session.has_report:
            self._in_background(self._write_report(session))
        if self._once:
            self.stop()

    async def _write_report(self, session: TrackingSession) -> None:
        if self._retention is not None:
            await self._retention.enforce()  # room for this one's summary and plot
        await session.write_report(self._plotter)
        if self._retention is not None:
            await self._retention.enforce()

    def _live_names(self) -> set[str]:
        return set(self._sessions)

    def _report_failed(self) -> None:
        if self._observer is not None:
            self._observer.report_write_failed()

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _report_links(self, name: str) -> Optional[dict[str, str]]:
        # The files are written just after the session ends; a link that is
        # followed a moment too early gets a 404 and works once they are there.
        if self._report_dir is None:
            return None
        return {suffix: f"/reports/{name}.{suffix}" for suffix in REPORT_SUFFIXES}
