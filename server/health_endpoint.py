"""A tiny HTTP/1.1 endpoint for ``/healthz`` and ``/metrics``.

Built on ``asyncio.start_server`` so the server needs no web framework and
runs it on the same event loop as the WebRTC sessions. It only has to serve
kubelet probes, a container HEALTHCHECK and a Prometheus scraper, so it
answers one request per connection (``Connection: close``) and treats every
client as possibly hostile: the request head is size-limited, each
connection has a deadline, and the number of connections handled at once is
capped, so a slow or garbage-spewing client can't hold the endpoint or grow
memory.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Callable, Optional

from server.metrics import TrackingMetrics

logger = logging.getLogger(__name__)

#: Request line plus headers. Probes and scrapers send a few hundred bytes.
MAX_HEAD_BYTES = 8192
#: More header lines than any real probe sends; guards a flood of tiny lines.
MAX_HEADER_LINES = 64
#: A body (nobody should send one) is read and discarded up to this size so
#: that closing the socket doesn't reset the connection before the client has
#: read our error response.
MAX_DISCARDED_BODY = 65536
#: Whole-connection deadline: read the request, write the response. Kubelet's
#: default probe timeout is 1 s, so anything slower is not a real probe.
DEFAULT_TIMEOUT_S = 5.0
#: Connections served at once; more are closed straight away.
DEFAULT_MAX_CONNECTIONS = 32

_ALLOWED_METHODS = ("GET", "HEAD")


class _BadRequest(Exception):
    def __init__(self, status: HTTPStatus) -> None:
        super().__init__(status.phrase)
        self.status = status


class HealthEndpoint:
    """Serves ``GET /healthz`` (200 when ready, else 503) and ``GET /metrics``."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: TrackingMetrics,
        is_ready: Callable[[], bool],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._metrics = metrics
        self._is_ready = is_ready
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        self._server: Optional[asyncio.Server] = None
        # Handler tasks, so stop() can cancel connections still in progress
        # (on Python 3.11 Server.wait_closed() does not wait for them).
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port actually bound (differs from the requested one for port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("HealthEndpoint is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("HealthEndpoint already started")
        # `limit` bounds how much one readline() may buffer, so an endless
        # line fails with LimitOverrunError instead of growing memory.
        self._server = await asyncio.start_server(
            self._on_connection, self._host, self._requested_port, limit=MAX_HEAD_BYTES
        )
        logger.info("health endpoint listening on %s:%d", self._host, self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if len(self._connections) >= self._max_connections:
            logger.warning("health endpoint: too many connections, dropping one")
            writer.transport.abort()
            return
        assert task is not None
        self._connections.add(task)
        served = False
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._serve(reader, writer)
            served = True
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError) as exc:
            logger.debug("health endpoint: client gave up or timed out: %r", exc)
        except Exception:  # never let one request take the endpoint down
            logger.exception("health endpoint: unexpected error")
        finally:
            self._connections.discard(task)
            if served:
                # close() sends what is still buffered, then FIN.
                writer.close()
            else:
                # A client that timed out or vanished gets no graceful close:
                # abort() frees the socket now even if it never reads.
                writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, path, headers = await self._read_head(reader)
        except _BadRequest as bad:
            await self._respond(writer, bad.status, b"", head_only=False)
            return
        await self._discard_body(reader, headers)

        if path == "/healthz":
            handler = self._healthz
        elif path == "/metrics":
            handler = self._metrics_page
        else:
            await self._respond(
                writer, HTTPStatus.NOT_FOUND, b"not found\n", head_only=method == "HEAD"
            )
            return
        if method not in _ALLOWED_METHODS:
            await self._respond(
                writer,
                HTTPStatus.METHOD_NOT_ALLOWED,
                b"method not allowed\n",
                head_only=False,
                extra={"Allow": ", ".join(_ALLOWED_METHODS)},
            )
            return
        status, body, content_type = handler()
        await self._respond(
            writer, status, body, head_only=method == "HEAD", content_type=content_type
        )

    def _healthz(self) -> tuple[HTTPStatus, bytes, str]:
        try:
            ready = bool(self._is_ready())
        except Exception:
            # A readiness callback that raises means the server is not in a
            # state to take sessions: report unready rather than crash.
            logger.exception("health endpoint: is_ready() raised")
            ready = False
        if ready:
            return HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8"
        return HTTPStatus.SERVICE_UNAVAILABLE, b"not ready\n", "text/plain; charset=utf-8"

    def _metrics_page(self) -> tuple[HTTPStatus, bytes, str]:
        body, content_type = self._metrics.exposition()
        return HTTPStatus.OK, body, content_type

    async def _read_head(self, reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
        """Read the request line and headers; raise ``_BadRequest`` on garbage."""
        total = 0
        lines: list[bytes] = []
        while True:
            try:
                line = await reader.readline()
            except (asyncio.LimitOverrunError, ValueError):
                # readline() turns an overlong line into ValueError.
                raise _BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE) from None
            if not line:  # EOF before the blank line
                if not lines:
                    raise ConnectionResetError("client closed without a request")
                raise _BadRequest(HTTPStatus.BAD_REQUEST)
            total += len(line)
            if total > MAX_HEAD_BYTES or len(lines) > MAX_HEADER_LINES:
                raise _BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            stripped = line.rstrip(b"\r\n")
            if not stripped:
                if not lines:
                    continue  # RFC 9112 2.2: ignore blank lines before the request line
                break
            lines.append(stripped)

        try:
            request_line = lines[0].decode("ascii")
        except UnicodeDecodeError:
            raise _BadRequest(HTTPStatus.BAD_REQUEST) from None
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
            raise _BadRequest(HTTPStatus.BAD_REQUEST)
        method, target, _version = parts
        path = target.split("?", 1)[0]

        headers: dict[str, str] = {}
        for raw in lines[1:]:
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequest(HTTPStatus.BAD_REQUEST)
            headers[name.lower()] = value.strip()
        return method, path, headers

    async def _discard_body(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> None:
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            return
        if 0 < length <= MAX_DISCARDED_BODY:
            await reader.readexactly(length)

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        status: HTTPStatus,
        body: bytes,
        *,
        head_only: bool,
        content_type: str = "text/plain; charset=utf-8",
        extra: Optional[dict[str, str]] = None,
    ) -> None:
        if not body and status >= 400:
            body = f"{status.phrase.lower()}\n".encode()
        headers = {
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            "Cache-Control": "no-store",
            "Connection": "close",
            **(extra or {}),
        }
        head = f"HTTP/1.1 {status.value} {status.phrase}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in headers.items()
        )
        writer.write(head.encode("latin-1") + b"\r\n" + (b"" if head_only else body))
        await writer.drain()
