"""The browser tracking page (/track) and its detector, in a real headless Chromium.

``ball_finder.js`` is checked against frames drawn by the server's own
renderer, computed here with numpy and handed to the page. The page itself
is loaded from a routed origin (no server) for what does not need a server,
and from the real server for the end-to-end run.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import cv2
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, Route

from lab.browser import chromium
from lab.programs import Program, free_port, start_server, wait_for_reports
from server.console.web_console import CONTENT_SECURITY_POLICY
from server.core.renderer import render_luma

pytestmark = pytest.mark.browser

WEB = Path(__file__).resolve().parent.parent / "server" / "console" / "web"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts"
#: A made-up origin that playwright answers from server/console/web: no port, no server.
ORIGIN = "http://tracker.test"
WIDTH, HEIGHT = 320, 240

Found = Optional[tuple[float, float, str]]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


def serve_web(route: Route) -> None:
    """Answer ``ORIGIN/static/...`` and ``ORIGIN/track`` from server/console/web, and
    ``/api/ice-servers`` with none."""
    path = route.request.url[len(ORIGIN) :].split("?")[0]
    if path == "/track":
        file = WEB / "track.html"
    elif path == "/api/ice-servers":  # as a server without --ice-server answers
        route.fulfill(status=200, content_type="application/json", body='{"iceServers": []}')
        return
    elif path == "/blank":
        route.fulfill(status=200, content_type="text/html", body="<!doctype html><title>t</title>")
        return
    elif path.startswith("/static/") and ".." not in path:
        file = WEB / path.lstrip("/")
    else:
        route.fulfill(status=404, body="not here")
        return
    if not file.is_file():
        route.fulfill(status=404, body="not here")
        return
    route.fulfill(
        status=200,
        # The console's own policy: an inline script or a foreign origin
        # would show up as a console error.
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY},
        content_type=mimetypes.guess_type(file.name)[0] or "application/octet-stream",
        body=file.read_bytes(),
    )


@pytest.fixture(scope="module")
def finder(browser: Browser) -> Iterator[Page]:
    """A blank page with ``window.findBall`` from ball_finder.js."""
    page = browser.new_page()
    page.route(f"{ORIGIN}/**", serve_web)
    page.goto(f"{ORIGIN}/blank")
    page.evaluate(
        """async () => {
            const module = await import("/static/ball_finder.js");
            window.findBall = module.findBall;
        }"""
    )
    yield page
    page.close()


def find(page: Page, frames: list[np.ndarray], width: Optional[int] = None) -> list[Found]:
    """findBall on each frame in the page (all frames of one size); ``width``
    less than the arrays' makes the rest of each row padding."""
    height, stride = frames[0].shape[:2]
    if width is None:
        width = stride
    data = base64.b64encode(b"".join(np.ascontiguousarray(f).tobytes() for f in frames)).decode()
    results: list[Any] = page.evaluate(
        """([data, count, width, height, stride]) => {
            const bytes = Uint8Array.from(atob(data), (ch) => ch.charCodeAt(0));
            const size = stride * height;
            const out = [];
            for (let k = 0; k < count; k++) {
                const found = findBall(bytes.subarray(k * size, (k + 1) * size), width, height, stride);
                out.push(found === null ? null : [found.x, found.y, found.method]);
            }
            return out;
        }""",
        [data, len(frames), width, height, stride],
    )
    return [None if r is None else (r[0], r[1], r[2]) for r in results]


def error(found: Found, x: float, y: float) -> float:
    assert found is not None, f"no ball found at ({x}, {y})"
    return float(np.hypot(found[0] - x, found[1] - y))


def random_inside(rng: np.random.Generator, count: int) -> list[tuple[float, float, float]]:
    cases = []
    for _ in range(count):
        radius = rng.uniform(5.0, 60.0)
        x = rng.uniform(radius + 2.0, WIDTH - radius - 3.0)
        y = rng.uniform(radius + 2.0, HEIGHT - radius - 3.0)
        cases.append((x, y, radius))
    return cases


def noisy(rng: np.random.Generator, x: float, y: float, radius: float) -> np.ndarray:
    """Gaussian noise (sigma 8) plus 60 single-pixel white specks."""
    luma = render_luma(WIDTH, HEIGHT, x, y, radius).astype(np.float32)
    luma += rng.normal(0.0, 8.0, luma.shape).astype(np.float32)
    frame = np.clip(luma, 0, 255).astype(np.uint8)
    frame[rng.integers(0, HEIGHT, 60), rng.integers(0, WIDTH, 60)] = 255
    return frame


