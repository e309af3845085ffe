"""Tracker leaderboard: detectors x scenes x link profiles, each cell a real session.

``.venv/bin/python bench/trackers.py``   (as root: the impaired links need network namespaces)
``.venv/bin/python bench/trackers.py --detectors centroid,kalman --scenes occlusion --links clean``

Rows are trackers: the Python client (``client/client.py``) with each of
its detectors (the default centroid one in its process, the Hough locator,
the Kalman predictor) and headless Chromium on ``/track``
(``lab/browser_tracker.py``). Columns are what the server scored in each
session's report: answered %, error p50/p95 at frame time and at arrival,
latency p50/p99, and the detector's own time per frame as the client
reports it; for ``occlusion`` also found-when-visible % and false positives
while hidden (docs/scenes.md).

The run is shaped to fit a 2-core machine in minutes: one server per
(link, scene), started with ``--duration SECONDS`` so every session streams
the same time, serves the trackers one after another; one Chromium per link
serves that link's pages. Links:

- **clean**: loopback, no namespace (so it runs anywhere);
- **loss**: 5 % of all packets dropped, both ways, signaling included;
- **cap**: server to client capped at 100 kbit/s (``tbf``), narrower than
  every scene's stream (classic, the leanest, needs more: bench/narrow_link.py
  skips frames from 150 kbit/s down).

The impaired links run in a ``NetworkLab`` (two namespaces and a veth pair).
Where the machine cannot make one, one line says so, the clean link runs
and the other cells are marked not run. Session *n* of a server uses seed +
*n*: each tracker meets its own ball path, the same one in every scene and
link. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    import common  # noqa: F401  # bench/common.py: puts the repository root on sys.path

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, NoReturn, Optional, Sequence

from bench.common import MISSING, number
from bench.latency import NEUTRAL_ENVIRONMENT, machine_description
from lab.browser_tracker import PageTracker
from lab.network_lab import LabError, NetworkLab
from lab.programs import Program, free_port, start_client, start_server
from server.core.scenes import SCENES

DEFAULT_SECONDS = 4.0
MIN_SECONDS = 1.0
LOSS_PERCENT = 5
CAP_KBIT = 100

#: Start-up (imports, detector spawn, ICE and DTLS across a lossy link) and
#: teardown around a session's streaming time.
OVERHEAD_TIMEOUT_S = 60.0
#: The server prints a session's summary once its answer grace is over.
SUMMARY_TIMEOUT_S = 30.0

#: The scene whose visibility figures the table shows (the only one that hides the ball).
OCCLUSION = "occlusion"


# --- what runs -----------------------------------------------------------------


@dataclass(frozen=True)
class Tracker:
    """A row: a detector of the Python client, or the browser's /track page."""

    name: str
    label: str
    client_flags: tuple[str, ...] = ()
    in_browser: bool = False


@dataclass(frozen=True)
class Link:
    name: str
    label: str
    #: For --help.
    what: str
    loss_percent: int = 0
    cap_kbit: Optional[int] = None

    @property
    def impaired(self) -> bool:
        return self.loss_percent > 0 or self.cap_kbit is not None


TRACKERS = (
    Tracker("centroid", "centroid", ("--detector", "process")),
    Tracker("hough", "Hough", ("--detector", "client.detection.hough:HoughCircleLocator")),
    Tracker(
        "kalman", "Kalman", ("--detector", "client.detection.kalman:ConstantVelocityPredictor")
    ),
    Tracker("browser", "browser /track", in_browser=True),
)
IN_BROWSER = frozenset(t.name for t in TRACKERS if t.in_browser)
LINKS = (
    Link("clean", "clean", "loopback"),
    Link(
        "loss",
        f"{LOSS_PERCENT} % loss",
        f"{LOSS_PERCENT} % of all packets dropped each way, in namespaces",
        loss_percent=LOSS_PERCENT,
    ),
    Link(
        "cap",
        f"{CAP_KBIT} kbit/s cap",
        f"server to client capped at {CAP_KBIT} kbit/s by tbf, in namespaces",
        cap_kbit=CAP_KBIT,
    ),
)


@dataclass(frozen=True)
class Plan:
    trackers: tuple[Tracker, ...]
    scenes: tuple[str, ...]
    links: tuple[Link, ...]
    seconds: float


# --- the command line ------------------------------------------------------------


