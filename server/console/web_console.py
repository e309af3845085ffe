"""The server's HTTP side: the browser console, its API, WHEP viewers, probes.

An aiohttp application on the server's own event loop, so the console reads
the live sessions directly, never through a copy. Every request is treated
as possibly hostile: aiohttp's parser bounds the request line, the headers
and the body; idle and silent connections are closed after a few seconds,
a body that trickles in gets a 408; the number of connections (in all and
per source address) and of event streams is capped; and nothing a
request sends can reach a session except through a WHEP offer: one on a
session's ``/whep`` only ever creates a separate viewer, one on
``/api/track/whep`` starts a tracking session of its own, counted against
``--max-sessions`` like any client's.

``/readyz`` (alias ``/healthz``), ``/livez`` and ``/metrics`` stay open for probes
and scrapers; with an
access token everything else asks for it.

Probes keep answering because no one address can hold more than
``max_connections_per_peer`` of the ``max_connections``: the kubelet probes
from the node's address, which an attacking pod or host does not share
(docs/reliability.md).

ICE servers reach the pages through ``/api/ice-servers`` and WHEP players
through ``Link`` headers (RFC 9725) on the 201 answer and on ``OPTIONS``, the
only way a player that does not trickle learns them before its offer. With
``--turn-secret`` each of them gets credentials minted for it. Pages of other
origins may use the WHEP endpoints only when named by ``--cors-origin``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, Protocol
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp_sse import sse_response
from multidict import CIMultiDict
from prometheus_client.aiohttp import make_aiohttp_handler

from protocol.ice_servers import IceSettings, link_header_values
from server.console.metrics import TrackingMetrics
from server.console.viewer import ViewerClosed, ViewerLimitReached
from server.core.ledger import FrameRecord
from server.reports.report import REPORT_FILE
from server.sessions.offers import InvalidDescription
from server.sessions.screening import ScreeningProtocol, peer_address
from server.sessions.session import TrackingSession
from server.sessions.tracking_server import ServerBusy
from server.sessions.whep_link import SessionGone, WhepLink

logger = logging.getLogger(__name__)

WEB_ROOT = Path(__file__).resolve().parent / "web"

#: The cookie that carries the access token once the page was opened with ?token=.
TOKEN_COOKIE = "balltracker_token"

#: Paths that never ask for the token: kubelet probes and Prometheus.
OPEN_PATHS = frozenset({"/readyz", "/healthz", "/livez", "/metrics"})

#: The pages a person opens, perhaps once with ?token= (see _require_token).
PAGES = frozenset({"/", "/track"})


#: The console's content security policy: its own scripts, no inline code, no
#: other origin (it must work offline and inside a cluster anyway).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'"
)


#: The WHEP endpoints and their resources: CORS and OPTIONS apply to these.
WHEP_PATH = re.compile(r"/api/(track|sessions/[^/]+)/whep(/[^/]+)?")

#: What a page of another origin may read from a WHEP response.
EXPOSED_HEADERS = "Location, Link, Retry-After, X-Session-Id"

#: Whether the request carried the access token (or none is needed): an
#: OPTIONS without it gets no ICE credentials.
AUTHORIZED = web.RequestKey("authorized", bool)

#: How long a client told 503 waits before it tries again: sessions and
#: viewers come and go in seconds.
RETRY_AFTER_S = 5


def web_origin(text: str) -> str:
    """``scheme://host[:port]`` as browsers send it in ``Origin`` (or ``*``); ValueError else."""
    text = text.strip()
    if text == "*":
        return text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError(f"{text!r}: an origin is http(s)://host[:port], without a path")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"{text!r}: an origin is http(s)://host[:port] and nothing more")
    return f"{parts.scheme}://{parts.netloc}".lower()


def unavailable(text: str) -> web.HTTPServiceUnavailable:
    """A 503 that says when to try again."""
    return web.HTTPServiceUnavailable(text=text, headers={"Retry-After": str(RETRY_AFTER_S)})


