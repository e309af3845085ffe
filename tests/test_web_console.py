"""WebConsole over real TCP on 127.0.0.1, with a stand-in for the server's state.

urllib for well-formed requests (run in a thread, since the console lives on
the test's event loop) and raw asyncio streams for the garbage a well-behaved
client library won't send. The real server with its real sessions is
exercised in tests/test_console_end_to_end.py.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, TypeVar

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from protocol.ice_servers import (
    IceSettings,
    parse_ice_url,
    parse_link_headers,
    turn_rest_credentials,
)
from server.console.metrics import TrackingMetrics
from server.console.session_table import SessionTable
from server.console.web_console import TOKEN_COOKIE, HttpLimits, WebConsole, web_origin
from server.sessions.tracking_server import ServerBusy

T = TypeVar("T")

SUMMARY = {
    "session": "session-20261127T101010-0001",
    "started_at": "2026-11-27T10:10:10+00:00",
    "peer": "127.0.0.1:50000",
    "end_reason": "client said bye",
    "duration_s": 10.0,
    "frames_sent": 300,
    "frames_answered": 299,
    "answered_ratio": 299 / 300,
    "error_px": {"mean": 0.01, "p50": 0.01, "p95": 0.02, "max": 0.05},
    "latency_ms": {"mean": 5.0, "p50": 4.9, "p95": 7.0, "p99": 9.0, "max": 12.0},
    "scene": "occlusion",
    "error_at_arrival_px": {"mean": 9.5, "p50": 9.0, "p95": 14.0, "max": 20.0},
    "visibility": {
        "frames_hidden": 24,
        "found_when_visible_ratio": 0.98,
        "false_positives_when_hidden": 2,
    },
}


class FakeServer:
    """The part of TrackingServer the console reads, with no sessions running."""

    def __init__(self, report_dir: Optional[Path] = None) -> None:
        self.is_ready = True
        self.table = SessionTable()
        self.report_dir = report_dir

    @property
    def ready(self) -> bool:
        return self.is_ready

    def session_rows(self) -> list[dict[str, Any]]:
        return self.table.rows([])

    def live_session(self, session_id: str) -> None:
        return None

    def report_path(self, file_name: str) -> Optional[Path]:
        if self.report_dir is None or not (self.report_dir / file_name).is_file():
            return None
        return self.report_dir / file_name


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


def http(
    port: int,
    path: str,
    method: str = "GET",
    data: Optional[bytes] = None,
    headers: Optional[dict[str, str]] = None,
) -> Response:
    """One blocking request with urllib; HTTP errors are returned, not raised."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method, data=data, headers=headers or {}
    )

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=5) as r:
            return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


async def get(port: int, path: str, method: str = "GET", **kwargs: Any) -> Response:
    return await asyncio.to_thread(http, port, path, method, **kwargs)


