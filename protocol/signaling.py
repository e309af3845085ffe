"""The signaling wire format of ``aiortc.contrib.signaling.TcpSocketSignaling``.

One JSON object per ``\\n``-terminated line over TCP:

- offer / answer: ``{"sdp": ..., "type": "offer" | "answer"}``
- candidate: ``{"candidate": ..., "id": ..., "label": ..., "type": "candidate"}``
- bye: ``{"type": "bye"}``; ours may add ``"reason"``, which aiortc ignores.
- auth: ``{"type": "auth", "token": ...}``, our addition: the first line a
  client sends when the server has an access token. A server with a token
  waits ``AUTH_TIMEOUT_S`` for it before it offers; a server without one
  ignores it, so a client may always send it, and a stock aiortc client
  (which never does) keeps working against a server without a token.

aiortc's own class trusts its peer: it reads unbounded lines, asserts on
unknown types and returns None forever after EOF. ``SignalingChannel`` speaks
the same bytes but bounds every line and every wait, and turns anything
malformed into ``SignalingError`` so one bad peer can only end its own
connection.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Optional, Union

from aiortc import RTCIceCandidate, RTCSessionDescription
from aiortc.contrib.signaling import object_to_string
from aiortc.sdp import candidate_from_sdp

#: An SDP offer with host candidates is a few kilobytes; anything near this
#: limit is not signaling.
MAX_LINE_BYTES = 64 * 1024


class SignalingError(Exception):
    """The peer sent something that is not valid signaling, or broke the line limit."""


#: How the reason of a server's BYE begins when it refuses a client that
#: another server (or this one, a moment later) could serve: every session
#: slot is taken, or it is shutting down. Behind a Service the next try may
#: land on a pod with room, so the client retries these.
SERVER_BUSY = "server busy"
SERVER_SHUTTING_DOWN = "server shutting down"

#: How the reason of a BYE begins when the client's access token is missing
#: or wrong: trying again with the same token cannot help.
ACCESS_DENIED = "access denied"

#: How long a server with an access token waits for the client's auth line.
AUTH_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Bye:
    """End of the conversation. ``reason`` says why when the server refuses a client."""

    reason: Optional[str] = None

    @property
    def worth_retrying(self) -> bool:
        """A refusal for lack of room: the same client may be served later."""
        return self.reason is not None and self.reason.startswith(
            (SERVER_BUSY, SERVER_SHUTTING_DOWN)
        )


@dataclass(frozen=True)
class Auth:
    """The client's access token, sent as its first line (see the module's docstring)."""

    token: str

    def __repr__(self) -> str:  # never log a token
        return "Auth(token=...)"


SignalingMessage = Union[RTCSessionDescription, RTCIceCandidate, Bye, Auth]


def encode_message(message: SignalingMessage) -> bytes:
    """Serialise one message as aiortc does, newline included."""
    if isinstance(message, Bye):
        body: dict[str, Any] = {"type": "bye"}
        if message.reason is not None:
            body["reason"] = message.reason
        text = json.dumps(body, sort_keys=True)
    elif isinstance(message, Auth):
        text = json.dumps({"type": "auth", "token": message.token}, sort_keys=True)
    else:
        text = object_to_string(message)
    return text.encode("utf8") + b"\n"


def decode_message(line: bytes) -> SignalingMessage:
    """Parse one line. Raises ``SignalingError`` for anything aiortc would not send."""
    try:
        body = json.loads(line.decode("utf8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SignalingError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise SignalingError("not a JSON object")
    kind = body.get("type")
    if kind in ("offer", "answer"):
        sdp = body.get("sdp")
        if not isinstance(sdp, str) or not sdp.startswith("v=0"):
            raise SignalingError(f"{kind} without a valid sdp")
        return RTCSessionDescription(sdp=sdp, type=kind)
    if kind == "candidate":
        return _decode_candidate(body)
    if kind == "bye":
        reason = body.get("reason")
        return Bye(reason if isinstance(reason, str) else None)
    if kind == "auth":
        token = body.get("token")
        if not isinstance(token, str):
            raise SignalingError("auth without a token string")
        return Auth(token)
    raise SignalingError(f"unknown message type {kind!r}")


def _decode_candidate(body: dict[str, Any]) -> RTCIceCandidate:
    text = body.get("candidate")
    if not isinstance(text, str) or ":" not in text:
        raise SignalingError("candidate without a candidate line")
    try:
        candidate = candidate_from_sdp(text.split(":", 1)[1])
    except (ValueError, IndexError, AssertionError) as exc:  # aiortc asserts on field count
        raise SignalingError(f"bad candidate: {exc!r}") from None
    candidate.sdpMid = body.get("id")
    candidate.sdpMLineIndex = body.get("label")
    return candidate


class SignalingChannel:
    """One signaling conversation over an established TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        peer = writer.get_extra_info("peername")
        self.peer: str = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        #: The source address alone: what per-peer limits count by.
        self.address: str = str(peer[0]) if isinstance(peer, tuple) else str(peer)

    @classmethod
    async def connect(cls, host: str, port: int) -> "SignalingChannel":
        reader, writer = await asyncio.open_connection(host, port, limit=MAX_LINE_BYTES)
        return cls(reader, writer)

    async def send(self, message: SignalingMessage) -> None:
        self._writer.write(encode_message(message))
        await self._writer.drain()

    async def receive(self, timeout: Optional[float] = None) -> Optional[SignalingMessage]:
        """The next message, or None when the peer closed the connection.

        Raises ``SignalingError`` on garbage or an over-long line and
        ``asyncio.TimeoutError`` when ``timeout`` passes first.
        """
        try:
            line = await asyncio.wait_for(self._reader.readuntil(b"\n"), timeout)
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise SignalingError("connection closed mid-line") from None
            return None
        except asyncio.LimitOverrunError:
            raise SignalingError(f"line longer than {MAX_LINE_BYTES} bytes") from None
        except ConnectionError:
            return None
        return decode_message(line)

    async def receive_bye(self) -> Optional[Bye]:
        """Read on until the peer's BYE, skipping anything else; None when it closed
        the connection first (EOF counts as BYE, never as a reason to spin).

        Raises ``SignalingError`` on garbage.
        """
        message = await self.receive()
        while message is not None and not isinstance(message, Bye):
            message = await self.receive()
        return message

    def refuse(self, reason: str) -> None:
        """Send a BYE with ``reason`` and close, without waiting for either.

        The close flushes what is buffered; a peer that never reads costs
        the kernel's send buffer, not a task or a timer here.
        """
        if self._writer.is_closing():
            return
        try:
            self._writer.write(encode_message(Bye(reason)))
        except (ConnectionError, RuntimeError):
            pass
        self._writer.close()

    async def close(self) -> None:
        if self._writer.is_closing():
            return
        self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)
        except (ConnectionError, asyncio.TimeoutError):
            pass
