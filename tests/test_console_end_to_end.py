"""The console in a real headless Chromium, against the real server and client.

The server and client run as processes over real WebRTC on 127.0.0.1; the
page is the one the server serves; the live view is a real WHEP viewer whose
frames Chromium decodes. Checks are on what a person would see: rows in the
table, a playing video, and pixels of a screenshot.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Optional

import aiohttp
import cv2
import numpy as np
import pytest
from playwright.sync_api import Browser, Page
from prometheus_client.parser import text_string_to_metric_families

from lab.browser import chromium
from lab.programs import Program, free_port, start_client, start_server
from lab.whep_client import WhepViewer

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


def metric(http_port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return next(
        s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name
    )


def wait_until(condition: object, timeout: float, what: str) -> float:
    """Poll ``condition`` (a callable) until true; the seconds it took."""
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def open_console(browser: Browser, server: Program, http_port: int) -> Page:
    """The console's page, once the server serves it and its event stream is in."""
    server.wait_for_output("console on", timeout=10)
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{http_port}/")
    page.wait_for_selector("#connection.ok", timeout=5000)
    return page


def cell(page: Page, state: str, header: str) -> str:
    """The text of one row's cell, found by its column's header."""
    headers = [text.strip() for text in page.locator("#sessions thead th").all_inner_texts()]
    return page.locator(f"tr[data-state={state}] td").nth(headers.index(header)).inner_text()


def frames_cell(page: Page) -> int:
    return int(cell(page, "live", "frames"))


def markers_near_the_ball(image: np.ndarray) -> dict[str, int]:
    """Where the ball is (the largest white blob: text is thin) and how many
    green (truth) and red (answer) pixels lie on and around it."""
    b, g, r = (image[:, :, i].astype(int) for i in range(3))
    white = ((b > 200) & (g > 200) & (r > 200)).astype(np.uint8)
    count, _labels, stats, centroids = cv2.connectedComponentsWithStats(white)
    if count < 2:
        return {}
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    cx, cy = centroids[largest]
    ys, xs = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    distance = np.hypot(xs - cx, ys - cy)
    truth = (g > 150) & (r < 120) & (b < 160)
    answer = (r > 150) & (g < 110) & (b < 160)
    return {
        "ball_area": int(stats[largest, cv2.CC_STAT_AREA]),
        # The answer's cross is drawn on the ball's centre...
        "answer_on_centre": int((answer & (distance < 10)).sum()),
        # ...and the truth's ring around its edge (radius 20 px).
        "truth_at_edge": int((truth & (distance > 14) & (distance < 28)).sum()),
    }