class OneLineErrorParser(argparse.ArgumentParser):
    """A usage error is one line (no usage block) and exit status 2, as the programs promise."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def name_list(kind: str, known: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """An argparse ``type``: comma-separated names out of ``known`` (or ``all``), in ``known``'s order."""

    def parse(text: str) -> tuple[str, ...]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        if names == ["all"]:
            return tuple(known)
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            given = ", ".join(unknown) or repr(text)
            raise argparse.ArgumentTypeError(
                f"unknown {kind} {given}; choose from {', '.join(known)} (or all)"
            )
        return tuple(n for n in known if n in names)

    return parse


def seconds_value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < MIN_SECONDS:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_SECONDS:g} s, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    rows = [
        f"{t.name} ({' '.join(t.client_flags) or 'headless Chromium on /track'})" for t in TRACKERS
    ]
    links = [f"{link.name} ({link.what})" for link in LINKS]
    parser = OneLineErrorParser(
        prog="trackers.py",
        description=__doc__.split("\n\n")[0],
        epilog=f"detectors: {', '.join(rows)}. links: {', '.join(links)}.",
    )
    choices = (
        ("--detectors", "detector", [t.name for t in TRACKERS]),
        ("--scenes", "scene", list(SCENES)),
        ("--links", "link", [link.name for link in LINKS]),
    )
    for flag, kind, known in choices:
        parser.add_argument(
            flag,
            type=name_list(kind, known),
            default=tuple(known),
            help=f"comma-separated {kind}s out of {', '.join(known)} (default: all)",
        )
    parser.add_argument(
        "--seconds",
        type=seconds_value,
        default=DEFAULT_SECONDS,
        help=f"streaming per cell, the server's --duration (default: {DEFAULT_SECONDS:g})",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write every cell, with its session summary, here",
    )
    return parser


def plan_of(args: argparse.Namespace) -> Plan:
    return Plan(
        trackers=tuple(t for t in TRACKERS if t.name in args.detectors),
        scenes=tuple(args.scenes),
        links=tuple(link for link in LINKS if link.name in args.links),
        seconds=args.seconds,
    )


# --- one cell: what was measured and what it shows -------------------------------


@dataclass
class Cell:
    tracker: str
    scene: str
    link: str
    #: "ok" (a report), "failed" (none: ``reason`` says why) or "not run".
    status: str = "ok"
    reason: Optional[str] = None
    report: dict[str, Any] = field(default_factory=dict)
    #: The detector's mean time per frame, as the client reported it.
    detector_ms: Optional[float] = None
    client_exit: Optional[int] = None


@dataclass(frozen=True)
class Figures:
    #: The sample: frames the server sent in the session's --duration.
    frames_sent: Optional[int]
    answered_pct: Optional[float]
    error_p50_px: Optional[float]
    error_p95_px: Optional[float]
    arrival_p50_px: Optional[float]
    arrival_p95_px: Optional[float]
    latency_p50_ms: Optional[float]
    latency_p99_ms: Optional[float]
    detector_ms: Optional[float]
    #: Only for the occlusion scene, where they mean something.
    found_when_visible_pct: Optional[float] = None
    false_positives_when_hidden: Optional[int] = None


def figures(cell: Cell) -> Figures:
    """The cell's figures from its report (all None when it has none)."""
    report = cell.report
    error = report.get("error_px") or {}
    arrival = report.get("error_at_arrival_px") or {}
    latency = report.get("latency_ms") or {}
    ratio = report.get("answered_ratio")
    visibility = (report.get("visibility") or {}) if cell.scene == OCCLUSION else {}
    found = visibility.get("found_when_visible_ratio")
    return Figures(
        frames_sent=report.get("frames_sent"),
        answered_pct=None if ratio is None else 100.0 * ratio,
        error_p50_px=error.get("p50"),
        error_p95_px=error.get("p95"),
        arrival_p50_px=arrival.get("p50"),
        arrival_p95_px=arrival.get("p95"),
        latency_p50_ms=latency.get("p50"),
        latency_p99_ms=latency.get("p99"),
        detector_ms=cell.detector_ms,
        found_when_visible_pct=None if found is None else 100.0 * found,
        false_positives_when_hidden=visibility.get("false_positives_when_hidden"),
    )


def pixels(value: Optional[float]) -> str:
    """An error in px to the digits that matter: 0.006, 0.430, 2.50, 11.7, 203."""
    if value is None:
        return MISSING
    size = abs(value)
    return number(value, 3 if size < 1 else 2 if size < 10 else 1 if size < 100 else 0)


def pair(first: str, second: str) -> str:
    return f"{first} / {second}"