# -- ball_finder.js ------------------------------------------------------------------


def test_full_balls_at_sub_pixel_positions(finder: Page) -> None:
    cases = random_inside(np.random.default_rng(1), 150)
    found = find(finder, [render_luma(WIDTH, HEIGHT, x, y, r) for x, y, r in cases])
    errors = [error(f, x, y) for f, (x, y, _) in zip(found, cases)]
    print(f"\nfull balls: mean {np.mean(errors):.4f} px, max {np.max(errors):.4f} px")
    assert np.max(errors) < 0.05
    assert np.mean(errors) < 0.02
    assert {f[2] for f in found if f is not None} == {"centroid"}


def test_the_servers_ball_at_640x480(finder: Page) -> None:
    rng = np.random.default_rng(5)
    cases = [(rng.uniform(25, 615), rng.uniform(25, 455), 20.0) for _ in range(20)]
    found = find(finder, [render_luma(640, 480, x, y, r) for x, y, r in cases])
    assert max(error(f, x, y) for f, (x, y, _) in zip(found, cases)) < 0.05


def test_no_ball(finder: Page) -> None:
    assert find(finder, [np.zeros((HEIGHT, WIDTH), np.uint8)]) == [None]


def test_noise_and_specks_alone_are_no_ball(finder: Page) -> None:
    rng = np.random.default_rng(4)
    frame = np.clip(rng.normal(0.0, 8.0, (HEIGHT, WIDTH)), 0, 255).astype(np.uint8)
    frame[rng.integers(0, HEIGHT, 60), rng.integers(0, WIDTH, 60)] = 255
    assert find(finder, [frame]) == [None]


def test_noise_and_specks_around_the_ball(finder: Page) -> None:
    rng = np.random.default_rng(2)
    cases = random_inside(rng, 60)
    found = find(finder, [noisy(rng, x, y, r) for x, y, r in cases])
    errors = [error(f, x, y) for f, (x, y, _) in zip(found, cases)]
    print(f"\nnoisy balls: mean {np.mean(errors):.4f} px, max {np.max(errors):.4f} px")
    assert np.mean(errors) < 0.05
    assert np.max(errors) < 0.2


def test_largest_blob_wins_and_a_neighbour_is_masked_out(finder: Page) -> None:
    two = render_luma(WIDTH, HEIGHT, 220.4, 150.3, 30) | render_luma(WIDTH, HEIGHT, 60.0, 60.0, 8)
    speck = render_luma(WIDTH, HEIGHT, 150.4, 120.3, 25)
    speck[95:98, 176:179] = 255  # just off the ball, inside its box
    first, second = find(finder, [two, speck])
    assert error(first, 220.4, 150.3) < 0.05
    assert error(second, 150.4, 120.3) < 0.05


def test_rows_with_padding(finder: Page) -> None:
    buffer = np.zeros((HEIGHT, WIDTH + 64), np.uint8)
    buffer[:, :WIDTH] = render_luma(WIDTH, HEIGHT, 101.7, 77.2, 18)
    buffer[:, WIDTH:] = 255  # row padding must never be read as picture
    (found,) = find(finder, [buffer], width=WIDTH)
    assert error(found, 101.7, 77.2) < 0.05


EDGES = {
    "left": (1, 0, 0, 0),
    "right": (0, 1, 0, 0),
    "top": (0, 0, 1, 0),
    "bottom": (0, 0, 0, 1),
    "top-left": (1, 0, 1, 0),
    "bottom-right": (0, 1, 0, 1),
}


def clipped_cases(
    rng: np.random.Generator, edge: str, count: int
) -> list[tuple[float, float, float]]:
    """Balls cut by ``edge``, their centre from on the edge to 0.9 radii inside."""
    left, right, top, bottom = EDGES[edge]
    cases = []
    for _ in range(count):
        radius = rng.uniform(5.0, 60.0)
        x = rng.uniform(radius + 2.0, WIDTH - radius - 3.0)
        y = rng.uniform(radius + 2.0, HEIGHT - radius - 3.0)
        depth_x, depth_y = rng.uniform(0.0, 0.9 * radius, size=2)
        x = depth_x if left else WIDTH - 1 - depth_x if right else x
        y = depth_y if top else HEIGHT - 1 - depth_y if bottom else y
        cases.append((x, y, radius))
    return cases