def test_console_lists_a_live_session_plays_it_annotated_and_links_its_reports(
    browser: Browser, tmp_path: Path
) -> None:
    signaling, http = free_port(), free_port()
    server = start_server(signaling, "--report-dir", str(tmp_path), http_port=http)
    client: Program | None = None
    try:
        page = open_console(browser, server, http)

        client = start_client(signaling, "--duration", "14")
        server.wait_for_output("streaming to", timeout=20)
        listed = wait_until(
            lambda: page.locator("tr[data-state=live]").count() == 1, 5, "session listed"
        )
        assert listed < 2.0, f"listed {listed:.2f} s after the session started"
        first = frames_cell(page)
        wait_until(lambda: frames_cell(page) > first + 10, 3, "frames counter moves")

        clicked = time.monotonic()
        page.locator("tr[data-state=live]").click()
        page.wait_for_function(
            "() => document.getElementById('live-video').videoWidth === 640", timeout=10000
        )
        first_frame_s = time.monotonic() - clicked
        video_time = page.evaluate("() => document.getElementById('live-video').currentTime")
        page.wait_for_function(
            f"() => document.getElementById('live-video').currentTime > {video_time} + 0.5",
            timeout=5000,
        )
        assert page.evaluate("() => document.getElementById('live-video').videoHeight") == 480
        assert metric(http, "balltracker_viewers") == 1
        print(f"\nconsole: listed after {listed:.2f} s, first video frame {first_frame_s:.2f} s")

        SCREENSHOTS.mkdir(exist_ok=True)
        shot_path = SCREENSHOTS / "console-live-view.png"
        page.wait_for_timeout(1500)  # charts fill, trails grow
        page.screenshot(path=str(shot_path))
        video_png = page.locator("#live-video").screenshot()
        video = cv2.imdecode(np.frombuffer(video_png, np.uint8), cv2.IMREAD_COLOR)
        cv2.imwrite(str(SCREENSHOTS / "console-video.png"), video)
        found = markers_near_the_ball(video)
        assert found.get("ball_area", 0) > 600, found  # a 20 px ball, not text
        assert found["answer_on_centre"] >= 8, found
        assert found["truth_at_edge"] >= 20, found

        page.locator("#live-close").click()
        wait_until(lambda: metric(http, "balltracker_viewers") == 0, 5, "viewer freed")

        assert client.wait(timeout=30) == 0, client.describe()
        wait_until(lambda: page.locator("tr[data-state=ended]").count() == 1, 5, "session ended")
        links = page.locator("tr[data-state=ended] a")
        assert sorted(links.all_inner_texts()) == ["csv", "json", "png", "seconds.csv"]
        png_link = links.filter(has_text="png").get_attribute("href")
        # The plot is drawn by a worker process just after the session ends.
        wait_until(
            lambda: page.request.get(f"http://127.0.0.1:{http}{png_link}").status == 200,
            15,
            "plot written",
        )
        png = page.request.get(f"http://127.0.0.1:{http}{png_link}")
        assert png.headers["content-type"] == "image/png"
    finally:
        if client is not None:
            client.close()
        server.close()


def test_a_session_of_another_scene_shows_it_and_its_scores(
    browser: Browser, tmp_path: Path
) -> None:
    """The occlusion scene: its name and the occluder in the live view, then
    error at arrival and the hidden-ball scores in the ended row."""
    signaling, http = free_port(), free_port()
    # Session 1 of seed 0: the bar spans x 364..464 and hides the ball from frame 8 on.
    server = start_server(
        signaling, "--scene", "occlusion", "--report-dir", str(tmp_path), http_port=http
    )
    client: Program | None = None
    try:
        page = open_console(browser, server, http)
        client = start_client(signaling, "--duration", "8")
        page.wait_for_selector("tr[data-state=live]", timeout=20000)
        assert cell(page, "live", "scene") == "occlusion"

        page.locator("tr[data-state=live]").click()
        page.wait_for_function(
            "() => document.getElementById('live-video').currentTime > 0.5", timeout=10000
        )
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "console-occlusion.png"))
        shot = page.locator("#live-video").screenshot()
        video = cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_GRAYSCALE).astype(float)
        below_caption = video[60:]
        bar = below_caption[:, 372:456].mean()
        assert 35 < bar < 95, f"no occluder in the live view: mean {bar:.0f}"
        assert below_caption[:, :300].mean() < 35, "the background is not the scene's black"
        page.locator("#live-close").click()

        assert client.wait(timeout=30) == 0, client.describe()
        page.wait_for_selector("tr[data-state=ended]", timeout=10000)
        assert cell(page, "ended", "scene") == "occlusion"
        at_arrival = cell(page, "ended", "at arrival mean / p95")
        assert at_arrival.endswith(" px") and "–" not in at_arrival, at_arrival
        hidden = cell(page, "ended", "visible found / false pos.")
        found, false_positives = hidden.split(" / ")
        assert found.endswith(" %") and 0 <= float(found[:-2]) <= 100, hidden
        assert int(false_positives) >= 0, hidden
        # An ended row is the widest (reason, report links): at the default
        # 1280 px the page itself must not overflow, and with a loopback peer
        # the whole table shows. A wider one (an IPv6 peer, a long reason)
        # scrolls in its own box.
        wait_until(lambda: page.locator("tr[data-state=ended] a").count() == 4, 15, "report links")
        widths = page.evaluate(
            """() => {
                const table = document.getElementById('sessions');
                const box = table.parentElement;
                const last = table.querySelector('thead th:last-child');
                return {page: document.documentElement.scrollWidth, view: window.innerWidth,
                        box: box.getBoundingClientRect().right, boxWidth: box.clientWidth,
                        lastEnd: last.getBoundingClientRect().right - box.getBoundingClientRect().left,
                        overflow: getComputedStyle(box).overflowX};
            }"""
        )
        assert widths["page"] <= widths["view"], widths
        assert widths["box"] <= widths["view"], widths
        assert widths["overflow"] == "auto", widths
        assert widths["lastEnd"] <= widths["boxWidth"], widths
        page.screenshot(path=str(SCREENSHOTS / "console-ended.png"))
    finally:
        if client is not None:
            client.close()
        server.close()