@dataclass(frozen=True)
class HttpLimits:
    #: Bodies: an SDP offer is a few KiB; nothing else takes a body.
    max_body_bytes: int = 64 * 1024
    #: Request line and each header line.
    max_line_bytes: int = 8190
    max_headers: int = 64
    #: A connection that sends nothing (or stops mid-request) is closed after this.
    idle_timeout_s: float = 5.0
    #: Connections served at once; more are closed straight away.
    max_connections: int = 128
    #: Of those, what one source address may hold: a browser profile opens
    #: up to six, and several browsers behind one NAT share an address.
    max_connections_per_peer: int = 16
    #: How long a request body may take to arrive in full; then 408.
    body_timeout_s: float = 5.0
    #: Live event streams (a console tab holds one or two).
    max_event_streams: int = 16
    #: How often the table's stream pushes the numbers.
    table_interval_s: float = 0.5
    #: How often a session's stream pushes its new answers.
    answers_interval_s: float = 0.25


class ConsoleSource(Protocol):
    """What the console reads from the server (``TrackingServer``)."""

    @property
    def ready(self) -> bool: ...

    def session_rows(self) -> list[dict[str, Any]]: ...

    def live_session(self, session_id: str) -> Optional[TrackingSession]: ...

    def report_path(self, file_name: str) -> Optional[Path]: ...

    async def open_whep_session(
        self, offer_sdp: str, peer: str
    ) -> tuple[WhepLink, TrackingSession]: ...

    def delete_whep_session(self, resource_id: str) -> bool: ...


class Viewers(Protocol):
    """The WHEP viewers (``server.console.viewer.SessionViewers``)."""

    async def open(self, session: TrackingSession, offer_sdp: str) -> Any: ...

    async def close(self, session_id: str, viewer_id: str) -> bool: ...


class _QuietClientErrors(logging.LoggerAdapter):
    """aiohttp's request log, where a malformed request is one debug line.

    aiohttp answers it with a 400 and logs the parser's traceback as an
    error; that is the client's mistake, not the server's, so it must not
    fill the server's log. Errors in our own handlers still log in full.
    """

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self.debug("bad request: %s", exc_info.message)
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)


