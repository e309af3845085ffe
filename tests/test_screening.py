"""server/sessions/screening.py: a protocol in front of another, and the peer's address."""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from server.sessions.screening import ScreeningProtocol, peer_address


class _Transport(asyncio.BaseTransport):
    def __init__(self, peername: Any) -> None:
        super().__init__()
        self._peername = peername

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._peername if name == "peername" else default


class _Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.events.append(("made", transport))

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", data))

    def eof_received(self) -> Optional[bool]:
        self.events.append(("eof", None))
        return True

    def pause_writing(self) -> None:
        self.events.append(("pause", None))

    def resume_writing(self) -> None:
        self.events.append(("resume", None))

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.events.append(("lost", exc))


def test_the_peer_address_drops_the_port_of_ipv4_and_ipv6() -> None:
    assert peer_address(_Transport(("192.0.2.7", 50000))) == "192.0.2.7"
    assert peer_address(_Transport(("2001:db8::1", 50000, 0, 0))) == "2001:db8::1"
    assert peer_address(_Transport("/run/socket")) == "/run/socket"


def test_nothing_is_forwarded_before_hand_on_and_everything_after() -> None:
    front = ScreeningProtocol()
    front.data_received(b"early")
    assert front.eof_received() is None
    front.connection_lost(None)  # a connection turned away: nothing behind it

    inner, transport, error = _Recorder(), _Transport(("192.0.2.7", 1)), OSError("gone")
    front.hand_on(inner, transport)
    front.data_received(b"line\n")
    assert front.eof_received() is True
    front.pause_writing()
    front.resume_writing()
    front.connection_lost(error)
    assert inner.events == [
        ("made", transport),
        ("data", b"line\n"),
        ("eof", None),
        ("pause", None),
        ("resume", None),
        ("lost", error),
    ]
