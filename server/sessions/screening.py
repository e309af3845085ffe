"""A protocol that stands in front of another one, to turn connections away early.

A listener learns a peer's address only once the connection is made, after
its protocol exists. Both listeners (TCP signaling and the console's HTTP)
screen a connection at that moment: turned away, it is closed before the
real protocol sees a byte; let in, everything is handed on to the real one.
"""

from __future__ import annotations

import asyncio
from typing import Optional


def peer_address(transport: asyncio.BaseTransport) -> str:
    """The source address of ``transport``'s peer, without its port."""
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


class ScreeningProtocol(asyncio.Protocol):
    """Forwards every event to the protocol given to ``hand_on``; nothing before it."""

    def __init__(self) -> None:
        self._inner: Optional[asyncio.Protocol] = None

    def hand_on(self, inner: asyncio.Protocol, transport: asyncio.BaseTransport) -> None:
        self._inner = inner
        inner.connection_made(transport)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> Optional[bool]:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()