@pytest.mark.parametrize("edge", EDGES)
def test_ball_cut_by_the_frame_edge(finder: Page, edge: str) -> None:
    cases = clipped_cases(np.random.default_rng(10), edge, 25)
    found = find(finder, [render_luma(WIDTH, HEIGHT, x, y, r) for x, y, r in cases])
    errors = [error(f, x, y) for f, (x, y, _) in zip(found, cases)]
    print(f"\n{edge}: mean {np.mean(errors):.4f} px, max {np.max(errors):.4f} px")
    assert np.max(errors) < 0.05
    assert {f[2] for f in found if f is not None} == {"circle"}


def test_a_640x480_frame_takes_well_under_2_ms(finder: Page) -> None:
    frame = render_luma(640, 480, 321.3, 200.7, 20)
    data = base64.b64encode(frame.tobytes()).decode()
    timing = finder.evaluate(
        """(data) => {
            const luma = Uint8Array.from(atob(data), (ch) => ch.charCodeAt(0));
            for (let k = 0; k < 50; k++) findBall(luma, 640, 480);  // warm up the JIT
            // performance.now() is coarse (0.1 ms) here: time batches of 20.
            const times = [];
            for (let k = 0; k < 30; k++) {
                const start = performance.now();
                for (let i = 0; i < 20; i++) findBall(luma, 640, 480);
                times.push((performance.now() - start) / 20);
            }
            times.sort((a, b) => a - b);
            return {median: times[15], worst: times[29]};
        }""",
        data,
    )
    # Measured: median 0.2 ms (0.7 ms before the pass read four pixels at a time).
    print(f"\nfindBall 640x480: median {timing['median']:.3f} ms, worst {timing['worst']:.3f} ms")
    assert timing["median"] < 1.0


# -- the page, without a server --------------------------------------------------------


def test_the_page_offers_and_shows_a_busy_servers_refusal(browser: Browser) -> None:
    """The offer is WHEP-shaped; a 503 is shown as the server worded it; the
    page loads nothing from another origin and logs no error but the 503."""
    page = browser.new_page()
    offers: list[dict[str, Any]] = []
    requests: list[str] = []
    problems: list[str] = []

    def refuse(route: Route) -> None:
        request = route.request
        offers.append(
            {
                "method": request.method,
                "type": request.headers.get("content-type"),
                "sdp": request.post_data,
            }
        )
        route.fulfill(status=503, content_type="text/plain", body="all 4 session slots are taken\n")

    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            message.type in ("error", "warning")
            and "503" not in message.text
            and problems.append(f"{message.type}: {message.text}")
        ),
    )
    page.route(f"{ORIGIN}/**", serve_web)
    page.route(f"{ORIGIN}/api/track/whep", refuse)
    try:
        page.goto(f"{ORIGIN}/track?seconds=5")
        page.wait_for_function("() => document.body.dataset.state === 'failed'", timeout=10000)
        status = page.inner_text("#status")
        assert "503" in status and "all 4 session slots are taken" in status, status
        assert page.evaluate("() => window.tracker.state") == "failed"
        assert page.evaluate("() => window.trackingSummary") is None

        (offer,) = offers
        assert offer["method"] == "POST" and offer["type"] == "application/sdp"
        sdp = offer["sdp"]
        assert "m=video" in sdp and "a=recvonly" in sdp
        assert "m=application" in sdp and "webrtc-datachannel" in sdp
        assert "a=candidate" in sdp or "c=IN IP4" in sdp  # gathered, not trickled
        assert problems == []
        foreign = [url for url in requests if not url.startswith((ORIGIN, "data:"))]
        assert foreign == []
        assert {url.split("?")[0] for url in requests} >= {
            f"{ORIGIN}/track",
            f"{ORIGIN}/static/track.js",
            f"{ORIGIN}/static/ball_finder.js",
            f"{ORIGIN}/static/chart.js",
            f"{ORIGIN}/static/console.css",
            f"{ORIGIN}/static/track.css",
        }
    finally:
        page.close()


def test_a_bad_offer_is_shown_as_refused(browser: Browser) -> None:
    page = browser.new_page()
    page.route(f"{ORIGIN}/**", serve_web)
    page.route(
        f"{ORIGIN}/api/track/whep",
        lambda route: route.fulfill(status=400, body="the offer has no data channel\n"),
    )
    try:
        page.goto(f"{ORIGIN}/track")
        page.wait_for_function("() => document.body.dataset.state === 'failed'", timeout=10000)
        assert "the offer has no data channel" in page.inner_text("#status")
    finally:
        page.close()


