import csv
import warnings
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
import pytest

from server.reports.plot import (
    DPI,
    FIGURE_SIZE_IN,
    LinkSeries,
    SessionSeries,
    read_frames,
    read_seconds,
    render_session_plot,
    session_title,
)
from server.reports.report import CSV_COLUMNS, SECOND_COLUMNS

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


def narrowed_link(seconds: int = 10) -> LinkSeries:
    """A link that narrowed after 3 s: the target and the frame rate came down."""
    time_s = np.arange(seconds, dtype=float)
    constrained = time_s >= 3
    return LinkSeries(
        time_s=time_s,
        sent_kbps=np.where(constrained, 70.0, 180.0),
        target_kbps=np.where(constrained, 85.0, np.nan),
        capacity_kbps=np.where(constrained, 100.0, np.nan),
        fps=np.where(constrained, 15.0, 30.0),
        skipped=np.where(constrained, 15.0, 0.0),
    )


def render(
    frames: SessionSeries,
    path: Path,
    summary: dict[str, Any] = SUMMARY,
    link: Optional[LinkSeries] = None,
) -> np.ndarray:
    """Render with every warning turned into an error; return the decoded PNG."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        render_session_plot(frames, summary, path, link)
    image = cv2.imread(str(path))
    assert image is not None, "not a decodable PNG"
    assert image.shape == (HEIGHT, WIDTH, 3)
    assert not list(path.parent.glob("*.tmp"))
    return image


def coloured_pixels(image: np.ndarray) -> int:
    """Pixels of a colour (the data), as opposed to white, grey and black (frame and text)."""
    spread = image.max(axis=2).astype(int) - image.min(axis=2).astype(int)
    return int(np.count_nonzero(spread > 60))


def test_png_with_four_drawn_panels(tmp_path: Path) -> None:
    image = render(realistic(), tmp_path / "s.png", link=narrowed_link())
    quarters = np.array_split(image, 4, axis=0)
    counts = [coloured_pixels(quarter) for quarter in quarters]
    assert all(count > 1000 for count in counts), counts


def test_the_link_panel_shows_the_rate_sent(tmp_path: Path) -> None:
    with_link = render(realistic(), tmp_path / "a.png", link=narrowed_link())
    without = render(realistic(), tmp_path / "b.png")
    link_panel = slice(HEIGHT // 2, 3 * HEIGHT // 4)
    blue, green, red = (with_link[link_panel, :, c].astype(int) for c in range(3))
    # tab:purple (148, 103, 189), the rate sent
    purple = (abs(red - 148) < 30) & (abs(green - 103) < 30) & (abs(blue - 189) < 30)
    assert np.count_nonzero(purple) > 200
    assert coloured_pixels(without[link_panel]) < coloured_pixels(with_link[link_panel]) / 4


def test_read_seconds(tmp_path: Path) -> None:
    assert len(read_seconds(tmp_path / "missing.seconds.csv")) == 0
    path = tmp_path / "s.seconds.csv"
    row = ["0", "30", "0", "30", "5.0", "180.0", "130.0", "", "", "500.0", "30.0", "1", ""]
    path.write_text(",".join(SECOND_COLUMNS) + "\n" + ",".join(row) + "\n")
    link = read_seconds(path)
    assert list(link.time_s) == [0.0] and list(link.sent_kbps) == [180.0]
    assert np.isnan(link.target_kbps[0]) and list(link.fps) == [30.0]
    path.write_text("second,x\n0,1\n")
    with pytest.raises(ValueError, match="columns"):
        read_seconds(path)


def test_unanswered_frames_are_marked(tmp_path: Path) -> None:
    image = render(realistic(unanswered=(100, 200)), tmp_path / "s.png")
    blue, green, red = (image[..., channel].astype(int) for channel in range(3))
    marks = (red > 180) & (green < 100) & (blue < 100)  # tab:red, the unanswered marks
    assert np.count_nonzero(marks) > 20
    # In the error panel (the top quarter) and in the latency panel (the second).
    assert np.count_nonzero(marks[: HEIGHT // 4]) and np.count_nonzero(
        marks[HEIGHT // 4 : HEIGHT // 2]
    )


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
    render(frames, tmp_path / "edge.png", summary={"session": "s"}, link=narrowed_link(1))


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


def test_title_names_the_scene_the_error_at_arrival_and_the_hidden_frames() -> None:
    summary = {
        **SUMMARY,
        "scene": "occlusion",
        "error_at_arrival_px": {"mean": 3.96, "p50": 3.54},
        "visibility": {
            "frames_hidden": 24,
            "found_when_visible_ratio": 0.975,
            "false_positives_when_hidden": 1,
            "reacquire_ms": {"p50": 33.3},
        },
    }
    first, second, third = session_title(summary).splitlines()
    assert first.endswith("10.0 s, scene occlusion")
    # Error at arrival beside the error at frame time, mean beside mean.
    assert "  ·  error mean 0.010 px, at arrival 4.0 px  ·  latency" in second
    assert third == (
        "hidden 24 frames  ·  found when visible 97.5 %  ·  "
        "false positives when hidden 1  ·  re-acquired p50 33 ms"
    )
    # A scene that never hides the ball keeps the title to two lines.
    assert len(session_title({**summary, "visibility": {"frames_hidden": 0}}).splitlines()) == 2


def test_the_error_panel_draws_the_error_at_arrival(tmp_path: Path) -> None:
    count = 60
    frames = SessionSeries(
        np.arange(count) / 30.0,
        np.full(count, 0.01),
        np.full(count, 20.0),
        error_at_arrival_px=np.full(count, 6.0),
    )

    def cyan_pixels(series: SessionSeries) -> int:
        render(series, tmp_path / "arrival.png", summary={"session": "s"})
        image = cv2.imread(str(tmp_path / "arrival.png")).astype(int)
        tab_cyan = np.array([0xCF, 0xBE, 0x17])  # BGR of matplotlib's tab:cyan
        return int((np.abs(image - tab_cyan).sum(axis=2) < 30).sum())

    assert cyan_pixels(frames) > 100
    without = SessionSeries(frames.time_s, frames.error_px, frames.latency_ms)
    assert cyan_pixels(without) == 0


def test_the_error_panel_shades_the_frames_where_the_ball_was_hidden(tmp_path: Path) -> None:
    frames = realistic()
    visibility = np.ones(len(frames))
    visibility[100:130] = 0.0  # a second behind the occluder...
    visibility[200] = 0.0  # ...and one frame
    hidden = SessionSeries(frames.time_s, frames.error_px, frames.latency_ms, visibility=visibility)

    def shaded_columns(series: SessionSeries) -> int:
        image = render(series, tmp_path / "hidden.png")
        grey = (np.abs(image.astype(int) - 224) <= 2).all(axis=2)  # matplotlib's "0.88"
        return int((grey[75:250].sum(axis=0) > 100).sum())  # the error panel's rows

    # A second of 10.4 on a panel 920 px wide is 88 px, the single frame 3 px.
    assert 75 < shaded_columns(hidden) < 110
    assert shaded_columns(frames) == 0


def test_read_frames_keeps_the_visibility_column(tmp_path: Path) -> None:
    path = tmp_path / "frames.csv"
    with open(path, "w", newline="", encoding="utf8") as file:
        writer = csv.writer(file)
        writer.writerow(CSV_COLUMNS)
        for pts, visibility in ((3000, "0.0"), (0, "1.0"), (6000, "0.5")):
            row = dict.fromkeys(CSV_COLUMNS, "")
            row.update(pts=str(pts), visibility=visibility)
            writer.writerow(row.values())
    frames = read_frames(path)
    assert frames.visibility is not None
    assert frames.visibility.tolist() == [1.0, 0.0, 0.5]  # in stream order
    assert frames.hidden.tolist() == [False, True, False]
