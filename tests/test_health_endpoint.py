"""HealthEndpoint over real TCP on 127.0.0.1: urllib for well-formed requests
(run in a thread, since the endpoint lives on the test's event loop) and raw
asyncio streams for the garbage a well-behaved client library won't send."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from typing import Any, Awaitable, Callable, Optional, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.health_endpoint import MAX_HEAD_BYTES, HealthEndpoint
from server.metrics import TrackingMetrics

T = TypeVar("T")


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


def http(port: int, path: str, method: str = "GET", data: Optional[bytes] = None) -> Response:
    """One blocking request with urllib; HTTP errors are returned, not raised."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=data)
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


async def get(port: int, path: str, method: str = "GET", data: Optional[bytes] = None) -> Response:
    return await asyncio.to_thread(http, port, path, method, data)


async def raw(port: int, payload: bytes, *, close_write: bool = True) -> bytes:
    """Send bytes as-is and return everything the server answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        if close_write:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(), timeout=5)
    except ConnectionResetError:
        return b"<reset>"
    finally:
        writer.close()


def run_with_endpoint(
    body: Callable[[HealthEndpoint, TrackingMetrics, dict[str, bool]], Awaitable[T]],
    **kwargs: Any,
) -> T:
    """Start an endpoint on an ephemeral port, run ``body``, always stop it."""

    async def main() -> T:
        metrics = TrackingMetrics()
        state = {"ready": True}
        endpoint = HealthEndpoint("127.0.0.1", 0, metrics, lambda: state["ready"], **kwargs)
        await endpoint.start()
        try:
            return await body(endpoint, metrics, state)
        finally:
            await endpoint.stop()

    return asyncio.run(main())


def test_port_zero_binds_an_ephemeral_port() -> None:
    async def body(ep: HealthEndpoint, *_: object) -> None:
        assert 0 < ep.port < 65536

    run_with_endpoint(body)


def test_port_before_start_raises() -> None:
    ep = HealthEndpoint("127.0.0.1", 0, TrackingMetrics(), lambda: True)
    with pytest.raises(RuntimeError):
        _ = ep.port


def test_healthz_follows_readiness() -> None:
    async def body(ep: HealthEndpoint, _m: TrackingMetrics, state: dict[str, bool]) -> None:
        ok = await get(ep.port, "/healthz")
        assert (ok.status, ok.body) == (200, b"ok\n")
        assert ok.headers["connection"] == "close"
        state["ready"] = False
        down = await get(ep.port, "/healthz")
        assert down.status == 503
        state["ready"] = True
        assert (await get(ep.port, "/healthz?probe=1")).status == 200

    run_with_endpoint(body)


def test_is_ready_raising_means_unready() -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    async def main() -> None:
        ep = HealthEndpoint("127.0.0.1", 0, TrackingMetrics(), broken)
        await ep.start()
        try:
            assert (await get(ep.port, "/healthz")).status == 503
            assert (await get(ep.port, "/metrics")).status == 200
        finally:
            await ep.stop()

    asyncio.run(main())


def test_metrics_page_parses_and_reflects_updates() -> None:
    async def body(ep: HealthEndpoint, m: TrackingMetrics, _s: dict[str, bool]) -> None:
        m.session_started()
        m.frame_sent()
        m.frame_sent()
        m.frame_answered(0.25, 33.0)
        r = await get(ep.port, "/metrics")
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/plain")
        assert int(r.headers["content-length"]) == len(r.body)
        values = {
            s.name: s.value
            for f in text_string_to_metric_families(r.body.decode())
            for s in f.samples
            if not s.labels
        }
        assert values["balltracker_active_sessions"] == 1
        assert values["balltracker_frames_sent_total"] == 2
        assert values["balltracker_frames_answered_total"] == 1
        assert values["balltracker_latency_milliseconds_sum"] == 33.0

    run_with_endpoint(body)


def test_unknown_path_404_and_wrong_method_405() -> None:
    async def body(ep: HealthEndpoint, *_: object) -> None:
        assert (await get(ep.port, "/")).status == 404
        assert (await get(ep.port, "/healthz/extra")).status == 404
        posted = await get(ep.port, "/healthz", "POST", b"x=1")
        assert posted.status == 405
        assert posted.headers["allow"] == "GET, HEAD"
        assert (await get(ep.port, "/metrics", "DELETE")).status == 405

    run_with_endpoint(body)


def test_head_has_headers_but_no_body() -> None:
    async def body(ep: HealthEndpoint, *_: object) -> None:
        answer = await raw(ep.port, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _sep, rest = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"Content-Length: 3" in head
        assert rest == b""

    run_with_endpoint(body)


def test_bare_lf_request_from_netcat_style_clients() -> None:
    async def body(ep: HealthEndpoint, *_: object) -> None:
        answer = await raw(ep.port, b"GET /healthz HTTP/1.0\n\n")
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok\n")

    run_with_endpoint(body)


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
def test_garbage_gets_400_and_endpoint_survives(payload: bytes) -> None:
    async def body(ep: HealthEndpoint, *_: object) -> None:
        answer = await raw(ep.port, payload)
        assert answer.startswith(b"HTTP/1.1 400") or answer in (b"", b"<reset>")
        assert (await get(ep.port, "/healthz")).status == 200

    run_with_endpoint(body)


def test_oversized_head_is_rejected() -> None:
    async def body(ep: HealthEndpoint, *_: object) -> None:
        long_line = b"GET /" + b"a" * (MAX_HEAD_BYTES * 4) + b" HTTP/1.1\r\n\r\n"
        many_headers = b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 1000 + b"\r\n"
        for payload in (long_line, many_headers):
            answer = await raw(ep.port, payload)
            assert answer.startswith(b"HTTP/1.1 431") or answer == b"<reset>"
        assert (await get(ep.port, "/healthz")).status == 200

    run_with_endpoint(body)


def test_silent_client_is_cut_off_and_does_not_block_others() -> None:
    async def body(ep: HealthEndpoint, *_: object) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", ep.port)
        writer.write(b"GET /heal")  # ...and then nothing
        await writer.drain()
        # Served while the slow client is still connected.
        assert (await get(ep.port, "/healthz")).status == 200
        started = time.monotonic()
        leftover = await asyncio.wait_for(reader.read(), timeout=5)
        assert leftover == b""  # dropped without a response
        assert time.monotonic() - started < 2
        writer.close()

    run_with_endpoint(body, timeout_s=0.5)


def test_connection_cap_sheds_excess_clients() -> None:
    async def body(ep: HealthEndpoint, *_: object) -> None:
        idle = [await asyncio.open_connection("127.0.0.1", ep.port) for _ in range(3)]
        await asyncio.sleep(0.1)
        # The cap is full of idle clients: a new one is closed at once...
        extra = await raw(ep.port, b"GET /healthz HTTP/1.1\r\n\r\n")
        assert extra in (b"", b"<reset>")
        for _r, w in idle:
            w.close()
        await asyncio.sleep(0.1)
        # ...and once they leave, requests are served again.
        assert (await get(ep.port, "/healthz")).status == 200

    run_with_endpoint(body, max_connections=3, timeout_s=5)


def test_stop_with_open_connections_is_prompt_and_frees_the_port() -> None:
    async def main() -> None:
        ep = HealthEndpoint("127.0.0.1", 0, TrackingMetrics(), lambda: True, timeout_s=30)
        await ep.start()
        port = ep.port
        _r, w = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await ep.stop()
        assert time.monotonic() - started < 2
        w.close()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        await ep.stop()  # idempotent

    asyncio.run(main())


def test_many_sequential_requests() -> None:
    async def body(ep: HealthEndpoint, *_: object) -> None:
        statuses = await asyncio.gather(*(get(ep.port, "/healthz") for _ in range(20)))
        assert {r.status for r in statuses} == {200}

    run_with_endpoint(body)