# -- the page against the real server ------------------------------------------------

ENDED = "() => ['ended', 'failed'].includes(document.body.dataset.state)"


def watch_console(page: Page) -> list[str]:
    """Errors the page logs or throws, collected as they come."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: message.type == "error" and problems.append(f"error: {message.text}"),
    )
    return problems


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def live_sessions(http: int) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/sessions", timeout=5) as r:
        return [s for s in json.load(r)["sessions"] if s["state"] == "live"]


def cross_on_the_ball(image: np.ndarray) -> dict[str, float]:
    """The largest white blob (the ball) and the red overlay pixels near it."""
    b, g, r = (image[:, :, i].astype(int) for i in range(3))
    white = ((b > 200) & (g > 200) & (r > 200)).astype(np.uint8)
    count, _labels, stats, centroids = cv2.connectedComponentsWithStats(white)
    if count < 2:
        return {}
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    cx, cy = centroids[largest]
    red = (r > 150) & (g < 110) & (b < 140)
    ys, xs = np.nonzero(red)
    if not len(xs):
        return {"ball_area": float(stats[largest, cv2.CC_STAT_AREA]), "red": 0}
    return {
        "ball_area": float(stats[largest, cv2.CC_STAT_AREA]),
        "red": float(len(xs)),
        "red_from_ball": float(np.hypot(xs.mean() - cx, ys.mean() - cy)),
    }


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Program, int, Path]]:
    http = free_port()
    running = start_server(free_port(), "--report-dir", str(tmp_path), http_port=http)
    try:
        running.wait_for_output("console on", timeout=10)
        yield running, http, tmp_path
    finally:
        running.close()


@pytest.mark.e2e
def test_the_page_tracks_the_real_servers_ball(
    browser: Browser, server: tuple[Program, int, Path]
) -> None:
    program, http, reports = server
    page = browser.new_page()
    problems = watch_console(page)
    try:
        page.goto(f"http://127.0.0.1:{http}/track?seconds=5")
        page.wait_for_function("() => document.body.dataset.state === 'tracking'", timeout=20000)
        page.wait_for_timeout(2000)
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "track-page.png"))
        stage = cv2.imdecode(
            np.frombuffer(page.locator(".stage").screenshot(), np.uint8), cv2.IMREAD_COLOR
        )
        page.wait_for_function(ENDED, timeout=30000)
        tracker = page.evaluate("() => window.tracker")
        summary = page.evaluate("() => window.trackingSummary")
    finally:
        page.close()

    assert tracker["state"] == "ended", tracker
    assert summary is not None, tracker
    (report,) = wait_for_reports(reports, 1)
    print(
        f"\n/track: {summary['frames_answered']}/{summary['frames_sent']} answered, error mean "
        f"{summary['error_px']['mean']:.3f} px, p95 {summary['error_px']['p95']:.3f} px, latency "
        f"p50 {summary['latency_ms']['p50']:.1f} ms, p99 {summary['latency_ms']['p99']:.1f} ms; "
        f"frames from {tracker['frameSource']}, read {tracker['readMsMean']:.2f} ms ({tracker['readMethod']}), "
        f"detect {tracker['detectMsMean']:.2f} ms per frame; skipped {tracker['skipped']}, "
        f"no ball in {tracker['framesNoBall']}, raced {tracker['framesRaced']}"
    )
    # The page's session, as the server reported it, ended by the page's DELETE.
    assert report["session"] == summary["session"] == tracker["sessionId"]
    assert report["end_reason"] == summary["end_reason"] == "client said bye"
    assert report["peer"].endswith("(WHEP)")
    for key in ("frames_sent", "frames_answered", "answered_ratio"):
        assert report[key] == summary[key], key
    assert summary["frames_sent"] >= 120  # 5 s at 30 fps, less the start-up
    assert summary["answered_ratio"] >= 0.9
    assert summary["error_px"]["mean"] < 0.5
    assert summary["invalid_messages"] == 0, (summary, tracker)
    # The page's own view of it.
    assert tracker["framesAnswered"] >= 0.9 * summary["frames_sent"]
    assert tracker["framesSkipped"] <= 3, tracker
    # A frame with no ball: seen once in about 15 runs, on a loaded machine
    # (a frame the decoder concealed after a lost packet, most likely).
    assert tracker["framesNoBall"] <= 2
    assert tracker["answersScored"] >= 0.9 * summary["frames_sent"]
    assert tracker["detectMsMean"] < 2.0
    assert tracker["jitterBufferTarget"] == 0
    assert tracker["frameSource"] == "processor"  # Chromium has MediaStreamTrackProcessor
    assert problems == []
    # The overlay's cross sits on the ball of the video beneath it. The video
    # element shows a frame as soon as it is decoded and the cross follows
    # once it is found, so a screenshot can catch them a frame or two apart
    # (10 px a frame at 300 px/s; 7 px seen): within the ball's radius of 20.
    found = cross_on_the_ball(stage)
    assert found.get("ball_area", 0) > 600, found
    assert found["red"] >= 10 and found["red_from_ball"] < 25, found


@pytest.mark.e2e
def test_wrong_answers_are_scored_as_wrong(
    browser: Browser, server: tuple[Program, int, Path]
) -> None:
    """The scoring sees what the page sends: a finder 3 px off is 3 px off.

    Frames come from the video element here (requestVideoFrameCallback), the
    page's other source, which is then checked too.
    """
    _program, http, _reports = server
    module = (WEB / "static" / "ball_finder.js").read_text()
    broken = module.replace(
        "if (touchesEdge) {",
        "return { x: x0 + m10 / m00 + 3, y: y0 + m01 / m00, method: 'broken' };\n  if (touchesEdge) {",
    )
    assert broken != module
    page = browser.new_page()
    page.route(
        "**/static/ball_finder.js",
        lambda route: route.fulfill(
            status=200, content_type="text/javascript", body=broken.encode()
        ),
    )
    try:
        page.goto(
            f"http://127.0.0.1:{http}/track?seconds=4&jitterBufferTarget=default&frames=video"
        )
        page.wait_for_function(ENDED, timeout=30000)
        tracker = page.evaluate("() => window.tracker")
        summary = page.evaluate("() => window.trackingSummary")
    finally:
        page.close()
    assert tracker["jitterBufferTarget"] is None  # Chromium's own
    assert tracker["frameSource"] == "video"
    # This source loses frames the element never presents, more so on a busy
    # machine: 96-99 % measured in 8 s runs, 85 % with two CPU hogs running.
    assert summary["answered_ratio"] >= 0.8, (summary, tracker)
    assert 2.5 < summary["error_px"]["mean"] < 3.5, summary["error_px"]
    assert summary["error_px"]["mean"] >= 0.5  # what the test above asserts fails here


@pytest.mark.e2e
def test_a_full_server_is_shown_and_a_closed_tab_frees_its_slot(
    browser: Browser, tmp_path: Path
) -> None:
    http = free_port()
    program = start_server(
        free_port(), "--report-dir", str(tmp_path), "--max-sessions", "1", http_port=http
    )
    first = browser.new_page()
    second = browser.new_page()
    try:
        program.wait_for_output("console on", timeout=10)
        first.goto(f"http://127.0.0.1:{http}/track?jitterBufferTarget=40")
        first.wait_for_function("() => document.body.dataset.state === 'tracking'", timeout=20000)
        assert first.evaluate("() => window.tracker.jitterBufferTarget") == 40
        session_id = first.evaluate("() => window.tracker.sessionId")
        assert [s["id"] for s in live_sessions(http)] == [session_id]

        second.goto(f"http://127.0.0.1:{http}/track")
        second.wait_for_function("() => document.body.dataset.state === 'failed'", timeout=20000)
        status = second.inner_text("#status")
        assert "503" in status, status

        first.wait_for_timeout(1000)
        first.close()  # pagehide: the page DELETEs its session
        wait_until(lambda: not live_sessions(http), 5, "the closed tab's session ended")
        (report,) = wait_for_reports(tmp_path, 1)
        assert report["session"] == session_id
        assert report["end_reason"] == "client said bye"
        # A session of 1.5 s: the page answers every frame it sees (40 of 44
        # measured), but the few in flight when it ends weigh too much for an
        # answered ratio to mean anything here.
        assert report["frames_answered"] >= 15
        assert report["error_px"]["mean"] < 0.5

        second.reload()  # the slot is free again
        second.wait_for_function("() => document.body.dataset.state === 'tracking'", timeout=20000)
    finally:
        for page in (first, second):
            if not page.is_closed():
                page.close()
        program.close()
