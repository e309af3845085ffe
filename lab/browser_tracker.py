"""Run the ``/track`` page in headless Chromium and print what it measured, as JSON.

For tests and benchmarks that need the browser somewhere else than the test
process, such as in a NetworkLab namespace::

    ip netns exec NS python -m lab.browser_tracker "http://ball-server:8080/track?seconds=8&relay=1"

It prints one JSON object: the page's ``window.tracker``, the server's summary
the page received (``window.trackingSummary``) and the errors the page logged.
``--no-processor`` removes ``MediaStreamTrackProcessor`` before the page
loads, as in a browser that lacks it (Firefox, Safari).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional, Sequence

from lab.browser import chromium

ENDED = "() => ['ended', 'failed'].includes(document.body.dataset.state)"


def track(url: str, timeout_s: float, no_processor: bool = False) -> dict[str, Any]:
    with chromium() as browser:
        page = browser.new_page()
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
        result = {
            "tracker": page.evaluate("() => window.tracker"),
            "summary": page.evaluate("() => window.trackingSummary"),
            "frames_note_shown": page.locator("#frames-note").is_visible(),
            "ice_path_shown": page.locator("#ice-path").inner_text(),
            "problems": problems,
        }
        page.close()
        return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds until it ends")
    parser.add_argument("--no-processor", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(track(args.url, args.timeout, args.no_processor)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
