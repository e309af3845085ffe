"""Loading a user's locator by ``module:Class``: one clear line when it cannot be."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pytest

from client.detection.plugin import GuardedLocator, PluginError, load_locator_class, make_locator

USER_MODULE = textwrap.dedent(
    """
    class Good:
        used_window = False

        def detect(self, luma):
            return (1.5, 2.5)

    class NoDetect:
        pass

    class Broken:
        def __init__(self):
            raise RuntimeError("no model file\\nsecond line")

        def detect(self, luma):
            return None

    not_a_class = 3
    """
)


@pytest.fixture
def user_module(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "user_tracker_h23.py").write_text(USER_MODULE)
    (tmp_path / "user_broken_h23.py").write_text("import no_such_package_anywhere\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield "user_tracker_h23"
    finally:
        sys.path.remove(str(tmp_path))
        for name in ("user_tracker_h23", "user_broken_h23"):
            sys.modules.pop(name, None)


def test_a_class_written_by_the_user_is_loaded_and_made(user_module: str) -> None:
    locator = make_locator(f"{user_module}:Good")
    assert locator.detect(np.zeros((4, 4), np.uint8)) == (1.5, 2.5)
    assert load_locator_class("client.detection.hough:HoughCircleLocator").__name__ == (
        "HoughCircleLocator"
    )


@pytest.mark.parametrize(
    "spec,message",
    [
        ("no_colon", "expected module:Class"),
        (":Good", "expected module:Class"),
        ("{m}:", "expected module:Class"),
        ("no_such_module_h23:Thing", "cannot import no_such_module_h23: ModuleNotFoundError"),
        ("user_broken_h23:Thing", "cannot import user_broken_h23: ModuleNotFoundError"),
        ("{m}:Missing", "has no Missing"),
        ("{m}:not_a_class", "not_a_class is not a class"),
        ("{m}:NoDetect", "NoDetect has no detect(luma) method"),
        ("{m}:Broken", "Broken() failed: RuntimeError: no model file"),
    ],
)
def test_a_missing_or_broken_class_is_one_clear_line(
    user_module: str, spec: str, message: str
) -> None:
    with pytest.raises(PluginError) as caught:
        make_locator(spec.format(m=user_module))
    text = str(caught.value)
    assert message in text and "\n" not in text


class Flaky:
    def __init__(self, answers: list[object]) -> None:
        self._answers = answers

    def detect(self, luma: np.ndarray) -> Optional[tuple[float, float]]:
        answer = self._answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]


def test_a_locator_that_raises_on_some_frames_is_counted_not_fatal() -> None:
    guarded = GuardedLocator(
        Flaky([(1.0, 2.0), ValueError("bad frame"), None, (float("nan"), 1.0), "xy", (3, 4)])
    )
    luma = np.zeros((4, 4), np.uint8)
    results, failed = [], []
    for _ in range(6):
        results.append(guarded.detect(luma))
        failed.append(guarded.failed)
    assert results == [(1.0, 2.0), None, None, None, None, (3.0, 4.0)]
    # "Not found" (None) is an answer; an exception, a NaN or a non-pair fails.
    assert failed == [False, True, False, True, True, False]
    assert guarded.failures == 3  # the exception, the NaN and the non-pair


class Predictive:
    def __init__(self) -> None:
        self.lead: Optional[float] = None
        self.frame_time: Optional[float] = None

    def set_lead(self, seconds: float) -> None:
        self.lead = seconds

    def set_frame_time(self, seconds: float) -> None:
        self.frame_time = seconds

    def detect(self, luma: np.ndarray) -> Optional[tuple[float, float]]:
        return None


def test_the_guard_passes_lead_and_frame_time_on_to_locators_that_take_them() -> None:
    inner = Predictive()
    guarded = GuardedLocator(inner)
    guarded.set_lead(0.04)
    guarded.set_frame_time(12.5)
    assert (inner.lead, inner.frame_time) == (0.04, 12.5)
    plain = GuardedLocator(Flaky([None]))
    plain.set_lead(0.04)  # ignored, not an error
    plain.set_frame_time(1.0)
