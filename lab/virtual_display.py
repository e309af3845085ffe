"""An Xvfb screen for tests of the OpenCV windows, and screenshots of it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

import cv2
import mss
import numpy as np
from mss.exception import ScreenShotError


class VirtualDisplay:
    def __init__(self, width: int = 1280, height: int = 1024) -> None:
        self._geometry = f"{width}x{height}x24"
        self._process: subprocess.Popen[bytes] | None = None
        self.name = ""

    def start(self) -> None:
        if shutil.which("Xvfb") is None:
            raise RuntimeError("Xvfb is missing: `python3 dev.py setup` installs it")
        for number in range(90, 140):
            if Path(f"/tmp/.X{number}-lock").exists():
                continue
            self._process = subprocess.Popen(
                ["Xvfb", f":{number}", "-screen", "0", self._geometry, "-nolisten", "tcp"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.name = f":{number}"
            if self._wait_ready():
                return
            self.close()
        raise RuntimeError("could not start Xvfb")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                return False
            try:
                self._grab()
                return True
            except ScreenShotError:
                time.sleep(0.1)
        return False

    def environment(self) -> dict[str, str]:
        return dict(os.environ, DISPLAY=self.name, QT_QPA_PLATFORM="xcb")

    def screenshot(self, path: Path) -> np.ndarray:
        """The whole screen as a BGR image, also saved as PNG at ``path``."""
        image = self._grab()
        if not cv2.imwrite(str(path), image):
            raise OSError(f"cannot write screenshot {path}")
        return image

    def _grab(self) -> np.ndarray:
        # Straight from the X server's pixels: no xwd, no ImageMagick.
        with mss.MSS(display=self.name) as screen:
            shot = screen.grab(screen.monitors[0])
        return cv2.cvtColor(np.asarray(shot), cv2.COLOR_BGRA2BGR)

    def screenshot_when(
        self, path: Path, shows: Callable[[np.ndarray], bool], timeout: float
    ) -> np.ndarray:
        """Screenshots until one ``shows`` what is expected; the last one taken.

        A window appears and paints asynchronously, later on a loaded
        machine, so one shot at a fixed moment can catch an empty screen.
        """
        deadline = time.monotonic() + timeout
        image = self.screenshot(path)
        while not shows(image) and time.monotonic() < deadline:
            time.sleep(0.25)
            image = self.screenshot(path)
        return image

    def close(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def __enter__(self) -> "VirtualDisplay":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