async def raw(port: int, payload: bytes, *, close_write: bool = True) -> bytes:
    """Send bytes as-is and return everything the server answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        if close_write:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(), timeout=5)
    except OSError:  # reset, or shut before we were done sending
        return b"<reset>"
    finally:
        writer.close()


def run_with_console(
    body: Callable[[WebConsole, TrackingMetrics, FakeServer], Awaitable[T]],
    report_dir: Optional[Path] = None,
    **kwargs: Any,
) -> T:
    """Start a console on an ephemeral port, run ``body``, always stop it."""

    async def main() -> T:
        metrics = TrackingMetrics()
        server = FakeServer(report_dir)
        console = WebConsole("127.0.0.1", 0, server, metrics, **kwargs)
        await console.start()
        try:
            return await body(console, metrics, server)
        finally:
            await console.stop()

    return asyncio.run(main())


def test_port_zero_binds_an_ephemeral_port_and_port_before_start_raises() -> None:
    with pytest.raises(RuntimeError):
        _ = WebConsole("127.0.0.1", 0, FakeServer(), TrackingMetrics()).port

    async def body(console: WebConsole, *_: object) -> None:
        assert 0 < console.port < 65536

    run_with_console(body)


def test_healthz_follows_readiness() -> None:
    async def body(console: WebConsole, _m: TrackingMetrics, server: FakeServer) -> None:
        ok = await get(console.port, "/healthz")
        assert (ok.status, ok.body) == (200, b"ok\n")
        server.is_ready = False
        assert (await get(console.port, "/healthz")).status == 503
        server.is_ready = True
        assert (await get(console.port, "/healthz?probe=1")).status == 200

    run_with_console(body)


def test_livez_stays_200_while_readiness_says_full() -> None:
    async def body(console: WebConsole, _m: TrackingMetrics, server: FakeServer) -> None:
        server.is_ready = False  # every session slot taken: the kubelet must not restart it
        assert (await get(console.port, "/healthz")).status == 503
        alive = await get(console.port, "/livez")
        assert (alive.status, alive.body) == (200, b"alive\n")

    run_with_console(body)


def test_a_readiness_check_that_raises_means_unready() -> None:
    class Broken(FakeServer):
        @property
        def ready(self) -> bool:
            raise RuntimeError("boom")

    async def main() -> None:
        console = WebConsole("127.0.0.1", 0, Broken(), TrackingMetrics())
        await console.start()
        try:
            assert (await get(console.port, "/healthz")).status == 503
            assert (await get(console.port, "/metrics")).status == 200
        finally:
            await console.stop()

    asyncio.run(main())


def test_metrics_page_parses_and_reflects_updates() -> None:
    async def body(console: WebConsole, m: TrackingMetrics, _s: FakeServer) -> None:
        m.session_started()
        m.frame_sent()
        m.frame_sent()
        m.frame_answered(0.25, 33.0)
        r = await get(console.port, "/metrics")
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/plain")
        values = {
            s.name: s.value
            for f in text_string_to_metric_families(r.body.decode())
            for s in f.samples
            if not s.labels
        }
        assert values["balltracker_active_sessions"] == 1
        assert values["balltracker_frames_sent_total"] == 2
        assert values["balltracker_frames_answered_total"] == 1
        assert values["balltracker_latency_seconds_sum"] == pytest.approx(0.033)

    run_with_console(body)


def test_unknown_path_404_and_wrong_method_405() -> None:
    async def body(console: WebConsole, *_: object) -> None:
        assert (await get(console.port, "/nothing-here")).status == 404
        assert (await get(console.port, "/healthz/extra")).status == 404
        posted = await get(console.port, "/healthz", "POST", data=b"x=1")
        assert posted.status == 405
        assert set(posted.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}
        assert (await get(console.port, "/metrics", "DELETE")).status == 405

    run_with_console(body)


def test_head_has_headers_but_no_body() -> None:
    async def body(console: WebConsole, *_: object) -> None:
        answer = await raw(
            console.port,
            b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            close_write=False,
        )
        head, _sep, rest = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"Content-Length: 3" in head
        assert rest == b""

    run_with_console(body)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\xff\xfe garbage \x80\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /healthz\r\n\r\n",
        b"GET /healthz SPDY/3\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",  # EOF before the blank line
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)),  # a TLS hello
    ],
)
def test_garbage_gets_400_and_the_console_survives(payload: bytes) -> None:
    async def body(console: WebConsole, *_: object) -> None:
        answer = await raw(console.port, payload)
        assert answer.startswith(b"HTTP/1.1 400") or answer in (b"", b"<reset>")
        assert (await get(console.port, "/healthz")).status == 200

    run_with_console(body)


def test_oversized_heads_and_bodies_are_rejected() -> None:
    async def body(console: WebConsole, *_: object) -> None:
        long_line = b"GET /" + b"a" * 40000 + b" HTTP/1.1\r\n\r\n"
        many_headers = b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 1000 + b"\r\n"
        for payload in (long_line, many_headers):
            answer = await raw(console.port, payload)
            assert answer[:12] in (b"HTTP/1.1 400", b"HTTP/1.1 431", b"", b"<reset>")
        huge = await get(
            console.port,
            "/api/sessions/x/whep",
            "POST",
            data=b"v=0\r\n" * 100_000,
            headers={"Content-Type": "application/sdp"},
        )
        assert huge.status in (404, 413)
        assert (await get(console.port, "/healthz")).status == 200

    run_with_console(body)


def test_silent_client_is_cut_off_and_does_not_block_others() -> None:
    async def body(console: WebConsole, *_: object) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
        writer.write(b"GET /heal")  # ...and then nothing
        await writer.drain()
        # Served while the slow client is still connected.
        assert (await get(console.port, "/healthz")).status == 200
        started = time.monotonic()
        await asyncio.wait_for(reader.read(), timeout=5)
        assert time.monotonic() - started < 3
        writer.close()

    run_with_console(body, limits=HttpLimits(idle_timeout_s=0.5))


def test_connection_cap_sheds_excess_clients() -> None:
    async def body(console: WebConsole, *_: object) -> None:
        idle = [await asyncio.open_connection("127.0.0.1", console.port) for _ in range(3)]
        await asyncio.sleep(0.1)
        # The cap is full of idle clients: a new one is closed at once...
        extra = await raw(console.port, b"GET /healthz HTTP/1.1\r\n\r\n")
        assert extra in (b"", b"<reset>")
        for _r, w in idle:
            w.close()
        await asyncio.sleep(0.2)
        # ...and once they leave, requests are served again.
        assert (await get(console.port, "/healthz")).status == 200

    run_with_console(body, limits=HttpLimits(max_connections=3))


def test_stop_with_open_connections_is_prompt_and_frees_the_port() -> None:
    async def main() -> None:
        console = WebConsole("127.0.0.1", 0, FakeServer(), TrackingMetrics())
        await console.start()
        port = console.port
        _r, w = await asyncio.open_connection("127.0.0.1", port)
        events = asyncio.create_task(get(port, "/api/events"))  # a stream that never ends
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await console.stop()
        assert time.monotonic() - started < 3
        w.close()
        await events
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        await console.stop()  # idempotent

    asyncio.run(main())


def test_sessions_api_lists_the_table() -> None:
    async def body(console: WebConsole, _m: TrackingMetrics, server: FakeServer) -> None:
        assert json.loads((await get(console.port, "/api/sessions")).body) == {"sessions": []}
        server.table.session_ended(SUMMARY, {"json": "/reports/x.json"})
        rows = json.loads((await get(console.port, "/api/sessions")).body)["sessions"]
        assert [(r["id"], r["state"]) for r in rows] == [(SUMMARY["session"], "ended")]
        assert rows[0]["latency_p99_ms"] == 9.0
        assert rows[0]["reports"] == {"json": "/reports/x.json"}
        # The scene and its headline scores, as the table's columns show them.
        assert (rows[0]["scene"], rows[0]["error_at_arrival_mean_px"]) == ("occlusion", 9.5)
        assert rows[0]["found_when_visible_ratio"] == 0.98
        assert rows[0]["false_positives_when_hidden"] == 2

    run_with_console(body)


def test_table_events_push_the_table_and_its_changes() -> None:
    async def body(console: WebConsole, _m: TrackingMetrics, server: FakeServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
        writer.write(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()

        async def next_event() -> dict[str, Any]:
            while True:
                line = await asyncio.wait_for(reader.readline(), 5)
                if line.startswith(b"data: "):
                    return json.loads(line[len(b"data: ") :])

        assert await next_event() == {"sessions": []}
        server.table.session_ended(SUMMARY)
        started = time.monotonic()
        changed = await next_event()
        assert time.monotonic() - started < 1.0  # "within a second"
        assert changed["sessions"][0]["id"] == SUMMARY["session"]
        writer.close()

    run_with_console(body)


def test_event_streams_are_capped() -> None:
    async def body(console: WebConsole, *_: object) -> None:
        streams = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
            writer.write(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            streams.append(writer)
        assert (await get(console.port, "/api/events")).status == 503
        for writer in streams:
            writer.close()

    run_with_console(body, limits=HttpLimits(max_event_streams=2))


def test_unknown_sessions_and_viewers_are_404() -> None:
    async def body(console: WebConsole, *_: object) -> None:
        port = console.port
        assert (await get(port, "/api/sessions/nope/events")).status == 404
        offer = {"data": b"v=0\r\n", "headers": {"Content-Type": "application/sdp"}}
        assert (await get(port, "/api/sessions/nope/whep", "POST", **offer)).status == 404
        assert (await get(port, "/api/sessions/nope/whep/abc", "DELETE")).status == 404
        assert (await get(port, "/api/sessions/nope/whep/abc", "PATCH")).status == 405

    run_with_console(body)


def test_reports_serve_only_report_files(tmp_path: Path) -> None:
    name = "session-20261127T101010-0001.json"
    (tmp_path / name).write_text('{"ok": true}')
    (tmp_path / "session-20261127T101010-0001.seconds.csv").write_text("second\n")
    (tmp_path / "secret.txt").write_text("no")
    (tmp_path / "session-20261127T101010-0001.other.csv").write_text("no")
    # Session ids carry the server's random per-process suffix.
    suffixed = "session-20261203T191438-0001-77301c.png"
    (tmp_path / suffixed).write_bytes(b"png")

    async def body(console: WebConsole, *_: object) -> None:
        served = await get(console.port, f"/reports/{name}")
        assert (served.status, json.loads(served.body)) == (200, {"ok": True})
        assert (await get(console.port, f"/reports/{suffixed}")).status == 200
        per_second = await get(console.port, "/reports/session-20261127T101010-0001.seconds.csv")
        assert (per_second.status, per_second.body) == (200, b"second\n")
        for path in (
            "/reports/session-20261127T101010-0001.other.csv",
            "/reports/secret.txt",
            "/reports/..%2Fsecret.txt",
            "/reports/%2e%2e/%2e%2e/etc/passwd",
            "/reports/session-20261127T101010-0002.json",
        ):
            assert (await get(console.port, path)).status == 404, path

    run_with_console(body, report_dir=tmp_path)


def test_the_page_and_its_assets_are_served_with_a_strict_policy() -> None:
    async def body(console: WebConsole, *_: object) -> None:
        page = await get(console.port, "/")
        assert page.status == 200 and b'<table id="sessions">' in page.body
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for asset in ("console.js", "chart.js", "live_view.js", "console.css"):
            assert (await get(console.port, f"/static/{asset}")).status == 200, asset
        assert (await get(console.port, "/static/../web_console.py")).status == 404

    run_with_console(body)


def test_access_token_guards_everything_but_probes() -> None:
    token = "s3cret-token"

    async def body(console: WebConsole, *_: object) -> None:
        port = console.port
        for path in ("/", "/track", "/api/sessions", "/api/events", "/static/console.js"):
            refused = await get(port, path)
            assert refused.status == 401, path
            assert "bearer" in refused.headers["www-authenticate"].lower()
            wrong = await get(port, path, headers={"Authorization": "Bearer nope"})
            assert wrong.status == 401, path
        assert (await get(port, "/?token=nope")).status == 401
        assert (await get(port, "/healthz")).status == 200
        assert (await get(port, "/livez")).status == 200
        assert (await get(port, "/metrics")).status == 200
        posted = await get(port, "/api/track/whep", "POST", data=b"v=0")
        assert posted.status == 401  # a tracking session costs a slot: token first
        bearer = {"Authorization": f"Bearer {token}"}
        assert (await get(port, "/api/sessions", headers=bearer)).status == 200
        # The page opened once with ?token= gets a cookie and a clean URL.
        opened = await get(port, f"/?token={token}")
        assert (opened.status, opened.headers["location"]) == (303, "/")
        cookie = opened.headers["set-cookie"]
        assert cookie.startswith(f"{TOKEN_COOKIE}=") and "HttpOnly" in cookie
        with_cookie = {"Cookie": cookie.split(";")[0]}
        assert (await get(port, "/", headers=with_cookie)).status == 200
        # The tracking page too, keeping its own parameters.
        track = await get(port, f"/track?seconds=5&token={token}")
        assert (track.status, track.headers["location"]) == (303, "/track?seconds=5")
        assert (await get(port, "/api/sessions", headers=with_cookie)).status == 200

    run_with_console(body, access_token=token)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
    path=st.sampled_from(
        ["/", "/api/sessions", "/api/sessions/x/whep", "/api/sessions/x/whep/y", "/reports/a"]
    )
    | st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40).map(
        lambda s: "/" + s.replace("?", "").replace("#", "")
    ),
    body=st.binary(max_size=2048),
    content_type=st.sampled_from(["application/sdp", "text/plain", "application/json", ""]),
)
def test_fuzzed_requests_get_a_clean_answer(
    method: str, path: str, body: bytes, content_type: str
) -> None:
    async def run(console: WebConsole, *_: object) -> None:
        headers = {"Content-Type": content_type} if content_type else {}
        data = body if method not in ("GET", "HEAD") else None
        answer = await get(console.port, path, method, data=data, headers=headers)
        assert answer.status < 500 or answer.status == 503, (answer.status, answer.body)
        assert (await get(console.port, "/healthz")).status == 200

    run_with_console(run)


# -- ICE servers, WHEP's Link headers, CORS, Retry-After --------------------------------

TURN_ICE = IceSettings((parse_ice_url("turn:relay.example:3478?transport=udp"),), turn_secret="k")
PLAYER_ORIGIN = "https://player.example"
PREFLIGHT = {"Origin": PLAYER_ORIGIN, "Access-Control-Request-Method": "POST"}


class WhepServer(FakeServer):
    """A FakeServer whose /api/track/whep answers, or is busy."""

    busy = False

    async def open_whep_session(self, offer_sdp: str, peer: str) -> tuple[Any, Any]:
        if self.busy:
            raise ServerBusy("server busy: 10 sessions active")

        class Link:
            resource_id = "r1"

            async def answer(self) -> str:
                return "v=0\r\n"

        class Session:
            name = "session-20261127T101010-0002"

        return Link(), Session()


def run_with_whep_console(body: Callable[[str, WhepServer], Awaitable[T]], **kwargs: Any) -> T:
    async def main() -> T:
        server = WhepServer()
        console = WebConsole("127.0.0.1", 0, server, TrackingMetrics(), **kwargs)  # type: ignore[arg-type]
        await console.start()
        try:
            return await body(f"http://127.0.0.1:{console.port}", server)
        finally:
            await console.stop()

    return asyncio.run(main())


def test_the_ice_servers_endpoint_mints_credentials_for_each_page() -> None:
    async def body(base: str, server: WhepServer) -> None:
        async with aiohttp.ClientSession() as http_session:
            answers = []
            for _ in range(2):
                async with http_session.get(f"{base}/api/ice-servers") as response:
                    assert response.status == 200
                    assert response.headers["Cache-Control"] == "no-store"
                    answers.append(await response.json())
        first, second = (a["iceServers"][0] for a in answers)
        assert first["urls"] == ["turn:relay.example:3478?transport=udp"]
        expiry, _, user = first["username"].partition(":")
        assert int(expiry) > time.time() + 3600 and user.startswith("page-")
        assert first["username"] != second["username"]  # one per page
        assert (first["username"], first["credential"]) == turn_rest_credentials(
            "k", int(expiry), user
        )

    run_with_whep_console(body, ice=TURN_ICE)


def test_without_ice_servers_the_pages_get_none() -> None:
    async def body(base: str, server: WhepServer) -> None:
        async with aiohttp.ClientSession() as http_session:
            async with http_session.get(f"{base}/api/ice-servers") as response:
                assert await response.json() == {"iceServers": []}

    run_with_whep_console(body)


def test_whep_options_and_201_carry_the_ice_servers_in_link_headers() -> None:
    async def body(base: str, server: WhepServer) -> None:
        async with aiohttp.ClientSession() as http_session:
            async with http_session.options(f"{base}/api/track/whep") as response:
                assert response.status == 204
                assert response.headers["Accept-Post"] == "application/sdp"
                assert "POST" in response.headers["Allow"]
                (linked,) = parse_link_headers(response.headers.getall("Link"))
            assert linked.urls == ("turn:relay.example:3478?transport=udp",)
            assert linked.username is not None and linked.username.split(":")[1].startswith("whep-")
            async with http_session.post(
                f"{base}/api/track/whep",
                data=b"v=0\r\n",
                headers={"Content-Type": "application/sdp"},
            ) as response:
                assert response.status == 201
                assert response.headers["Location"] == "/api/track/whep/r1"
                (answered,) = parse_link_headers(response.headers.getall("Link"))
            assert answered.urls == linked.urls and answered.username != linked.username

    run_with_whep_console(body, ice=TURN_ICE)


def test_options_hand_out_credentials_only_with_the_access_token() -> None:
    async def body(base: str, server: WhepServer) -> None:
        async with aiohttp.ClientSession() as http_session:
            url = f"{base}/api/sessions/some-session/whep"
            async with http_session.options(url, headers=PREFLIGHT) as response:
                assert response.status == 204  # a preflight never carries the token
                assert "Link" not in response.headers
            async with http_session.options(
                url, headers={"Authorization": "Bearer sesame"}
            ) as response:
                assert response.status == 204
                assert len(response.headers.getall("Link")) == 1
            async with http_session.get(f"{base}/api/ice-servers") as response:
                assert response.status == 401

    run_with_whep_console(body, ice=TURN_ICE, access_token="sesame", cors_origins=(PLAYER_ORIGIN,))


def test_cors_preflight_from_an_allowed_origin_succeeds_and_from_another_does_not() -> None:
    async def body(base: str, server: WhepServer) -> None:
        async with aiohttp.ClientSession() as http_session:
            url = f"{base}/api/track/whep"
            async with http_session.options(url, headers=PREFLIGHT) as response:
                assert response.status == 204
                assert response.headers["Access-Control-Allow-Origin"] == PLAYER_ORIGIN
                assert "POST" in response.headers["Access-Control-Allow-Methods"]
                assert "Content-Type" in response.headers["Access-Control-Allow-Headers"]
                exposed = response.headers["Access-Control-Expose-Headers"]
                assert "Location" in exposed and "Link" in exposed
            other = dict(PREFLIGHT, Origin="https://elsewhere.example")
            async with http_session.options(url, headers=other) as response:
                assert response.status == 403
                assert "Access-Control-Allow-Origin" not in response.headers
            # The console's own pages are always allowed.
            own = dict(PREFLIGHT, Origin=base)
            async with http_session.options(url, headers=own) as response:
                assert response.status == 204

    run_with_whep_console(body, cors_origins=(PLAYER_ORIGIN,))


def test_by_default_only_the_consoles_own_origin_may_use_whep() -> None:
    async def body(base: str, server: WhepServer) -> None:
        async with aiohttp.ClientSession() as http_session:
            async with http_session.options(
                f"{base}/api/track/whep", headers=PREFLIGHT
            ) as response:
                assert response.status == 403

    run_with_whep_console(body)


def test_a_busy_server_says_when_to_retry_and_a_player_may_read_it() -> None:
    async def body(base: str, server: WhepServer) -> None:
        server.busy = True
        async with aiohttp.ClientSession() as http_session:
            async with http_session.post(
                f"{base}/api/track/whep",
                data=b"v=0\r\n",
                headers={"Content-Type": "application/sdp", "Origin": PLAYER_ORIGIN},
            ) as response:
                assert response.status == 503
                assert int(response.headers["Retry-After"]) > 0
                assert response.headers["Access-Control-Allow-Origin"] == PLAYER_ORIGIN
                assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]

    run_with_whep_console(body, cors_origins=(PLAYER_ORIGIN,))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("https://Player.example:8443", "https://player.example:8443"), ("*", "*")],
)
def test_web_origin(text: str, expected: str) -> None:
    assert web_origin(text) == expected


@pytest.mark.parametrize(
    "text", ["player.example", "https://p.example/path", "ftp://p", "https://"]
)
def test_web_origin_refuses_what_is_not_an_origin(text: str) -> None:
    with pytest.raises(ValueError, match="origin"):
        web_origin(text)