class _Refused(asyncio.Protocol):
    """Stands in for a connection beyond the cap: closed as soon as it opens."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _PerPeer(ScreeningProtocol):
    """A connection counted against its source address's cap.

    aiohttp's protocol is created before the peer is known, so this one
    stands in front of it: over the cap it closes the connection before
    aiohttp sees a byte; otherwise it hands everything on.
    """

    def __init__(
        self, inner: Callable[[], asyncio.Protocol], counts: dict[str, int], cap: int
    ) -> None:
        super().__init__()
        self._make_inner = inner
        self._counts = counts
        self._cap = cap
        self._address: Optional[str] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        address = peer_address(transport)
        if self._counts.get(address, 0) >= self._cap:
            transport.close()
            return
        self._address = address
        self._counts[address] = self._counts.get(address, 0) + 1
        self.hand_on(self._make_inner(), transport)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self._address is not None:
            left = self._counts[self._address] - 1
            if left:
                self._counts[self._address] = left
            else:
                del self._counts[self._address]
            self._address = None
        super().connection_lost(exc)


class WebConsole:
    def __init__(
        self,
        host: str,
        port: int,
        source: ConsoleSource,
        metrics: TrackingMetrics,
        viewers: Optional[Viewers] = None,
        access_token: Optional[str] = None,
        limits: HttpLimits = HttpLimits(),
        ice: Optional[IceSettings] = None,
        cors_origins: tuple[str, ...] = (),
    ) -> None:
        self._host = host
        self._requested_port = port
        self._source = source
        self._metrics = metrics
        self._viewers = viewers
        self._access_token = access_token
        self._limits = limits
        #: The ICE servers handed to pages and players (--ice-server).
        self._ice = ice if ice is not None else IceSettings()
        self._cors_origins = frozenset(cors_origins)
        self._runner: Optional[web.AppRunner] = None
        self._listener: Optional[asyncio.Server] = None
        self._closing = asyncio.Event()
        self._event_streams = 0
        #: Open connections per source address (``_PerPeer``).
        self._per_peer: dict[str, int] = {}

    @property
    def port(self) -> int:
        """The port actually bound (differs from the requested one for port 0)."""
        if self._listener is None or not self._listener.sockets:
            raise RuntimeError("WebConsole is not started")
        return int(self._listener.sockets[0].getsockname()[1])

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("WebConsole already started")
        limits = self._limits
        runner = web.AppRunner(
            self._application(),
            access_log=None,
            handle_signals=False,
            keepalive_timeout=limits.idle_timeout_s,
            max_line_size=limits.max_line_bytes,
            max_field_size=limits.max_line_bytes,
            max_headers=limits.max_headers,
            shutdown_timeout=1.0,
            logger=_QuietClientErrors(logging.getLogger("aiohttp.server"), {}),
        )
        await runner.setup()
        connections = runner.server
        assert connections is not None

        def accept() -> asyncio.BaseProtocol:
            # aiohttp has no connection cap of its own: shed the excess here,
            # before a handler or a parser is spent on it.
            if len(connections.connections) >= limits.max_connections:
                return _Refused()
            return _PerPeer(connections, self._per_peer, limits.max_connections_per_peer)

        loop = asyncio.get_running_loop()
        try:
            self._listener = await loop.create_server(accept, self._host, self._requested_port)
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        logger.info("console on http://%s:%d/", self._host, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._closing.set()
        if self._listener is not None:
            self._listener.close()
        await runner.cleanup()
        if self._listener is not None:
            await self._listener.wait_closed()
            self._listener = None

    def _application(self) -> web.Application:
        app = web.Application(
            client_max_size=self._limits.max_body_bytes,
            middlewares=[self._require_token, self._cors, self._security_headers],
        )
        app.router.add_get("/", self._index)
        app.router.add_get("/track", self._track_page)
        app.router.add_static("/static/", WEB_ROOT / "static")
        app.router.add_get("/readyz", self._readyz)
        # /healthz: the name this endpoint had first, kept for existing probes.
        app.router.add_get("/healthz", self._readyz)
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/metrics", make_aiohttp_handler(self._metrics.registry, True))
        app.router.add_get("/api/ice-servers", self._ice_servers)
        app.router.add_get("/api/sessions", self._sessions)
        app.router.add_get("/api/events", self._table_events)
        app.router.add_get("/api/sessions/{id}/events", self._answer_events)
        app.router.add_post("/api/sessions/{id}/whep", self._open_viewer)
        app.router.add_delete("/api/sessions/{id}/whep/{viewer}", self._close_viewer)
        app.router.add_post("/api/track/whep", self._open_tracking)
        app.router.add_delete("/api/track/whep/{resource}", self._close_tracking)
        for whep in (
            "/api/sessions/{id}/whep",
            "/api/sessions/{id}/whep/{viewer}",
            "/api/track/whep",
            "/api/track/whep/{resource}",
        ):
            app.router.add_route("OPTIONS", whep, self._whep_options)
        app.router.add_get("/reports/{file}", self._report)
        return app

    # -- middlewares ----------------------------------------------------------

    @web.middleware
    async def _require_token(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        expected = self._access_token
        if expected is None or request.path in OPEN_PATHS:
            request[AUTHORIZED] = True
            return await handler(request)
        if request.method == "OPTIONS" and WHEP_PATH.fullmatch(request.path):
            # A CORS preflight never carries the token; its answer carries
            # the ICE servers' credentials only to a player that sent it.
            request[AUTHORIZED] = self._has_token(request, expected)
            return await handler(request)
        offered = request.query.get("token")
        if request.path in PAGES and offered is not None and _same(offered, expected):
            # A page is opened once with ?token=; from then on the cookie
            # carries it, also for EventSource, which cannot set headers.
            kept = [(key, value) for key, value in request.query.items() if key != "token"]
            page = web.HTTPSeeOther(request.rel_url.with_query(kept))
            page.set_cookie(TOKEN_COOKIE, expected, httponly=True, samesite="Strict", path="/")
            raise page
        if self._has_token(request, expected):
            request[AUTHORIZED] = True
            return await handler(request)
        raise web.HTTPUnauthorized(
            text="401: an access token is needed (Authorization: Bearer, or open /?token=...)\n",
            headers={"WWW-Authenticate": 'Bearer realm="balltracker"'},
        )

    @staticmethod
    def _has_token(request: web.Request, expected: str) -> bool:
        bearer = request.headers.get("Authorization", "")
        if bearer.startswith("Bearer ") and _same(bearer[len("Bearer ") :], expected):
            return True
        return _same(request.cookies.get(TOKEN_COOKIE, ""), expected)

    @web.middleware
    async def _cors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """CORS for the WHEP endpoints: the console's own origin, and --cors-origin."""
        origin = request.headers.get("Origin")
        if origin is None or not WHEP_PATH.fullmatch(request.path):
            return await handler(request)
        allowed = self._allows(origin, request)
        if request.method == "OPTIONS" and not allowed:
            raise web.HTTPForbidden(text=f"origin {origin} may not use this endpoint\n")
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if allowed:  # the page may read why (a 503's Retry-After, say)
                self._allow_origin(exc.headers, origin)
            raise
        if allowed:
            self._allow_origin(response.headers, origin)
        return response

    def _allows(self, origin: str, request: web.Request) -> bool:
        if urlsplit(origin).netloc.lower() == request.host.lower():
            return True  # the console's own pages
        return "*" in self._cors_origins or origin.lower() in self._cors_origins

    def _allow_origin(self, headers: CIMultiDict[str], origin: str) -> None:
        headers["Access-Control-Allow-Origin"] = "*" if "*" in self._cors_origins else origin
        headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        headers["Vary"] = "Origin"

    @web.middleware
    async def _security_headers(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        if not response.prepared:
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    # -- pages, probes, table ----------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(WEB_ROOT / "index.html")

    async def _track_page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(WEB_ROOT / "track.html")

    async def _readyz(self, request: web.Request) -> web.Response:
        """Readiness: 200 while a new client would get a session, else 503."""
        try:
            ready = self._source.ready
        except Exception:  # a readiness check that breaks means "not ready"
            logger.exception("readiness check failed")
            ready = False
        if ready:
            return web.Response(text="ok\n")
        return web.Response(
            status=503, text="not ready\n", headers={"Retry-After": str(RETRY_AFTER_S)}
        )

    async def _livez(self, request: web.Request) -> web.Response:
        """Liveness: answering at all shows the event loop runs, full or not."""
        return web.Response(text="alive\n")

    async def _ice_servers(self, request: web.Request) -> web.Response:
        """The ICE servers a page builds its peer connection with, before its offer."""
        servers = self._ice.servers(f"page-{secrets.token_hex(4)}", time.time())
        return web.json_response(
            {"iceServers": [server.as_json() for server in servers]},
            headers={"Cache-Control": "no-store"},  # credentials: never from a cache
        )

    async def _sessions(self, request: web.Request) -> web.Response:
        return web.json_response({"sessions": self._source.session_rows()})

    async def _table_events(self, request: web.Request) -> web.StreamResponse:
        self._claim_event_stream()
        try:
            async with sse_response(request) as stream:
                previous = ""
                while stream.is_connected():
                    table = json.dumps({"sessions": self._source.session_rows()})
                    if table != previous:
                        await stream.send(table, event="sessions")
                        previous = table
                    if not await self._pause(self._limits.table_interval_s):
                        break
            return stream
        finally:
            self._event_streams -= 1

    async def _answer_events(self, request: web.Request) -> web.StreamResponse:
        """A session's answers as they come, for the live charts; then its end."""
        session = self._live_session(request)
        self._claim_event_stream()
        try:
            async with sse_response(request) as stream:
                newest = -1
                while stream.is_connected() and not session.ended:
                    fresh = [r for r in session.recent_answers if r.index > newest]
                    if fresh:
                        newest = fresh[-1].index
                        points = [_answer_point(r.index / session.fps, r) for r in fresh]
                        await stream.send(json.dumps(points), event="answers")
                    if not await self._pause(self._limits.answers_interval_s):
                        break
                if session.ended:
                    await stream.send(json.dumps(session.summary()), event="ended")
            return stream
        finally:
            self._event_streams -= 1

    async def _report(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["file"]
        path = self._source.report_path(name) if REPORT_FILE.fullmatch(name) else None
        if path is None:
            raise web.HTTPNotFound(text="no such report\n")
        return web.FileResponse(path)

    # -- WHEP --------------------------------------------------------------------

    async def _open_viewer(self, request: web.Request) -> web.Response:
        session = self._live_session(request)
        if self._viewers is None:
            raise unavailable("viewers are off on this server\n")
        offer = await _read_offer(request, self._limits.body_timeout_s)
        try:
            viewer = await self._viewers.open(session, offer)
        except InvalidDescription as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        except ViewerLimitReached as exc:
            raise unavailable(f"{exc}\n") from None
        except ViewerClosed as exc:  # the session ended while the offer arrived
            raise web.HTTPNotFound(text=f"{exc}\n") from None
        headers = self._link_headers("whep")
        headers["Location"] = f"/api/sessions/{session.name}/whep/{viewer.id}"
        return web.Response(
            status=201,
            body=viewer.answer_sdp.encode(),
            content_type="application/sdp",
            headers=headers,
        )

    async def _close_viewer(self, request: web.Request) -> web.Response:
        closed = self._viewers is not None and await self._viewers.close(
            request.match_info["id"], request.match_info["viewer"]
        )
        if not closed:
            raise web.HTTPNotFound(text="no such viewer\n")
        return web.Response(text="viewer closed\n")

    async def _open_tracking(self, request: web.Request) -> web.Response:
        """A browser that tracks: its offer starts a tracking session (``/track``)."""
        offer = await _read_offer(request, self._limits.body_timeout_s)
        try:
            link, session = await self._source.open_whep_session(offer, request.remote or "?")
        except InvalidDescription as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        except (ServerBusy, SessionGone) as exc:
            raise unavailable(f"{exc}\n") from None
        headers = self._link_headers("whep")
        headers["Location"] = f"/api/track/whep/{link.resource_id}"
        # The page follows its own session's scores on /api/sessions/{id}/events.
        headers["X-Session-Id"] = session.name
        return web.Response(
            status=201,
            body=(await link.answer()).encode(),
            content_type="application/sdp",
            headers=headers,
        )

    async def _whep_options(self, request: web.Request) -> web.Response:
        """A player's OPTIONS (or a browser's preflight): the ICE servers, before its offer."""
        endpoint = "resource" not in request.match_info and "viewer" not in request.match_info
        methods = "OPTIONS, POST" if endpoint else "OPTIONS, DELETE"
        headers = self._link_headers("whep") if request.get(AUTHORIZED, False) else CIMultiDict()
        headers["Allow"] = methods
        headers["Access-Control-Allow-Methods"] = methods
        headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        headers["Access-Control-Max-Age"] = "600"
        if endpoint:
            headers["Accept-Post"] = "application/sdp"
        return web.Response(status=204, headers=headers)

    def _link_headers(self, user: str) -> CIMultiDict[str]:
        """One ``Link: <url>; rel="ice-server"...`` header per ICE server URL, minted now."""
        servers = self._ice.servers(f"{user}-{secrets.token_hex(4)}", time.time())
        headers: CIMultiDict[str] = CIMultiDict()
        for value in link_header_values(servers):
            headers.add("Link", value)
        return headers

    async def _close_tracking(self, request: web.Request) -> web.Response:
        if not self._source.delete_whep_session(request.match_info["resource"]):
            raise web.HTTPNotFound(text="no such tracking session\n")
        return web.Response(text="session ending\n")

    # -- helpers -----------------------------------------------------------------

    def _live_session(self, request: web.Request) -> TrackingSession:
        session = self._source.live_session(request.match_info["id"])
        if session is None:
            raise web.HTTPNotFound(text="no such live session\n")
        return session

    def _claim_event_stream(self) -> None:
        if self._event_streams >= self._limits.max_event_streams:
            raise unavailable("too many event streams\n")
        self._event_streams += 1

    async def _pause(self, seconds: float) -> bool:
        """Sleep; False when the console is closing (streams then end)."""
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except asyncio.TimeoutError:
            return True
        return False


async def _read_offer(request: web.Request, timeout: float) -> str:
    if request.content_type != "application/sdp":
        raise web.HTTPUnsupportedMediaType(text="the offer must be application/sdp\n")
    try:
        # aiohttp waits for a body as long as it trickles; a handful of such
        # requests would otherwise hold their connections for good.
        body = await asyncio.wait_for(request.read(), timeout)
    except asyncio.TimeoutError:
        raise web.HTTPRequestTimeout(
            text=f"408: the body did not arrive within {timeout:g} s\n",
            headers={"Connection": "close"},
        ) from None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise web.HTTPBadRequest(text="the offer is not UTF-8 text\n") from None


def _same(offered: str, expected: str) -> bool:
    return hmac.compare_digest(offered.encode(), expected.encode())


def _answer_point(time_s: float, record: FrameRecord) -> dict[str, Optional[float]]:
    return {
        "t": round(time_s, 4),
        "error_px": record.error_px,
        "latency_ms": record.latency_ms,
    }
