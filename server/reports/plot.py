"""The session plot: one PNG with error, latency and the link over time, and the latency distribution.

Drawn with matplotlib's Agg canvas on a ``Figure`` of its own: no pyplot, no
global state, no display, so it is safe in a server process and its tests.
"""

from __future__ import annotations

import csv
import math
import os
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter
from matplotlib.transforms import blended_transform_factory

from protocol.wire_clock import VIDEO_CLOCK_RATE
from server.reports.report import CSV_COLUMNS, SECOND_COLUMNS, seconds_csv_path

FIGURE_SIZE_IN = (10.0, 10.0)
DPI = 100

#: Above this many frames the time plots draw a plain line without point markers.
_MARKERS_UP_TO = 2000
#: A time plot switches to a log y axis when its maximum exceeds the median this many times.
_LOG_SPAN = 100.0
#: The histogram switches to a log x axis when the slowest answer took this many times the median.
_LOG_HISTOGRAM_SPAN = 3.0
_HISTOGRAM_BINS = 60
#: The histogram counts on a log axis once its tallest bar holds more frames than this.
_LOG_COUNTS_FROM = 30
#: Room above the data, as a fraction of its range, for the marks of frames without a value.
_MARK_BAND = 0.15

_ERROR_COLOUR = "tab:blue"
_LATENCY_COLOUR = "tab:green"
_UNANSWERED_COLOUR = "tab:red"
_NOT_FOUND_COLOUR = "tab:orange"
_SENT_COLOUR = "tab:purple"
_FPS_COLOUR = "tab:gray"
_ARRIVAL_COLOUR = "tab:cyan"
_HIDDEN_COLOUR = "0.88"


@dataclass(frozen=True)
class SessionSeries:
    """One session's frames as arrays, one entry per frame sent, in stream order.

    ``error_px`` is NaN where there is no answer with coordinates, ``latency_ms``
    NaN where there is no answer at all. ``error_at_arrival_px`` (the answer
    against the ball when it arrived) is NaN like ``error_px``, None when not known;
    ``visibility`` (the share of the ball in view, 0 when hidden) None when not known.
    """

    time_s: np.ndarray
    error_px: np.ndarray
    latency_ms: np.ndarray
    error_at_arrival_px: Optional[np.ndarray] = None
    visibility: Optional[np.ndarray] = None

    @classmethod
    def empty(cls) -> SessionSeries:
        nothing = np.empty(0, dtype=float)
        return cls(nothing, nothing, nothing)

    def __len__(self) -> int:
        return len(self.time_s)

    @property
    def answered(self) -> np.ndarray:
        return ~np.isnan(self.latency_ms)

    @property
    def found(self) -> np.ndarray:
        return ~np.isnan(self.error_px)

    @property
    def hidden(self) -> np.ndarray:
        """Frames in which none of the ball showed ("not found" was the right answer)."""
        if self.visibility is None:
            return np.zeros(len(self), dtype=bool)
        return self.visibility <= 0.0


def read_frames(path: Path) -> SessionSeries:
    """The CSV written by ``SessionReport`` as arrays; empty cells become NaN.

    Values go into compact ``array``s rather than lists of floats, so a long
    session costs 24 bytes a frame to read back.
    """
    time_s, error_px, latency_ms = array("d"), array("d"), array("d")
    at_arrival, visibility = array("d"), array("d")
    with open(path, newline="", encoding="utf8") as file:
        reader = csv.DictReader(file)
        if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
            raise ValueError(f"{path}: columns {reader.fieldnames}, expected {CSV_COLUMNS}")
        for row in reader:
            time_s.append(int(row["pts"]) / VIDEO_CLOCK_RATE)
            error_px.append(_value(row["error_px"]))
            latency_ms.append(_value(row["latency_ms"]))
            at_arrival.append(_value(row["error_at_arrival_px"]))
            visibility.append(_value(row["visibility"]))
    order = np.argsort(np.frombuffer(time_s), kind="stable")
    return SessionSeries(
        time_s=np.frombuffer(time_s)[order],
        error_px=np.frombuffer(error_px)[order],
        latency_ms=np.frombuffer(latency_ms)[order],
        error_at_arrival_px=np.frombuffer(at_arrival)[order],
        visibility=np.frombuffer(visibility)[order],
    )


