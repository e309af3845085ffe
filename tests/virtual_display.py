"""An Xvfb screen for tests of the OpenCV windows, and screenshots of it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np


class VirtualDisplay:
    def __init__(self, width: int = 1280, height: int = 1024) -> None:
        self._geometry = f"{width}x{height}x24"
        self._process: subprocess.Popen[bytes] | None = None
        self.name = ""

    def start(self) -> None:
        for tool in ("Xvfb", "xwd", "convert"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is missing: `python3 dev.py setup` installs it")
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
            probe = subprocess.run(
                ["xwd", "-root", "-display", self.name, "-silent"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if probe.returncode == 0:
                return True
            time.sleep(0.1)
        return False

    def environment(self) -> dict[str, str]:
        return dict(os.environ, DISPLAY=self.name, QT_QPA_PLATFORM="xcb")

    def screenshot(self, path: Path) -> np.ndarray:
        """The whole screen as a BGR image, also saved as PNG at ``path``."""
        dump = subprocess.run(
            ["xwd", "-root", "-display", self.name, "-silent"], check=True, capture_output=True
        ).stdout
        subprocess.run(["convert", "xwd:-", f"png:{path}"], input=dump, check=True)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert image is not None, f"unreadable screenshot {path}"
        return image

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
