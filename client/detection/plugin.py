"""Loading a ball locator a user names as ``module:Class``.

A locator is the algorithm alone: one luma plane in (2-D uint8, maybe a
strided view), the ball's centre ``(x, y)`` or None out, as
``client.detection.interface.BallLocator`` declares it (``detect``, and a
``used_window`` flag that may be missing). Whatever goes wrong while loading
one (a malformed name, a module that does not import, a missing attribute,
something that is not a class, a class without ``detect``, a constructor that
raises) becomes one ``PluginError`` whose message is the single line the
client prints before it exits with status 2.

``GuardedLocator`` wraps a loaded locator so that an exception in ``detect``
counts as "not found" for that frame, and is counted, instead of ending the
session: a user's detector that fails on some frames is measured, not fatal.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Optional

import numpy as np

logger = logging.getLogger("client.detection.plugin")

Centre = tuple[float, float]


class PluginError(Exception):
    """A locator named on the command line cannot be used; the message says why."""


def load_locator_class(spec: str) -> type:
    """The class ``spec`` (``package.module:Class``) names, checked for ``detect``."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise PluginError(f"{spec!r}: expected module:Class, e.g. mypackage.tracker:MyDetector")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error in a user's module is theirs to read
        raise PluginError(f"{spec}: cannot import {module_name}: {_one_line(exc)}") from None
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise PluginError(f"{spec}: {module_name} has no {attribute}")
        found = getattr(found, part)
    if not isinstance(found, type):
        raise PluginError(f"{spec}: {attribute} is not a class")
    if not callable(getattr(found, "detect", None)):
        raise PluginError(f"{spec}: {attribute} has no detect(luma) method")
    return found


def make_locator(spec: str) -> Any:
    """An instance of the locator ``spec`` names, made with no arguments."""
    cls = load_locator_class(spec)
    try:
        return cls()
    except Exception as exc:
        raise PluginError(f"{spec}: {cls.__name__}() failed: {_one_line(exc)}") from None


def build_locator(options: dict[str, Any]) -> Any:
    """The locator a detector runs: ``options["locator"]`` (``module:Class``),
    guarded, or else the centroid detector with ``options`` as its settings."""
    spec = options.get("locator")
    if spec:
        return GuardedLocator(make_locator(spec))
    from client.detection.detector import CentroidDetector

    return CentroidDetector(**options)


class GuardedLocator:
    """A locator whose exceptions are counted as frames without a ball."""

    def __init__(self, locator: Any) -> None:
        self._locator = locator
        self.failures = 0
        #: Whether the last frame failed (the detector process and the inline
        #: detector pass it on with the result).
        self.failed = False
        self.used_window = False

    def set_lead(self, seconds: float) -> None:
        """Pass the server's latency on to a predictive locator (others ignore it)."""
        set_lead = getattr(self._locator, "set_lead", None)
        if callable(set_lead):
            set_lead(seconds)

    def set_frame_time(self, seconds: float) -> None:
        """Pass the frame's capture time (its pts, in seconds) to a locator that wants it."""
        set_frame_time = getattr(self._locator, "set_frame_time", None)
        if callable(set_frame_time):
            set_frame_time(seconds)

    def detect(self, luma: np.ndarray) -> Optional[Centre]:
        self.failed = False
        try:
            found = self._locator.detect(luma)
        except Exception as exc:
            if self.failures == 0:
                logger.warning("the detector failed on a frame (counted): %s", _one_line(exc))
            self._fail()
            return None
        self.used_window = bool(getattr(self._locator, "used_window", False))
        if found is None:
            return None
        try:
            x, y = float(found[0]), float(found[1])
        except (TypeError, ValueError, IndexError):
            self._fail()
            return None
        if not (np.isfinite(x) and np.isfinite(y)):
            self._fail()
            return None
        return x, y

    def _fail(self) -> None:
        self.failures += 1
        self.failed = True


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