def _value(cell: str) -> float:
    return float(cell) if cell else float("nan")


@dataclass(frozen=True)
class LinkSeries:
    """The per-second record (``server.reports.report.SECOND_COLUMNS``) as arrays, NaN for empty cells."""

    #: The start of each row's second.
    time_s: np.ndarray
    sent_kbps: np.ndarray
    target_kbps: np.ndarray
    capacity_kbps: np.ndarray
    fps: np.ndarray
    skipped: np.ndarray

    @classmethod
    def empty(cls) -> LinkSeries:
        nothing = np.empty(0, dtype=float)
        return cls(nothing, nothing, nothing, nothing, nothing, nothing)

    def __len__(self) -> int:
        return len(self.time_s)


def read_seconds(path: Path) -> LinkSeries:
    """The per-second CSV as arrays; empty when there is none (an older report)."""
    if not path.exists():
        return LinkSeries.empty()
    columns: dict[str, list[float]] = {name: [] for name in SECOND_COLUMNS}
    with open(path, newline="", encoding="utf8") as file:
        reader = csv.DictReader(file)
        if tuple(reader.fieldnames or ()) != SECOND_COLUMNS:
            raise ValueError(f"{path}: columns {reader.fieldnames}, expected {SECOND_COLUMNS}")
        for row in reader:
            for name in SECOND_COLUMNS:
                columns[name].append(_value(row[name]))
    return LinkSeries(
        time_s=np.array(columns["second"]),
        sent_kbps=np.array(columns["sent_kbps"]),
        target_kbps=np.array(columns["target_kbps"]),
        capacity_kbps=np.array(columns["capacity_kbps"]),
        fps=np.array(columns["fps"]),
        skipped=np.array(columns["frames_skipped_for_rate"]),
    )


def write_plot(csv_path: Path, summary: Mapping[str, Any], png_path: Path) -> None:
    """Plot a finished session's report CSVs into ``png_path``."""
    render_session_plot(
        read_frames(csv_path), summary, png_path, read_seconds(seconds_csv_path(csv_path))
    )


def session_title(summary: Mapping[str, Any]) -> str:
    """Two lines: the session and its stream, then the headline numbers."""
    session = str(summary.get("session") or "session")
    stream = [str(summary.get("codec") or "")]
    if "width" in summary and "height" in summary:
        stream[0] = f"{summary['width']}x{summary['height']} {stream[0]}".strip()
    if "fps" in summary:
        stream.append(f"{summary['fps']:g} fps")
    if "duration_s" in summary:
        stream.append(f"{summary['duration_s']:.1f} s")
    if summary.get("scene"):
        stream.append(f"scene {summary['scene']}")
    described = ", ".join(part for part in stream if part)
    first = f"{session}  ·  {described}" if described else session
    sent = summary.get("frames_sent")
    answered = summary.get("frames_answered")
    if sent and answered is not None:
        # Rounded down, so a session that missed a frame never reads 100.0 %.
        percent = math.floor(1000.0 * answered / sent) / 10.0
        answers = f"answered {answered}/{sent} ({percent:.1f} %)"
    else:
        answers = f"answered {_number(answered, 0)}/{_number(sent, 0)}"
    error = summary.get("error_px") or {}
    latency = summary.get("latency_ms") or {}
    errors = f"error mean {_number(error.get('mean'), 3)} px"
    at_arrival = summary.get("error_at_arrival_px") or {}
    if at_arrival.get("mean") is not None:
        # Beside the frame-time error: the tracker's accuracy, then what latency adds to it.
        errors += f", at arrival {_number(at_arrival['mean'], 1)} px"
    headline = [
        answers,
        errors,
        f"latency p50 {_number(latency.get('p50'), 1)} ms, p99 {_number(latency.get('p99'), 1)} ms",
    ]
    second = "  ·  ".join(headline)
    visibility = summary.get("visibility") or {}
    if not visibility.get("frames_hidden"):
        return f"{first}\n{second}"
    found = visibility.get("found_when_visible_ratio")
    reacquire = visibility.get("reacquire_ms") or {}
    third = "  ·  ".join(
        [
            f"hidden {visibility['frames_hidden']} frames",
            f"found when visible {_number(None if found is None else 100 * found, 1)} %",
            f"false positives when hidden {visibility.get('false_positives_when_hidden')}",
            f"re-acquired p50 {_number(reacquire.get('p50'), 0)} ms",
        ]
    )
    return f"{first}\n{second}\n{third}"


