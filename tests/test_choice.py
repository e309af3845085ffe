"""What detects and where (client.detection.choice): --detector and --detect-in."""

from __future__ import annotations

import argparse
import select
import time

import pytest

from client.detection.choice import (
    SHIPPED_LOCATORS,
    DetectorChoice,
    detector_name,
)
from client.detection.detector_process import DetectorProcess
from client.detection.inline_detector import InlineDetector
from client.detection.interface import DetectionResult, Detector
from client.detection.plugin import PluginError, load_locator_class
from server.core.renderer import render_luma

WIDTH, HEIGHT, RADIUS = 320, 240, 12.0
#: Frames 1/30 s apart (pts in 90 kHz ticks), the ball 10 px further each: 300 px/s.
FRAMES = [(3000 * index, 60.0 + 10.0 * index) for index in range(8)]
LEAD_S = 0.1


@pytest.mark.parametrize(
    "text", ["centroid", "hough", "kalman", "process", "inline", "mypackage.tracker:Mine"]
)
def test_known_names_and_locators_are_accepted(text: str) -> None:
    assert detector_name(text) == text


@pytest.mark.parametrize("text", ["", "centroids", "Hough", "mypackage.tracker"])
def test_anything_else_names_what_is_expected(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected centroid, hough, kalman"):
        detector_name(text)


@pytest.mark.parametrize(
    "detector,detect_in,name,placement",
    [
        ("centroid", None, "centroid", "process"),  # the defaults: ours, in its process
        ("process", None, "centroid", "process"),  # the old spellings still work
        ("inline", None, "centroid", "inline"),
        ("inline", "inline", "centroid", "inline"),
        ("hough", "inline", "hough", "inline"),
        ("kalman", None, "kalman", "process"),
        ("m:C", "inline", "m:C", "inline"),
    ],
)
def test_what_and_where_from_the_flags(
    detector: str, detect_in: str | None, name: str, placement: str
) -> None:
    assert DetectorChoice.from_flags(detector, detect_in) == DetectorChoice(name, placement)


def test_an_old_spelling_contradicted_by_detect_in_is_refused() -> None:
    with pytest.raises(ValueError, match="--detector centroid --detect-in process") as caught:
        DetectorChoice.from_flags("inline", "process")
    assert "\n" not in str(caught.value)


def test_short_names_stand_for_the_shipped_locators() -> None:
    assert DetectorChoice("centroid").locator_spec is None
    assert DetectorChoice("centroid").options() == {}
    for short, spec in SHIPPED_LOCATORS.items():
        assert DetectorChoice(short).options() == {"locator": spec}
        load_locator_class(spec)  # the short name points at a real class
    assert DetectorChoice("m:C").locator_spec == "m:C"


def test_check_makes_the_locator_once() -> None:
    DetectorChoice("centroid").check()
    DetectorChoice("hough").check()
    with pytest.raises(PluginError, match="cannot import no_such_module_h22"):
        DetectorChoice("no_such_module_h22:Thing").check()


def test_build_puts_the_locator_where_it_was_asked() -> None:
    inline = DetectorChoice("hough", "inline").build()
    process = DetectorChoice("hough", "process").build()
    try:
        assert isinstance(inline, InlineDetector) and isinstance(process, DetectorProcess)
        # replay overrides the place: offline, everything runs inline.
        assert isinstance(DetectorChoice("hough", "process").build("inline"), InlineDetector)
    finally:
        inline.close()
        process.close()
    with pytest.raises(ValueError, match="no placement 'gpu'"):
        DetectorChoice("centroid").build("gpu")


def detect_all(detector: Detector) -> list[DetectionResult]:
    """Each frame of FRAMES, one at a time, and its result."""
    results: list[DetectionResult] = []
    for pts, x in FRAMES:
        detector.submit(pts, render_luma(WIDTH, HEIGHT, x, 120.0, RADIUS))
        deadline = time.monotonic() + 10.0
        while True:
            if detector.result_fd is not None:
                select.select([detector.result_fd], [], [], max(deadline - time.monotonic(), 0))
            got = detector.collect()
            if got or time.monotonic() > deadline:
                break
        assert got, f"no result for frame {pts}"
        results += got
    return results


@pytest.mark.parametrize("placement", ["inline", "process"])
def test_the_predictor_gets_the_servers_latency_in_either_placement(placement: str) -> None:
    detector = DetectorChoice("kalman", placement).build()
    try:
        detector.start()
        assert detector.wait_ready(20.0)
        detector.set_lead(LEAD_S)  # what the session does with the server's latency
        last = detect_all(detector)[-1]
    finally:
        detector.close()
    # It aims LEAD_S past the frame: 300 px/s x 0.1 s = 30 px beyond the ball.
    _, newest_x = FRAMES[-1]
    assert last.x is not None and last.x == pytest.approx(newest_x + 300.0 * LEAD_S, abs=3.0)