class Footnotes:
    """Numbered notes under a table, each text once, in order of first use."""

    MARKS = "¹²³⁴⁵⁶⁷⁸⁹"

    def __init__(self) -> None:
        self._texts: list[str] = []

    def mark(self, text: str) -> str:
        if text not in self._texts:
            self._texts.append(text)
        index = self._texts.index(text)
        return self.MARKS[index] if index < len(self.MARKS) else f"[{index + 1}]"

    def lines(self) -> list[str]:
        return [f"{self.mark(text)} {text}" for text in self._texts]


#: The browser's detector time: what it is, next to the Python rows' figure.
BROWSER_DETECTOR_NOTE = (
    "/track's own time in `findBall` per frame (`window.tracker.detectMsMean`, JavaScript "
    "in Chromium); like the Python rows, reading the frame's pixels is not included"
)

#: A session whose media never flowed: the server's --duration counts from the
#: offer and answer, so a handshake slowed by loss can take all of it.
NO_FRAMES_NOTE = "no frame was sent before the session's --duration ran out"

COLUMNS = (
    "link",
    "scene",
    "detector",
    "frames",
    "answered %",
    "error p50 / p95 px",
    "at arrival p50 / p95 px",
    "latency p50 / p99 ms",
    "detector ms/frame",
    "found when visible %",
    "false positives when hidden",
)


def table_row(cell: Cell, notes: Footnotes, labels: dict[str, str]) -> list[str]:
    head = [labels.get(cell.link, cell.link), cell.scene, labels.get(cell.tracker, cell.tracker)]
    if cell.status != "ok":
        mark = notes.mark(cell.reason or cell.status)
        return head + ["", f"{cell.status}{mark}"] + [""] * (len(COLUMNS) - 5)
    f = figures(cell)
    detector = number(f.detector_ms, 2)
    if cell.tracker in IN_BROWSER and f.detector_ms is not None:
        detector += notes.mark(BROWSER_DETECTOR_NOTE)
    answered = number(f.answered_pct, 1)
    if f.frames_sent == 0:
        answered += notes.mark(NO_FRAMES_NOTE)
    if cell.reason is not None:  # measured, but something went wrong on the tracker's side
        answered += notes.mark(cell.reason)
    occluded = cell.scene == OCCLUSION
    return head + [
        MISSING if f.frames_sent is None else str(f.frames_sent),
        answered,
        pair(pixels(f.error_p50_px), pixels(f.error_p95_px)),
        pair(pixels(f.arrival_p50_px), pixels(f.arrival_p95_px)),
        pair(number(f.latency_p50_ms, 1), number(f.latency_p99_ms, 1)),
        detector,
        number(f.found_when_visible_pct, 1) if occluded else "",
        (MISSING if f.false_positives_when_hidden is None else str(f.false_positives_when_hidden))
        if occluded
        else "",
    ]


def markdown(rows: Sequence[Sequence[str]], columns: Sequence[str]) -> str:
    lines = [list(columns), ["---"] * len(columns), *rows]
    return "\n".join("| " + " | ".join(row) + " |" for row in lines)


def labels_of() -> dict[str, str]:
    return {t.name: t.label for t in TRACKERS} | {link.name: link.label for link in LINKS}


def leaderboard_table(cells: Sequence[Cell]) -> str:
    """Every cell, one row each, with the footnotes its marks refer to."""
    notes = Footnotes()
    labels = labels_of()
    text = markdown([table_row(cell, notes, labels) for cell in cells], COLUMNS)
    return text + ("\n\n" + "\n".join(notes.lines()) if notes.lines() else "")


SUMMARY_COLUMNS = (
    "detector",
    "link",
    "cells",
    "answered % (mean)",
    "error p50 px (median)",
    "at arrival p50 px (median)",
    "latency p50 ms (median)",
    "detector ms/frame (median)",
)