def test_the_access_token_is_enforced_in_the_browser(browser: Browser) -> None:
    signaling, http = free_port(), free_port()
    server = start_server(signaling, http_port=http, env={"BALLTRACKER_ACCESS_TOKEN": "letmein"})
    try:
        server.wait_for_output("console on", timeout=10)
        page = browser.new_page()
        refused = page.goto(f"http://127.0.0.1:{http}/")
        assert refused is not None and refused.status == 401
        page.goto(f"http://127.0.0.1:{http}/?token=wrong")
        assert "token" in page.inner_text("body")
        opened = page.goto(f"http://127.0.0.1:{http}/?token=letmein")
        assert opened is not None and opened.status == 200
        assert page.url == f"http://127.0.0.1:{http}/"  # the token left the address bar
        page.wait_for_selector("#connection.ok", timeout=5000)  # the event stream got in
    finally:
        server.close()


def test_a_stock_aiortc_whep_player_watches_a_session_and_deletes_its_viewer() -> None:
    signaling, http_port = free_port(), free_port()
    server = start_server(signaling, http_port=http_port)
    client = start_client(signaling, "--duration", "10")
    try:
        server.wait_for_output("streaming to", timeout=20)

        async def watch() -> tuple[WhepViewer, int, Optional[int], int, int]:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{http_port}/api/sessions") as r:
                    (session,) = (await r.json())["sessions"]
                base = f"http://127.0.0.1:{http_port}/api/sessions/{session['id']}/whep"
                viewer = WhepViewer(base)
                await viewer.start(http)
                deadline = time.monotonic() + 10
                while viewer.frames < 30 and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                watching = int(metric(http_port, "balltracker_viewers"))
                deleted = await viewer.stop(http)
                gone = await viewer.delete_again(http)
                return (
                    viewer,
                    watching,
                    deleted,
                    gone,
                    int(metric(http_port, "balltracker_viewers")),
                )

        # In a thread of its own: playwright's sync API keeps an event loop
        # running in this one while the module's browser is open.
        with ThreadPoolExecutor(1) as thread:
            viewer, watching, deleted, gone, after = thread.submit(asyncio.run, watch()).result()
        assert viewer.frames >= 30 and viewer.frame_size == (640, 480)
        assert (watching, deleted, gone, after) == (1, 200, 404, 0)
        # The real server wires its readiness and its metrics into HTTP.
        for probe in ("/readyz", "/healthz"):
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{probe}", timeout=5) as r:
                assert (r.status, r.read()) == (200, b"ok\n")
        assert metric(http_port, "balltracker_active_sessions") == 1
        assert client.wait(timeout=30) == 0, client.describe()
        wait_until(
            lambda: metric(http_port, "balltracker_active_sessions") == 0, 5, "session ended"
        )
        sent = metric(http_port, "balltracker_frames_sent_total")
        answered = metric(http_port, "balltracker_frames_answered_total")
        assert sent > 200 and answered >= 0.95 * sent, (sent, answered)
        assert metric(http_port, "balltracker_latency_seconds_count") == answered
        # Loopback latency is milliseconds, i.e. well under a second.
        mean_s = metric(http_port, "balltracker_latency_seconds_sum") / answered
        assert 0 < mean_s < 0.5, mean_s
        assert metric(http_port, "balltracker_build_info") == 1
        assert metric(http_port, "process_cpu_seconds_total") > 0
    finally:
        client.close()
        server.close()
