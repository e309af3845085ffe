import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from server.plot import DPI, FIGURE_SIZE_IN, SessionSeries, render_session_plot, session_title

WIDTH, HEIGHT = int(FIGURE_SIZE_IN[0] * DPI), int(FIGURE_SIZE_IN[1] * DPI)


def realistic(count: int = 300, unanswered: tuple[int, ...] = ()) -> SessionSeries:
    rng = np.random.default_rng(1)
    error = np.abs(rng.normal(0.01, 0.004, count))
    latency = 5.0 + rng.gamma(2.0, 0.3, count)
    latency[::97] += 30.0
    error[list(unanswered)] = np.nan
    latency[list(unanswered)] = np.nan
    return SessionSeries(np.arange(count) / 30.0, error, latency)


SUMMARY: dict[str, Any] = {
    "session": "session-20261127-101500-1",
    "width": 640,
    "height": 480,
    "codec": "VP8",
    "fps": 30,
    "duration_s": 10.0,
    "frames_sent": 300,
    "frames_answered": 298,
    "frames_found": 298,
    "error_px": {"mean": 0.01034, "p50": 0.0101, "p95": 0.017, "max": 0.02},
    "latency_ms": {"mean": 6.0, "p50": 5.52, "p95": 6.9, "p99": 28.61, "max": 42.0},
}


def render(frames: SessionSeries, path: Path, summary: dict[str, Any] = SUMMARY) -> np.ndarray:
    """Render with every warning turned into an error; return the decoded PNG."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        render_session_plot(frames, summary, path)
    image = cv2.imread(str(path))
    assert image is not None, "not a decodable PNG"
    assert image.shape == (HEIGHT, WIDTH, 3)
    assert not list(path.parent.glob("*.tmp"))
    return image


def coloured_pixels(image: np.ndarray) -> int:
    """Pixels of a colour (the data), as opposed to white, grey and black (frame and text)."""
    spread = image.max(axis=2).astype(int) - image.min(axis=2).astype(int)
    return int(np.count_nonzero(spread > 60))


def test_png_with_three_drawn_panels(tmp_path: Path) -> None:
    image = render(realistic(), tmp_path / "s.png")
    thirds = np.array_split(image, 3, axis=0)
    counts = [coloured_pixels(third) for third in thirds]
    assert all(count > 1000 for count in counts), counts


def test_unanswered_frames_are_marked(tmp_path: Path) -> None:
    image = render(realistic(unanswered=(100, 200)), tmp_path / "s.png")
    blue, green, red = (image[..., channel].astype(int) for channel in range(3))
    marks = (red > 180) & (green < 100) & (blue < 100)  # tab:red, the unanswered marks
    assert np.count_nonzero(marks) > 20
    assert np.count_nonzero(marks[: HEIGHT // 3]) and np.count_nonzero(marks[HEIGHT // 3 :])


def test_long_session_renders(tmp_path: Path) -> None:
    render(realistic(count=50_000, unanswered=(7, 40_000)), tmp_path / "long.png")


@pytest.mark.parametrize(
    "frames",
    [
        SessionSeries.empty(),
        SessionSeries(np.arange(5.0), np.full(5, np.nan), np.full(5, np.nan)),  # no answers
        SessionSeries(np.arange(5.0), np.full(5, np.nan), np.full(5, 6.0)),  # ball not found
        SessionSeries(np.zeros(1), np.zeros(1), np.ones(1)),  # one frame, zero error
        SessionSeries(np.arange(4.0), np.array([0.0, 1e-5, 50.0, np.nan]), np.zeros(4)),
    ],
    ids=["no frames", "no answers", "no coordinates", "one frame", "zeros and outliers"],
)
def test_edge_cases_still_give_a_png(tmp_path: Path, frames: SessionSeries) -> None:
    render(frames, tmp_path / "edge.png", summary={"session": "s"})


def test_title_names_the_session_and_the_headline_numbers() -> None:
    first, second = session_title(SUMMARY).splitlines()
    assert first == "session-20261127-101500-1  ·  640x480 VP8, 30 fps, 10.0 s"
    assert second == (
        "answered 298/300 (99.3 %)  ·  error mean 0.010 px  ·  latency p50 5.5 ms, p99 28.6 ms"
    )


def test_title_never_rounds_a_missed_frame_up_to_100_percent() -> None:
    title = session_title({**SUMMARY, "frames_sent": 108000, "frames_answered": 107998})
    assert "answered 107998/108000 (99.9 %)" in title


def test_title_without_numbers() -> None:
    empty = {"session": "s", "frames_sent": 0, "frames_answered": 0}
    no_answers = {**empty, "error_px": {"mean": None}, "latency_ms": {"p50": None, "p99": None}}
    for summary in (empty, no_answers):
        assert session_title(summary).splitlines() == [
            "s",
            "answered 0/0  ·  error mean - px  ·  latency p50 - ms, p99 - ms",
        ]
    assert session_title({}).startswith("session\n")
