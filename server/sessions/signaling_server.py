"""Accepts signaling connections and hands each one to the tracking server.

aiortc's ``TcpSocketSignaling`` serves exactly one peer per instance; this
server speaks the same bytes but accepts any number of connections, one
after another or at once. Whether a connection gets a session (or a BYE
saying the server is busy) is the tracking server's decision: WHEP clients
take session slots too.

A connection the tracking server would refuse anyway (``screen``: its
address is over its cap, the server is full) is refused at the lowest
level: its BYE goes straight into the transport, which is closed, before
any stream, channel or task exists. One host reconnecting in a loop then
costs an accept and a write per try.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Optional, cast

from protocol.signaling import MAX_LINE_BYTES, Bye, SignalingChannel, encode_message
from server.sessions.screening import ScreeningProtocol, peer_address

logger = logging.getLogger("server.signaling")

ConnectionHandler = Callable[[SignalingChannel], None]
#: Why a connection from this address would be refused now, or None.
Screen = Callable[[str], Optional[str]]


class _Screened(ScreeningProtocol):
    """Refuses a connection ``screen`` turns away; hands any other to a stream protocol."""

    def __init__(self, screen: Optional[Screen], accept: Callable[..., None]) -> None:
        super().__init__()
        self._screen = screen
        self._accept = accept

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        address = peer_address(transport)
        refusal = self._screen(address) if self._screen is not None else None
        if refusal is not None:
            # uvloop's transports are not asyncio.WriteTransport subclasses.
            writer = cast(asyncio.WriteTransport, transport)
            writer.write(encode_message(Bye(refusal)))
            writer.close()  # sends what is buffered, then closes
            return
        reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
        self.hand_on(asyncio.StreamReaderProtocol(reader, self._accept), transport)


class SignalingServer:
    def __init__(
        self,
        host: str,
        port: int,
        on_connection: ConnectionHandler,
        screen: Optional[Screen] = None,
    ) -> None:
        self._host = host
        self._port = port
        self._on_connection = on_connection
        self._screen = screen
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
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Screened(self._screen, self._accept), self._host, self._port
        )
        logger.info("signaling on %s:%d", self._host, self.port)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._on_connection(SignalingChannel(reader, writer))

    async def stop_listening(self) -> None:
        # Not wait_closed(): from Python 3.12 it also waits for every open
        # connection, and live sessions end only after this returns.
        if self._server is not None:
            self._server.close()
