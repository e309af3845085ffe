"""Debian's Chromium, headless, driven by playwright: the console's real browser.

playwright's own browser downloads cannot run here, so it drives the system
``/usr/bin/chromium`` that ``dev.py test`` installs. The flags keep Chromium
off the network (nothing but loopback is reachable) and let a page play
video without a user gesture. playwright gives every launch a new, empty
profile.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from playwright.sync_api import Browser, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")

FLAGS = (
    "--no-sandbox",  # as root, and inside the non-root user namespace of dev.py
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
)


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed afterwards."""
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: `python3 dev.py setup` installs it")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=list(FLAGS)
        )
        try:
            yield browser
        finally:
            browser.close()