def median(values: Sequence[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def mean(values: Sequence[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def summary_rows(cells: Sequence[Cell]) -> list[list[str]]:
    """Per tracker and link, over its scenes: the cells measured and their typical figures."""
    labels = labels_of()
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.tracker, cell.link), []).append(cell)
    rows = []
    for (tracker, link), group in groups.items():
        # A session that never got a frame measured nothing.
        measured = [f for f in map(figures, group) if f.frames_sent]
        rows.append(
            [
                labels.get(tracker, tracker),
                labels.get(link, link),
                f"{len(measured)} of {len(group)}",
                number(mean([f.answered_pct for f in measured]), 1),
                pixels(median([f.error_p50_px for f in measured])),
                pixels(median([f.arrival_p50_px for f in measured])),
                number(median([f.latency_p50_ms for f in measured]), 1),
                number(median([f.detector_ms for f in measured]), 2),
            ]
        )
    return rows


def summary_table(cells: Sequence[Cell]) -> str:
    return markdown(summary_rows(cells), SUMMARY_COLUMNS)


# --- running ---------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where the programs run and how the client finds the server."""

    server_prefix: tuple[str, ...]
    client_prefix: tuple[str, ...]
    listen_host: str
    connect_host: str


LOOPBACK = Placement((), (), "127.0.0.1", "127.0.0.1")


def lab_placement(lab: NetworkLab) -> Placement:
    return Placement(
        tuple(lab.exec_argv("server", [])),
        tuple(lab.exec_argv("client", [])),
        "0.0.0.0",
        lab.server_hostname,
    )


def impair(lab: NetworkLab, link: Link) -> None:
    """Only this link's impairments on the lab: loss both ways, the cap on the video's way."""
    lab.clear()
    if link.loss_percent:
        lab.set_loss(link.loss_percent)
    if link.cap_kbit is not None:
        lab.set_rate(link.cap_kbit / 1000.0, side="server")


def first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "no output"


def new_summary(server: Program, before: int) -> Optional[dict[str, Any]]:
    """The summary of the session after the first ``before``, or None at the deadline.

    The summary on the server's stdout is the report's JSON; reading it there
    rather than from ``--report-dir`` spares every session the CSVs and the
    plot, whose worker would draw during the next cell's session.
    """
    deadline = time.monotonic() + SUMMARY_TIMEOUT_S
    while True:
        try:
            documents = server.json_documents()
        except ValueError:  # a line caught half-written: read again
            documents = []
        if len(documents) > before:
            return documents[before]
        if time.monotonic() >= deadline or server.process.poll() is not None:
            return None
        time.sleep(0.1)


class LinkRun:
    """One link's cells: a server per scene, the trackers in turn, one Chromium for the link."""

    def __init__(self, link: Link, placement: Placement, plan: Plan) -> None:
        self.link = link
        self.placement = placement
        self.plan = plan
        self._browser: Optional[PageTracker] = None

    def cells(self) -> Iterator[Cell]:
        try:
            for scene in self.plan.scenes:
                yield from self._scene(scene)
        finally:
            if self._browser is not None:
                self._browser.close()

    def _scene(self, scene: str) -> Iterator[Cell]:
        port = free_port()
        http_port = free_port() if any(t.in_browser for t in self.plan.trackers) else 0
        try:
            server = start_server(
                port,
                "--scene", scene,
                "--duration", f"{self.plan.seconds:g}",
                prefix=self.placement.server_prefix,
                host=self.placement.listen_host,
                http_port=http_port,
                env=NEUTRAL_ENVIRONMENT,
            )  # fmt: skip
            if http_port:
                try:
                    server.wait_for_output("console on", timeout=30)
                except AssertionError:
                    server.close()
                    raise
        except AssertionError as exc:  # it never listened: every cell of the scene fails
            reason = f"the server did not start: {first_line(str(exc))}"
            for tracker in self.plan.trackers:
                yield Cell(tracker.name, scene, self.link.name, "failed", reason)
            return
        try:
            for tracker in self.plan.trackers:
                cell = Cell(tracker.name, scene, self.link.name)
                before = len(server.json_documents())
                try:
                    if tracker.in_browser:
                        self._browser_session(cell, http_port)
                    else:
                        self._client_session(cell, tracker, port)
                except (LabError, OSError, subprocess.SubprocessError, ValueError) as exc:
                    cell.reason = first_line(f"{type(exc).__name__}: {exc}")
                report = new_summary(server, before)
                if report is None:
                    cell.status = "failed"
                    cell.reason = cell.reason or "the server reported no session"
                else:
                    cell.report = report
                yield cell
        finally:
            server.close()

    def _client_session(self, cell: Cell, tracker: Tracker, port: int) -> None:
        # No client --duration: the server's BYE after its --duration ends it.
        client: Optional[Program] = None
        try:
            client = start_client(
                port,
                *tracker.client_flags,
                prefix=self.placement.client_prefix,
                host=self.placement.connect_host,
                env=NEUTRAL_ENVIRONMENT,
            )
            cell.client_exit = client.wait(timeout=self.plan.seconds + OVERHEAD_TIMEOUT_S)
            documents = client.json_documents()
            detector = documents[-1].get("detector", {}) if documents else {}
            cell.detector_ms = detector.get("mean_ms") if detector.get("detected") else None
            if cell.client_exit != 0:
                last = client.stderr.strip().splitlines()[-1:] or ["no output"]
                cell.reason = f"the client exited {cell.client_exit}: {last[0]}"
        finally:
            if client is not None:
                client.close()

    def _browser_session(self, cell: Cell, http_port: int) -> None:
        timeout = self.plan.seconds + OVERHEAD_TIMEOUT_S
        if self._browser is None or not self._browser.alive():
            if self._browser is not None:
                self._browser.close()
            self._browser = PageTracker(self.placement.client_prefix, page_timeout_s=timeout)
        url = f"http://{self.placement.connect_host}:{http_port}/track"
        try:
            # Chromium's start comes on top for the link's first page.
            result = self._browser.track(url, timeout + OVERHEAD_TIMEOUT_S)
        except (LabError, OSError):
            # Its late answer must not pass for the next page's: a new browser.
            self._browser.close()
            self._browser = None
            raise
        if "error" in result:
            cell.reason = f"the page: {result['error']}"
            return
        tracker = result.get("tracker") or {}
        cell.detector_ms = tracker.get("detectMsMean")
        if tracker.get("state") != "ended":
            cell.reason = f"the page {tracker.get('state')}: {tracker.get('message')}"


def not_run(plan: Plan, link: Link, why: str) -> list[Cell]:
    return [
        Cell(tracker.name, scene, link.name, "not run", why)
        for scene in plan.scenes
        for tracker in plan.trackers
    ]


def progress_line(cell: Cell, took_s: float) -> str:
    row = table_row(cell, Footnotes(), labels_of())
    detail = cell.reason if cell.status != "ok" else " | ".join(row[3:9])
    return f"{' / '.join(row[:3])} ({took_s:.0f} s): {detail}"


def run(plan: Plan, lab: Optional[NetworkLab], no_lab_reason: str) -> list[Cell]:
    """Every cell of the plan, link by link, scene by scene, tracker by tracker.

    Without ``lab`` the impaired links are not run, for ``no_lab_reason``.
    """
    cells: list[Cell] = []
    for link in plan.links:
        if not link.impaired:
            placement = LOOPBACK
        elif lab is None:
            cells += not_run(plan, link, f"no network namespaces here: {no_lab_reason}")
            continue
        else:
            impair(lab, link)
            placement = lab_placement(lab)
        started = time.monotonic()
        for cell in LinkRun(link, placement, plan).cells():
            cells.append(cell)
            print(progress_line(cell, time.monotonic() - started), file=sys.stderr, flush=True)
            started = time.monotonic()
    return cells


def open_lab(plan: Plan, stack: ExitStack) -> tuple[Optional[NetworkLab], str]:
    """The namespaces the impaired links need (closed with ``stack``), or why there are none."""
    if not any(link.impaired for link in plan.links):
        return None, "no impaired link chosen"
    available, why = NetworkLab.available()
    if not available:
        return None, why
    try:
        return stack.enter_context(NetworkLab()), ""
    except LabError as exc:  # root, and yet no namespace (a container without CAP_NET_ADMIN)
        return None, first_line(str(exc))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    plan = plan_of(args)
    command = shlex.join(sys.orig_argv if argv is None else ["bench/trackers.py", *argv])
    print(f"command: {command}", flush=True)
    print(f"machine: {machine_description()}", flush=True)
    load_before = os.getloadavg()[0]
    wall_started = time.monotonic()
    with ExitStack() as stack:
        lab, why = open_lab(plan, stack)
        if lab is None and any(link.impaired for link in plan.links):
            print(f"no network namespaces ({why}): the clean link only", flush=True)
        cells = run(plan, lab, why)
    wall_s = time.monotonic() - wall_started
    load_after = os.getloadavg()[0]
    print(
        f"{plan.seconds:g} s of 640x480@30 VP8 per cell; wall time {wall_s:.0f} s; "
        f"load average {load_before:.1f} at the start, {load_after:.1f} at the end",
        flush=True,
    )
    print()
    print(leaderboard_table(cells))
    print()
    print(summary_table(cells))
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "command": command,
                    "machine": machine_description(),
                    "seconds": plan.seconds,
                    "wall_s": wall_s,
                    "load_average": [load_before, load_after],
                    "cells": [asdict(c) | {"figures": asdict(figures(c))} for c in cells],
                },
                indent=2,
            )
            + "\n"
        )
    return 1 if any(c.status == "failed" for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
