"""Accepts signaling connections and hands each one to the tracking server.

aiortc's ``TcpSocketSignaling`` serves exactly one peer per instance; this
server speaks the same bytes but accepts any number of connections, one
after another or at once. Whether a connection gets a session (or a BYE
saying the server is busy) is the tracking server's decision: WHEP clients
take session slots too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Optional

from protocol.signaling import MAX_LINE_BYTES, SignalingChannel

logger = logging.getLogger("server.signaling")

ConnectionHandler = Callable[[SignalingChannel], None]


class SignalingServer:
    def __init__(self, host: str, port: int, on_connection: ConnectionHandler) -> None:
        self._host = host
        self._port = port
        self._on_connection = on_connection
        self._server: Optional[asyncio.Server] = None

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

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._on_connection(SignalingChannel(reader, writer))

    async def stop_listening(self) -> None:
        # Not wait_closed(): from Python 3.12 it also waits for every open
        # connection, and live sessions end only after this returns.
        if self._server is not None:
            self._server.close()
