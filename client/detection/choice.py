"""What detects and where: ``--detector`` and ``--detect-in``.

Two separate questions, each with its own flag:

- **what** finds the ball (``--detector``): ``centroid`` (ours, the default),
  a shipped locator by its short name (``hough``, ``kalman``), or a user's
  locator as ``module:Class`` (``client.detection.plugin``);
- **where** it runs (``--detect-in``): ``process``, a detector process fed
  through shared memory (``client.detection.detector_process``), or
  ``inline``, on the client's event loop
  (``client.detection.inline_detector``).

Any locator runs in either place, with the same rules as ours: in the
process the same isolation and newest-frame dropping, in both places the
same ``GuardedLocator`` counting a frame it fails on as "no ball"
(``plugin.build_locator`` is the one place that wraps it), and in both the
server's latency reaches ``set_lead``.

``--detector process`` and ``--detector inline`` named a place before the
two questions were separated; they still mean the centroid detector there,
so old command lines, scripts and environments keep working. Naming a place
twice, differently (``--detector inline --detect-in process``), is a usage
error rather than a silent pick.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping, Optional

from client.detection.plugin import make_locator

if TYPE_CHECKING:
    from client.detection.interface import Detector

CENTROID = "centroid"
#: Shipped locators by short name: the long ``module:Class`` path is a
#: detail of this tree, not something a user should have to type.
SHIPPED_LOCATORS: Mapping[str, str] = MappingProxyType(
    {
        "hough": "client.detection.hough:HoughCircleLocator",
        "kalman": "client.detection.kalman:ConstantVelocityPredictor",
    }
)
PLACEMENTS = ("process", "inline")
#: Where detection runs unless a flag says otherwise: the product's design, a
#: slow frame never stalls the client's networking (docs/latency.md).
DEFAULT_PLACEMENT = "process"
#: ``--detector`` values from before ``--detect-in``: the centroid detector, there.
LEGACY_PLACEMENTS = PLACEMENTS

NAMES = (CENTROID, *SHIPPED_LOCATORS, *LEGACY_PLACEMENTS)


def detector_name(text: str) -> str:
    """argparse ``type`` of ``--detector``: a known name or ``module:Class``.

    Whether the class behind ``module:Class`` loads is checked later
    (``DetectorChoice.check``), with a message of its own.
    """
    if text in NAMES or ":" in text:
        return text
    raise argparse.ArgumentTypeError(f"expected {', '.join(NAMES)} or module:Class, got {text!r}")


@dataclass(frozen=True)
class DetectorChoice:
    """One locator (``name``) in one place (``placement``)."""

    #: ``centroid``, a key of ``SHIPPED_LOCATORS``, or ``module:Class``.
    name: str
    #: ``process`` or ``inline``.
    placement: str = DEFAULT_PLACEMENT

    @classmethod
    def from_flags(cls, detector: str, detect_in: Optional[str]) -> "DetectorChoice":
        """The choice ``--detector`` and ``--detect-in`` make together.

        :raises ValueError: they name two different places (the message says so).
        """
        if detector in LEGACY_PLACEMENTS:
            if detect_in is not None and detect_in != detector:
                raise ValueError(
                    f"--detector {detector} means the centroid detector in the {detector} "
                    f"placement, but --detect-in says {detect_in}; say "
                    f"--detector centroid --detect-in {detect_in}"
                )
            return cls(CENTROID, detector)
        return cls(detector, detect_in or DEFAULT_PLACEMENT)

    @property
    def locator_spec(self) -> Optional[str]:
        """The ``module:Class`` to load, or None for the built-in centroid detector."""
        if self.name == CENTROID:
            return None
        return SHIPPED_LOCATORS.get(self.name, self.name)

    def options(self) -> dict[str, Any]:
        """Keyword options for ``InlineDetector`` and ``DetectorProcess``."""
        spec = self.locator_spec
        return {} if spec is None else {"locator": spec}

    def check(self) -> None:
        """Load and make the locator once, here, so a problem shows at once.

        :raises client.detection.plugin.PluginError: it cannot be used.
        """
        spec = self.locator_spec
        if spec is not None:
            make_locator(spec)

    def build(self, placement: Optional[str] = None) -> "Detector":
        """A detector (not started) running this locator in ``placement``
        (by default this choice's own)."""
        # Imported here: the process placement spawns a child that re-imports
        # the entry point, which imports this module to parse its flags.
        from client.detection.detector_process import DetectorProcess
        from client.detection.inline_detector import InlineDetector

        where = placement or self.placement
        if where == "inline":
            return InlineDetector(**self.options())
        if where == "process":
            return DetectorProcess(**self.options())
        raise ValueError(f"no placement {where!r}: expected one of {', '.join(PLACEMENTS)}")
