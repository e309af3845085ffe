"""Reaching the server's signaling port, patiently.

Under ``docker compose up`` or in a fresh pod the client often starts before
the server listens, so a refused connection is retried with exponential
back-off until ``connect_timeout`` runs out.

With an access token, the client's first line presents it
(``protocol.signaling.Auth``); a server with a token offers only then.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Optional

from protocol.signaling import Auth, SignalingChannel

logger = logging.getLogger("client.signaling")

FIRST_RETRY_S = 0.1
LONGEST_RETRY_S = 2.0


class ServerUnreachable(Exception):
    """No connection could be made before the deadline."""


async def connect_with_retry(
    host: str, port: int, connect_timeout: float, access_token: Optional[str] = None
) -> SignalingChannel:
    deadline = time.monotonic() + connect_timeout
    delay = FIRST_RETRY_S
    attempts = 0
    while True:
        attempts += 1
        remaining = deadline - time.monotonic()
        try:
            channel = await asyncio.wait_for(
                SignalingChannel.connect(host, port), max(min(remaining, 5.0), 0.1)
            )
        except (OSError, asyncio.TimeoutError) as exc:
            reason = _describe(exc)
        else:
            if access_token is None:
                return channel
            try:
                await asyncio.wait_for(channel.send(Auth(access_token)), 5.0)
                return channel
            except (OSError, asyncio.TimeoutError) as exc:
                reason = _describe(exc)
                await channel.close()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServerUnreachable(
                f"cannot reach signaling at {host}:{port} after {attempts} attempts "
                f"in {connect_timeout:g} s: {reason}"
            )
        logger.debug("signaling %s:%d not reachable (%s), retrying", host, port, reason)
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, LONGEST_RETRY_S)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, OSError) and exc.errno:
        # asyncio's message is "Connect call failed (...)"; errno says why.
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__