def render_session_plot(
    frames: SessionSeries,
    summary: Mapping[str, Any],
    path: Path,
    link: Optional[LinkSeries] = None,
) -> None:
    """Write the session's PNG to ``path`` (atomically: a reader never sees half of it)."""
    figure = Figure(figsize=FIGURE_SIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    error_axes, latency_axes, link_axes, histogram_axes = figure.subplots(4, 1)
    latency_axes.sharex(error_axes)
    link_axes.sharex(error_axes)
    latency_axes.tick_params(labelbottom=False)
    latency_axes.set_xlabel("")
    figure.suptitle(session_title(summary), fontsize=11)
    latency = summary.get("latency_ms") or {}
    p50 = _quantile(latency.get("p50"), frames.latency_ms, 50)
    p99 = _quantile(latency.get("p99"), frames.latency_ms, 99)
    _draw_error(error_axes, frames)
    _draw_latency(latency_axes, frames, p50, p99)
    _draw_link(link_axes, link if link is not None else LinkSeries.empty(), summary)
    _draw_histogram(histogram_axes, frames, p50, p99)
    temporary = path.with_name(path.name + ".tmp")
    try:
        figure.savefig(temporary, format="png", dpi=DPI)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _draw_error(axes: Axes, frames: SessionSeries) -> None:
    axes.set_title("Error per frame", fontsize=10, loc="left")
    axes.set_ylabel("error (px)")
    axes.tick_params(labelbottom=False)
    _shade_hidden(axes, frames)
    error = frames.error_px[frames.found]
    if len(error):
        # NaN breaks the line: a frame without coordinates is a gap, not a bridge.
        axes.plot(frames.time_s, frames.error_px, color=_ERROR_COLOUR, **_line_style(len(frames)))
        mean = float(np.mean(error))
        axes.axhline(mean, color="black", lw=0.8, ls="--", label=f"mean {mean:.3f} px")
        at_arrival = frames.error_at_arrival_px
        known = at_arrival[~np.isnan(at_arrival)] if at_arrival is not None else error[:0]
        if at_arrival is not None and len(known):
            # The cost of latency: where the ball is when the answer lands.
            axes.plot(
                frames.time_s,
                at_arrival,
                color=_ARRIVAL_COLOUR,
                label=f"at arrival, mean {float(np.mean(known)):.1f} px",
                **_line_style(len(frames)),
            )
        _scale_y(axes, np.concatenate((error, known)))
    not_found = frames.answered & ~frames.found
    _mark_frames(axes, frames.time_s[not_found], 0.92, _NOT_FOUND_COLOUR, "no ball found")
    _mark_frames(axes, frames.time_s[~frames.answered], 0.97, _UNANSWERED_COLOUR, "unanswered")
    _note_if_empty(axes, frames, len(error), "no answer with coordinates")
    _legend(axes)


def _shade_hidden(axes: Axes, frames: SessionSeries) -> None:
    """Grey behind the frames in which the ball was hidden: there "no ball found" is right."""
    hidden = frames.hidden
    if not hidden.any():
        return
    # Each hidden frame's band reaches the next frame's time, so that a
    # single hidden frame shows too; one artist however many bands.
    reaching = hidden | np.concatenate(([False], hidden[:-1]))
    axes.fill_between(
        frames.time_s,
        0.0,
        1.0,
        where=reaching,
        step="post",
        color=_HIDDEN_COLOUR,
        lw=0,
        transform=blended_transform_factory(axes.transData, axes.transAxes),
        label=f"ball hidden: {int(hidden.sum())} frames",
    )


def _draw_latency(
    axes: Axes, frames: SessionSeries, p50: Optional[float], p99: Optional[float]
) -> None:
    axes.set_title("Latency per frame (production to answer)", fontsize=10, loc="left")
    axes.set_ylabel("latency (ms)")
    latency = frames.latency_ms[frames.answered]
    if len(latency):
        axes.plot(
            frames.time_s, frames.latency_ms, color=_LATENCY_COLOUR, **_line_style(len(frames))
        )
        _quantile_lines(axes.axhline, p50, p99)
        _scale_y(axes, latency)
    _mark_frames(axes, frames.time_s[~frames.answered], 0.97, _UNANSWERED_COLOUR, "unanswered")
    _note_if_empty(axes, frames, len(latency), "no answers")
    _legend(axes)


def _draw_link(axes: Axes, link: LinkSeries, summary: Mapping[str, Any]) -> None:
    """What the link adaptation did, second by second: the rate sent, its target, the frame rate."""
    axes.set_title("Link per second: rate sent and frame rate", fontsize=10, loc="left")
    axes.set_xlabel("stream time (s)")
    axes.set_ylabel("kbit/s (wire, estimated)")
    if not len(link):
        _note(axes, "no per-second record")
        axes.set_yticks([])
        return
    edges = np.append(link.time_s, link.time_s[-1] + 1.0)
    if np.any(~np.isnan(link.sent_kbps)):
        axes.stairs(link.sent_kbps, edges, baseline=None, color=_SENT_COLOUR, lw=1.5, label="sent")
    if np.any(~np.isnan(link.target_kbps)):
        axes.stairs(
            link.target_kbps, edges, baseline=None, color="black", lw=0.8, ls="--", label="target"
        )
    if np.any(~np.isnan(link.capacity_kbps)):
        axes.plot(
            link.time_s + 0.5,
            link.capacity_kbps,
            ls="none",
            marker="_",
            ms=8,
            mew=1.2,
            color="black",
            label="capacity",
        )
    high = float(np.nanmax(np.concatenate([link.sent_kbps, link.target_kbps, [1.0]])))
    axes.set_ylim(0.0, high * (1 + 2 * _MARK_BAND))
    frames_axes = axes.twinx()
    skipped = int(np.nansum(link.skipped))
    frames_axes.stairs(
        link.fps,
        edges,
        baseline=None,
        color=_FPS_COLOUR,
        lw=1.0,
        label=f"frames/s ({skipped} skipped to fit)",
    )
    frames_axes.set_ylabel("frames/s", color=_FPS_COLOUR)
    frames_axes.tick_params(axis="y", colors=_FPS_COLOUR)
    nominal = summary.get("fps")
    top = float(nominal) if isinstance(nominal, (int, float)) else float(np.nanmax(link.fps))
    frames_axes.set_ylim(0.0, (top or 1.0) * (1 + 2 * _MARK_BAND))
    handles, labels = axes.get_legend_handles_labels()
    more_handles, more_labels = frames_axes.get_legend_handles_labels()
    axes.legend(
        handles + more_handles,
        labels + more_labels,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncols=4,
        fontsize=8,
        frameon=False,
        borderaxespad=0.2,
    )


def _draw_histogram(
    axes: Axes, frames: SessionSeries, p50: Optional[float], p99: Optional[float]
) -> None:
    axes.set_title("Latency distribution", fontsize=10, loc="left")
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel("frames")
    latency = frames.latency_ms[frames.answered]
    if not len(latency):
        _note_if_empty(axes, frames, 0, "no answers")
        axes.set_xticks([])
        return
    low, median, high = (float(v) for v in np.percentile(latency, (0, 50, 100)))
    if low > 0 and high > _LOG_HISTOGRAM_SPAN * median:
        bins: Union[int, list[float]] = np.geomspace(low, high, _HISTOGRAM_BINS + 1).tolist()
        axes.set_xscale("log")
    else:
        bins = _HISTOGRAM_BINS
    counts, _, _ = axes.hist(latency, bins=bins, color=_LATENCY_COLOUR, alpha=0.8)
    if np.max(counts) > _LOG_COUNTS_FROM:
        # Log counts: the rare slow frames are the point, and a single one must still show.
        axes.set_yscale("log")
        _plain_log_labels(axes.yaxis, minor=False)
    if axes.get_xscale() == "log":
        _plain_log_labels(axes.xaxis)
    _quantile_lines(axes.axvline, p50, p99)
    _legend(axes)


def _line_style(frame_count: int) -> dict[str, Any]:
    if frame_count <= _MARKERS_UP_TO:
        return {"lw": 0.7, "marker": ".", "ms": 3}
    return {"lw": 0.5}


def _scale_y(axes: Axes, values: np.ndarray) -> None:
    """Log when outliers would flatten the typical values, else linear from 0.

    Either way the top of the panel is left free for the frame marks.
    """
    median = float(np.median(values))
    if median > 0 and float(values.min()) > 0 and float(values.max()) > _LOG_SPAN * median:
        axes.set_yscale("log")
        _plain_log_labels(axes.yaxis)
        low, high = axes.get_ylim()
        axes.set_ylim(low, high * (high / low) ** _MARK_BAND)
    else:
        high = axes.get_ylim()[1]
        if high > 0:
            axes.set_ylim(0.0, high + _MARK_BAND * high)


def _plain_log_labels(axis: Axis, minor: bool = True) -> None:
    """Label a log axis 0.01, 5, 20 rather than 10⁻², 5×10⁰, 2×10¹."""
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(FuncFormatter(_minor_log_label(axis)) if minor else NullFormatter())


def _minor_log_label(axis: Axis) -> Callable[[float, Any], str]:
    """Label some minor ticks of a log axis: 2, 3 and 5 per decade, fewer when crowded."""

    def label(value: float, _: Any) -> str:
        low, high = sorted(axis.get_view_interval())
        decades = math.log10(high / low) if low > 0 else math.inf
        shown = (2.0, 3.0, 5.0) if decades < 1.2 else (2.0, 5.0) if decades < 2.2 else ()
        mantissa = round(value / 10 ** math.floor(math.log10(value)), 6) if value > 0 else 0.0
        return f"{value:g}" if mantissa in shown else ""

    return label


def _quantile_lines(draw: Callable[..., Any], p50: Optional[float], p99: Optional[float]) -> None:
    if p50 is not None:
        draw(p50, color="black", lw=0.8, ls="--", label=f"p50 {p50:.1f} ms")
    if p99 is not None:
        draw(p99, color="black", lw=0.8, ls=":", label=f"p99 {p99:.1f} ms")


def _mark_frames(axes: Axes, time_s: np.ndarray, height: float, colour: str, what: str) -> None:
    """A tick near the top of the panel for each frame in ``time_s``, counted in the legend."""
    if not len(time_s):
        return
    axes.plot(
        time_s,
        np.full(len(time_s), height),
        ls="none",
        marker="|",
        ms=7,
        mew=1.2,
        color=colour,
        transform=blended_transform_factory(axes.transData, axes.transAxes),
        label=f"{what}: {len(time_s)} frame{'s' if len(time_s) != 1 else ''}",
    )


def _note_if_empty(axes: Axes, frames: SessionSeries, plotted: int, message: str) -> None:
    """Say why a panel has no data, and drop the y ticks that would mean nothing."""
    if not plotted:
        _note(axes, message if len(frames) else "no frames")
        axes.set_yticks([])


def _note(axes: Axes, message: str) -> None:
    axes.text(
        0.5,
        0.5,
        message,
        transform=axes.transAxes,
        ha="center",
        va="center",
        color="dimgray",
        fontsize=11,
    )


def _legend(axes: Axes) -> None:
    if axes.get_legend_handles_labels()[0]:
        # Above the panel, right of its title: never over the data.
        axes.legend(
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            ncols=4,
            fontsize=8,
            frameon=False,
            borderaxespad=0.2,
        )


def _quantile(known: Any, values: np.ndarray, percent: float) -> Optional[float]:
    """The summary's quantile when it has one, else computed from the frames."""
    if isinstance(known, (int, float)) and math.isfinite(known):
        return float(known)
    present = values[~np.isnan(values)]
    return float(np.percentile(present, percent)) if len(present) else None


def _number(value: Any, digits: int) -> str:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return "-"
