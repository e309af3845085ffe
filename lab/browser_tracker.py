"""Run the ``/track`` page in headless Chromium and print what it measured, as JSON.

For tests and benchmarks that need the browser somewhere else than the test
process, such as in a NetworkLab namespace::

    ip netns exec NS python -m lab.browser_tracker "http://ball-server:8080/track?seconds=8&relay=1"

It prints one JSON object: the page's ``window.tracker``, the server's summary
the page received (``window.trackingSummary``) and the errors the page logged.
``--no-processor`` removes ``MediaStreamTrackProcessor`` before the page
loads, as in a browser that lacks it (Firefox, Safari).

``--stdin`` instead reads one URL a line until end of input and tracks each
in turn in the same browser, one JSON line each (``{"error": ...}`` for a page
that failed): a benchmark visiting many pages pays Chromium's start once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from typing import Any, Optional, Sequence

from playwright.sync_api import Browser
from playwright.sync_api import Error as PlaywrightError

from lab.browser import chromium
from lab.network_lab import wait_for_line
from lab.programs import PYTHON, ROOT

ENDED = "() => ['ended', 'failed'].includes(document.body.dataset.state)"


def track_page(
    browser: Browser, url: str, timeout_s: float, no_processor: bool = False
) -> dict[str, Any]:
    """One run of the page at ``url`` in ``browser``, until it has ended or failed."""
    page = browser.new_page()
    try:
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on(
            "console",
            lambda m: m.type == "error" and problems.append(f"error: {m.text}"),
        )
        if no_processor:
            page.add_init_script("delete window.MediaStreamTrackProcessor;")
        page.goto(url)
        page.wait_for_function(ENDED, timeout=timeout_s * 1000)
        return {
            "tracker": page.evaluate("() => window.tracker"),
            "summary": page.evaluate("() => window.trackingSummary"),
            "frames_note_shown": page.locator("#frames-note").is_visible(),
            "ice_path_shown": page.locator("#ice-path").inner_text(),
            "problems": problems,
        }
    finally:
        page.close()


def track(url: str, timeout_s: float, no_processor: bool = False) -> dict[str, Any]:
    with chromium() as browser:
        return track_page(browser, url, timeout_s, no_processor)


def track_each_line(timeout_s: float, no_processor: bool) -> None:
    """``--stdin``: every URL read, tracked in one browser; a failed page is reported, not fatal."""
    with chromium() as browser:
        for line in sys.stdin:
            url = line.strip()
            if not url:
                continue
            try:
                result = track_page(browser, url, timeout_s, no_processor)
            except PlaywrightError as exc:  # a timeout is one too; the next URL may work
                result = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
            print(json.dumps(result), flush=True)


class PageTracker:
    """This module with ``--stdin`` as a process: pages tracked one after another in
    one Chromium, started once. ``prefix`` places it (``ip netns exec NS``)."""

    def __init__(self, prefix: Sequence[str] = (), page_timeout_s: float = 60.0) -> None:
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [*prefix, PYTHON, "-m", "lab.browser_tracker", "--stdin"]
            + ["--timeout", f"{page_timeout_s:g}"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def track(self, url: str, timeout_s: float) -> dict[str, Any]:
        """What :func:`track` returns for ``url``, or ``{"error": ...}``; raises
        ``LabError`` when no answer comes within ``timeout_s`` (start-up included)."""
        assert self.process.stdin is not None
        self.process.stdin.write(url + "\n")
        self.process.stdin.flush()
        return dict(json.loads(wait_for_line(self.process, "{", timeout_s)))

    def stderr_tail(self, characters: int = 2000) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-characters:]

    def close(self) -> None:
        """End of input ends the loop and closes Chromium; the group is killed if it lingers."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except BrokenPipeError:  # it had died already
                pass
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # Chromium's children too
            except (ProcessLookupError, PermissionError):
                pass
            self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", nargs="?")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds until it ends")
    parser.add_argument("--no-processor", action="store_true")
    parser.add_argument("--stdin", action="store_true", help="URLs from stdin, one a line")
    args = parser.parse_args(argv)
    if args.stdin == (args.url is not None):
        parser.error("give either a URL or --stdin")
    if args.stdin:
        track_each_line(args.timeout, args.no_processor)
    else:
        print(json.dumps(track(args.url, args.timeout, args.no_processor)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
