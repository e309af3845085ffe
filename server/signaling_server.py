"""Accepts signaling connections and runs one session per connection.

aiortc's ``TcpSocketSignaling`` serves exactly one peer per instance; this
server speaks the same bytes but serves clients one after another and up to
``max_sessions`` at once. A client beyond that limit gets a BYE carrying the
reason and is disconnected, so it can tell "busy" from "unreachable".
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any, Awaitable, Callable, Optional

from protocol.signaling import MAX_LINE_BYTES, Bye, SignalingChannel

logger = logging.getLogger("server.signaling")

SessionRunner = Callable[[int, SignalingChannel], Awaitable[Any]]


class SignalingServer:
    def __init__(self, host: str, port: int, max_sessions: int, run_session: SessionRunner) -> None:
        self._host = host
        self._port = port
        self._max_sessions = max_sessions
        self._run_session = run_session
        self._server: Optional[asyncio.AbstractServer] = None
        self._numbers = itertools.count(1)
        self._sessions: set[asyncio.Task[Any]] = set()
        self.sessions_finished = asyncio.Event()  # set each time one ends

    @property
    def active_sessions(self) -> int:
        return len(self._sessions)

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen; raises ``OSError`` when the address is unusable or in use."""
        self._server = await asyncio.start_server(
            self._accept, self._host, self._port, limit=MAX_LINE_BYTES
        )
        logger.info("signaling on %s:%d", self._host, self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        channel = SignalingChannel(reader, writer)
        if len(self._sessions) >= self._max_sessions:
            logger.warning("refusing %s: %d sessions active", channel.peer, len(self._sessions))
            try:
                await asyncio.wait_for(
                    channel.send(Bye(f"server busy: {self._max_sessions} sessions active")), 1.0
                )
            except (ConnectionError, asyncio.TimeoutError):
                pass
            await channel.close()
            return
        number = next(self._numbers)
        task = asyncio.create_task(self._run(number, channel))
        self._sessions.add(task)
        task.add_done_callback(self._session_done)

    async def _run(self, number: int, channel: SignalingChannel) -> None:
        try:
            await self._run_session(number, channel)
        except Exception:
            # A bug in one session must not take the server down with it.
            logger.exception("session %d failed", number)
        finally:
            await channel.close()

    def _session_done(self, task: asyncio.Task[Any]) -> None:
        self._sessions.discard(task)
        self.sessions_finished.set()

    async def stop_listening(self) -> None:
        # Not wait_closed(): from Python 3.12 it also waits for every open
        # connection, and live sessions end only after this returns.
        if self._server is not None:
            self._server.close()

    async def wait_sessions(self) -> None:
        if self._sessions:
            await asyncio.gather(*self._sessions, return_exceptions=True)
