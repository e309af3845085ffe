"""Who may have a session now: the global cap and a cap per source address.

One global count lets a single host take every slot with idle connections
that read the offer and never answer. So every address also has its own
cap: its sessions (negotiating or streaming) plus its connections still
waiting to present the access token may not exceed ``max_per_peer``. A
connection over a cap is refused at once, before any work is spent on it
(no peer connection, no offer, no report).

The peer is the TCP (or HTTP) source address. Behind a load balancer that
rewrites source addresses (SNAT), every client shares one address: raise
``--max-sessions-per-peer`` to ``--max-sessions`` there (docs/reliability.md).
"""

from __future__ import annotations

from collections import Counter
from typing import Optional

from protocol.signaling import SERVER_BUSY, SERVER_SHUTTING_DOWN


class Ticket:
    """One admitted connection or session; ``release`` gives its place back (once)."""

    def __init__(self, admission: "Admission", address: str, session: bool) -> None:
        self._admission = admission
        self.address = address
        #: False while the connection still has to present its token.
        self.session = session
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._admission._release(self)


class Admission:
    """Counts sessions and waiting connections, globally and per address."""

    def __init__(self, max_sessions: int, max_per_peer: int, max_waiting: int = 64) -> None:
        self.max_sessions = max_sessions
        self.max_per_peer = max_per_peer
        #: Connections still waiting to present their token, over all peers.
        self.max_waiting = max_waiting
        self.stopping = False
        self._sessions = 0
        self._waiting = 0
        self._per_peer: Counter[str] = Counter()

    @property
    def sessions(self) -> int:
        return self._sessions

    def held_by(self, address: str) -> int:
        return self._per_peer[address]

    def room_for_anyone(self) -> bool:
        """A new client from an address that holds nothing would get a session."""
        return not self.stopping and self._sessions < self.max_sessions

    def refusal(self, address: str, session: bool = True) -> Optional[str]:
        """Why ``address`` cannot have a session (or, with ``session`` False, wait
        for one with its token) now; None if it can."""
        if self.stopping:
            return SERVER_SHUTTING_DOWN
        # A full server says so first: that is what every client sees alike.
        if session and self._no_slot() is not None:
            return self._no_slot()
        if self._per_peer[address] >= self.max_per_peer:
            return (
                f"{SERVER_BUSY}: {self._per_peer[address]} sessions and handshakes "
                f"from {address} (the per-address cap)"
            )
        if session:
            return None
        if self._waiting >= self.max_waiting:
            return f"{SERVER_BUSY}: {self.max_waiting} connections awaiting their token"
        return None

    def admit(self, address: str, session: bool = True) -> Ticket:
        """Take a place for ``address``; call ``refusal`` first."""
        self._per_peer[address] += 1
        if session:
            self._sessions += 1
        else:
            self._waiting += 1
        return Ticket(self, address, session)

    def start_session(self, ticket: Ticket) -> Optional[str]:
        """A waiting connection presented its token: give it a global slot.

        Returns why not (the ticket is then unchanged), or None.
        """
        if ticket.session or ticket.released:
            return None
        refusal = SERVER_SHUTTING_DOWN if self.stopping else self._no_slot()
        if refusal is None:
            ticket.session = True
            self._waiting -= 1
            self._sessions += 1
        return refusal

    def _no_slot(self) -> Optional[str]:
        if self._sessions >= self.max_sessions:
            return f"{SERVER_BUSY}: {self.max_sessions} sessions active"
        return None

    def _release(self, ticket: Ticket) -> None:
        self._per_peer[ticket.address] -= 1
        if self._per_peer[ticket.address] <= 0:
            del self._per_peer[ticket.address]
        if ticket.session:
            self._sessions -= 1
        else:
            self._waiting -= 1
