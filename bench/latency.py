"""End-to-end latency benchmark: the real server and client, one run at a time.

``PYTHONPATH=. .venv/bin/python bench/latency.py --seconds 10``

For every configuration (resolution, frame rate, codec) the server and the
client run as real processes, first with the client's ``fast`` jitter buffer,
then with aiortc's ``stock`` one, and the script prints one markdown table:
the server's session report (frames, answered ratio, error, latency), the CPU
use of both sides and the client's detector time per frame. Then, for every
run, where the time went: both programs run with ``--trace-stages`` and the
two traces are joined by RTP timestamp into a per-stage table (each stage's
share of the end-to-end time, p50 and p99; see ``bench/stage_budget.py``).
``--no-trace-stages`` runs them without.

``--before REV`` adds, per configuration, a run of the programs of commit
``REV`` (fast jitter buffer, unpacked with ``git archive``, the work tree
untouched), so a change is measured against what came before in the same
run; its column "p50 / fast p50" is then before/after.

Runs never overlap: on a 2-core box two sessions at once would measure the
contention, not the product.

CPU % is CPU seconds / wall seconds x 100 over the streaming period only, so
the imports and detector spawn at start-up do not dilute or inflate it. Each
program is started in its own session (``start_new_session``), and every
process of that session counts: for the client that is the spawned detector
and multiprocessing's resource tracker too. ``/proc/<pid>/stat`` is sampled
every half second and the last value seen of each process is kept, because a
child exits (and its own counters vanish) before its parent does.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    import common  # noqa: F401  # bench/common.py: puts the repository root on sys.path

import argparse
import io
import json
import os
import platform
import shlex
import statistics
import subprocess
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any, Iterable, Optional, Sequence

from bench.common import number
from bench.stage_budget import StageBudget, budget_from_files
from bench.stage_budget import markdown as budget_markdown
from lab.process_stats import busy_ticks
from lab.programs import PYTHON, ROOT, Program, free_port, read_reports
from protocol.stage_trace import ClockMismatch, TraceFormatError

JITTER_BUFFERS = ("fast", "stock")

#: How often /proc is sampled; a process that dies between two samples loses
#: at most this much of its CPU time from the count.
SAMPLE_INTERVAL_S = 0.5

#: Start-up (imports, detector spawn, ICE/DTLS) must fit in this.
STARTUP_TIMEOUT_S = 60.0

#: After the streaming period: the server's answer grace, bye, and teardown.
SHUTDOWN_TIMEOUT_S = 30.0

#: Flag variables the programs would otherwise inherit from this shell (every
#: long flag reads one, e.g. BALLTRACKER_DISPLAY for --display); empty means false /
#: no STUN, so a developer's environment cannot change what is measured.
NEUTRAL_ENVIRONMENT = {
    "BALLTRACKER_DISPLAY": "",
    "BALLTRACKER_VERBOSE": "",
    "BALLTRACKER_RECONNECT": "",
    "BALLTRACKER_STUN": "",
}


@dataclass(frozen=True)
class Configuration:
    name: str
    width: int
    height: int
    fps: int
    codec: str

    def label(self) -> str:
        return f"{self.width}x{self.height}@{self.fps} {self.codec.upper()}"

    def server_flags(self) -> list[str]:
        return [
            "--width",
            str(self.width),
            "--height",
            str(self.height),
            "--fps",
            str(self.fps),
            "--codec",
            self.codec,
        ]


CONFIGURATIONS = (
    Configuration("vga30-vp8", 640, 480, 30, "vp8"),
    Configuration("vga30-h264", 640, 480, 30, "h264"),
    Configuration("vga60-vp8", 640, 480, 60, "vp8"),
    Configuration("hd720-vp8", 1280, 720, 30, "vp8"),
    Configuration("hd1080-vp8", 1920, 1080, 30, "vp8"),
)


# --- CPU accounting -------------------------------------------------------


@dataclass(frozen=True)
class ProcessSample:
    session: int
    #: (pid, start time): a recycled pid is a different process.
    key: tuple[int, int]
    cpu_ticks: int  # utime + stime of the whole thread group


def scan_processes() -> list[ProcessSample]:
    """utime+stime of every process, with its session id (``/proc/*/stat``)."""
    samples = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # comm (field 2) may contain spaces and parentheses; fields after the
        # last ')' are plain. fields[0] is field 3 (state).
        fields = text[text.rindex(")") + 2 :].split()
        samples.append(
            ProcessSample(
                session=int(fields[3]),
                key=(int(entry.name), int(fields[19])),
                cpu_ticks=int(fields[11]) + int(fields[12]),
            )
        )
    return samples


class SessionCpu:
    """CPU ticks used by every process of one session, dead ones included.

    Keeps the last value seen per process rather than summing live processes
    now: a process that has exited still counts with what it used up to its
    last sample. (Its parent's cutime would hold it only once reaped, and the
    detector's parent is alive until the very end.)
    """

    def __init__(self, session_id: int) -> None:
        self._session_id = session_id
        self._last_seen: dict[tuple[int, int], int] = {}

    def update(self, samples: Iterable[ProcessSample]) -> None:
        for sample in samples:
            if sample.session == self._session_id:
                self._last_seen[sample.key] = sample.cpu_ticks

    def ticks(self) -> int:
        return sum(self._last_seen.values())

    def processes(self) -> int:
        return len(self._last_seen)


class CpuWindow:
    """CPU % of a few process sessions between ``start()`` and ``stop()``.

    Also ``percent["other"]``: everything else the machine ran meanwhile, so a
    run disturbed by some other job (tests, a build) shows up as such.
    """

    def __init__(self, sessions: dict[str, int]) -> None:
        self._trackers = {name: SessionCpu(sid) for name, sid in sessions.items()}
        self._begin: dict[str, int] = {}
        self._begin_busy = 0
        self._begin_wall = 0.0
        self.percent: dict[str, float] = {}
        self.processes: dict[str, int] = {}
        self.wall_s = 0.0

    def sample(self) -> None:
        samples = scan_processes()
        for tracker in self._trackers.values():
            tracker.update(samples)

    def start(self) -> None:
        self.sample()
        self._begin_busy = busy_ticks()
        self._begin_wall = time.monotonic()
        self._begin = {name: t.ticks() for name, t in self._trackers.items()}

    def stop(self) -> None:
        self.sample()
        busy = busy_ticks() - self._begin_busy
        self.wall_s = time.monotonic() - self._begin_wall
        ticks_per_core_s = os.sysconf("SC_CLK_TCK") * self.wall_s
        ours = 0
        for name, tracker in self._trackers.items():
            used = tracker.ticks() - self._begin[name]
            ours += used
            self.percent[name] = 100.0 * used / ticks_per_core_s
            self.processes[name] = tracker.processes()
        self.percent["other"] = max(100.0 * (busy - ours) / ticks_per_core_s, 0.0)


def background_load_pct(interval_s: float = 1.0) -> float:
    """Machine CPU use over ``interval_s``, in % of one core."""
    before, start = busy_ticks(), time.monotonic()
    time.sleep(interval_s)
    busy, wall = busy_ticks() - before, time.monotonic() - start
    return 100.0 * busy / (os.sysconf("SC_CLK_TCK") * wall)


def wait_until_quiet(threshold_pct: float, patience_s: float) -> float:
    """Wait (at most ``patience_s``) for other jobs on a shared box to calm
    down, so they disturb the run less; returns the last load seen."""
    deadline = time.monotonic() + patience_s
    load = background_load_pct()
    while load > threshold_pct and time.monotonic() < deadline:
        print(f"  machine busy ({load:.0f}% of a core), waiting ...", file=sys.stderr, flush=True)
        load = background_load_pct()
    return load


# --- One run --------------------------------------------------------------


@dataclass
class RunResult:
    configuration: str
    label: str
    jitter_buffer: str
    seconds: float
    error: Optional[str] = None
    server_report: dict[str, Any] = field(default_factory=dict)
    client_summary: dict[str, Any] = field(default_factory=dict)
    server_cpu_pct: Optional[float] = None
    client_cpu_pct: Optional[float] = None
    other_cpu_pct: Optional[float] = None
    client_processes: Optional[int] = None
    cpu_wall_s: Optional[float] = None
    server_exit: Optional[int] = None
    client_exit: Optional[int] = None
    server_log: list[str] = field(default_factory=list)
    client_log: list[str] = field(default_factory=list)
    #: Whose programs ran: "" for this tree, else the commit given to --before.
    programs: str = ""
    #: Per-stage budget from both sides' --trace-stages (None: not traced).
    stages: Optional[StageBudget] = None
    stages_error: Optional[str] = None


class RunFailed(Exception):
    pass


def _name(program: Program) -> str:
    return Path(program.argv[1]).stem


def _last_line(program: Program) -> str:
    lines = program.stderr.strip().splitlines()
    return lines[-1] if lines else "(no output)"


def _wait_for(program: Program, text: str, deadline: float, *others: Program) -> None:
    """Poll until ``text`` appears in ``program``'s log; fail early if any of
    them exits, since then it never will."""
    while text not in program.stderr:
        for each in (program, *others):
            if each.process.poll() is not None:
                raise RunFailed(
                    f"{_name(each)} exited ({each.process.returncode}) before "
                    f"{text!r}: {_last_line(each)}"
                )
        if time.monotonic() > deadline:
            raise RunFailed(
                f"{text!r} not seen within {STARTUP_TIMEOUT_S:g} s: {_last_line(program)}"
            )
        time.sleep(0.05)


def _measure(window: CpuWindow, seconds: float) -> None:
    """Sample CPU until ``seconds`` of streaming have passed."""
    window.start()
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(SAMPLE_INTERVAL_S, left))
        window.sample()
    window.stop()


def _wait_exit(program: Program, deadline: float) -> int:
    try:
        return program.wait(max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired as exc:
        raise RunFailed(f"{_name(program)} still running after the session") from exc


def _log_lines(program: Optional[Program], limit: int = 40) -> list[str]:
    return program.stderr.splitlines()[-limit:] if program is not None else []


def run_once(
    configuration: Configuration,
    jitter: str,
    seconds: float,
    trace_stages: bool = True,
    server_prefix: Sequence[str] = (),
    client_prefix: Sequence[str] = (),
    env: Optional[dict[str, str]] = None,
    root: Optional[Path] = None,
    server_flags: Sequence[str] = (),
    client_flags: Sequence[str] = (),
) -> RunResult:
    """One server + client run; always leaves no process behind.

    ``*_prefix`` go before each program's command line (e.g. ``taskset``);
    ``env`` adds to the neutral environment; ``root`` runs the programs of
    another checkout (each puts its own root first on ``sys.path``);
    ``*_flags`` are added to each program's flags.
    """
    programs = root if root is not None else Path(".")
    result = RunResult(configuration.name, configuration.label(), jitter, seconds)
    server: Optional[Program] = None
    client: Optional[Program] = None
    environment = {**NEUTRAL_ENVIRONMENT, **(env or {})}
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as report_dir:
        server_trace = Path(report_dir, "server-stages.jsonl")
        client_trace = Path(report_dir, "client-stages.jsonl")
        try:
            port = free_port()
            # Not lab.programs.start_server: it waits before returning the
            # Program, so a server that never listens would escape cleanup.
            server = Program(
                [
                    PYTHON,
                    str(programs / "server/server.py"),
                    "--signaling-host",
                    "127.0.0.1",
                    "--signaling-port",
                    str(port),
                    "--http-port",
                    "0",
                    *configuration.server_flags(),
                    "--once",
                    "--duration",
                    f"{seconds:g}",
                    "--report-dir",
                    report_dir,
                    *(["--trace-stages", str(server_trace)] if trace_stages else []),
                    *server_flags,
                ],
                prefix=server_prefix,
                env=environment,
            )
            _wait_for(server, "signaling on", time.monotonic() + STARTUP_TIMEOUT_S)
            # --duration only as a backstop: the server's bye ends the client.
            client = Program(
                [
                    PYTHON,
                    str(programs / "client/client.py"),
                    "--signaling-host",
                    "127.0.0.1",
                    "--signaling-port",
                    str(port),
                    "--jitter-buffer",
                    jitter,
                    "--duration",
                    f"{seconds + STARTUP_TIMEOUT_S:g}",
                    *(["--trace-stages", str(client_trace)] if trace_stages else []),
                    *client_flags,
                ],
                prefix=client_prefix,
                env=environment,
            )
            window = CpuWindow({"server": server.pid, "client": client.pid})
            _wait_for(server, "streaming to", time.monotonic() + STARTUP_TIMEOUT_S, client)
            _measure(window, seconds)
            deadline = time.monotonic() + SHUTDOWN_TIMEOUT_S
            result.server_exit = _wait_exit(server, deadline)
            result.client_exit = _wait_exit(client, deadline)
            result.server_cpu_pct = window.percent["server"]
            result.client_cpu_pct = window.percent["client"]
            result.other_cpu_pct = window.percent["other"]
            result.client_processes = window.processes["client"]
            result.cpu_wall_s = window.wall_s
            reports = read_reports(Path(report_dir))
            if not reports:
                raise RunFailed("the server wrote no session report")
            result.server_report = reports[-1]
            documents = client.json_documents()
            if not documents:
                raise RunFailed("the client printed no summary")
            result.client_summary = documents[-1]
            if trace_stages:
                try:
                    result.stages = budget_from_files(server_trace, client_trace)
                except (ClockMismatch, TraceFormatError, OSError) as exc:
                    result.stages_error = str(exc)
        except (RunFailed, OSError, ValueError) as exc:  # ValueError: bad report JSON
            result.error = str(exc).splitlines()[0]
        finally:
            result.server_log = _log_lines(server)
            result.client_log = _log_lines(client)
            for program in (client, server):
                if program is not None:
                    program.close()
    return result


# --- Report ---------------------------------------------------------------

COLUMNS = (
    "configuration",
    "jitter buffer",
    "frames",
    "answered %",
    "error mean px",
    "error max px",
    "latency p50 ms",
    "latency p95 ms",
    "latency p99 ms",
    "server CPU %",
    "client CPU % (tree)",
    "detector ms/frame",
    "p50 / fast p50",
)


def _p50(result: RunResult) -> Optional[float]:
    p50 = result.server_report.get("latency_ms", {}).get("p50")
    return None if p50 is None else float(p50)


def p50_ratio(
    results: Sequence[RunResult], configuration: str, variant: str = "stock"
) -> Optional[float]:
    """``variant``'s p50 over this tree's fast p50 ("stock", or "before" for --before)."""

    def key(r: RunResult) -> str:
        return "before" if r.programs else r.jitter_buffer

    p50 = {key(r): _p50(r) for r in results if r.configuration == configuration}
    fast, other = p50.get("fast"), p50.get(variant)
    return other / fast if fast and other is not None else None


def variant_label(result: RunResult) -> str:
    return (
        f"{result.jitter_buffer} @ {result.programs}" if result.programs else result.jitter_buffer
    )


def table_row(result: RunResult, results: Sequence[RunResult]) -> list[str]:
    if result.error is not None:
        return [result.label, variant_label(result), f"FAILED: {result.error}"] + [""] * (
            len(COLUMNS) - 3
        )
    report, detector = result.server_report, result.client_summary.get("detector", {})
    error, latency = report["error_px"], report["latency_ms"]
    if result.programs:
        ratio = p50_ratio(results, result.configuration, "before")
    elif result.jitter_buffer == "stock":
        ratio = p50_ratio(results, result.configuration)
    else:
        ratio = None
    return [
        result.label,
        variant_label(result),
        str(report["frames_sent"]),
        number(100.0 * report["answered_ratio"], 1),
        number(error["mean"], 3),
        number(error["max"], 3),
        number(latency["p50"], 1),
        number(latency["p95"], 1),
        number(latency["p99"], 1),
        number(result.server_cpu_pct, 0),
        number(result.client_cpu_pct, 0),
        number(detector.get("mean_ms"), 2),
        "" if ratio is None else f"{ratio:.2f}×",
    ]


def markdown_table(results: Sequence[RunResult]) -> str:
    rows = [list(COLUMNS), ["---"] * len(COLUMNS)]
    rows += [table_row(r, results) for r in results]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


#: Background CPU (% of one core) above which a run is flagged as disturbed.
OTHER_CPU_WARNING_PCT = 15.0


def run_notes(r: RunResult) -> list[str]:
    """What a reader of one table row should not miss."""
    if r.error is not None:
        return [r.error]
    found = []
    if r.other_cpu_pct is not None and r.other_cpu_pct > OTHER_CPU_WARNING_PCT:
        found.append(f"other processes used {r.other_cpu_pct:.0f}% of a core meanwhile")
    skipped = r.server_report.get("frames_skipped", 0)
    if skipped:
        found.append(f"server skipped {skipped} frames (frame production behind schedule)")
    dropped = r.client_summary.get("detector", {}).get("dropped", 0)
    if dropped:
        found.append(f"detector dropped {dropped} frames")
    if r.server_report.get("answered_ratio", 1.0) < 0.95:
        found.append(f"only {100 * r.server_report['answered_ratio']:.1f}% answered")
    if r.server_exit or r.client_exit:
        found.append(f"exit status server {r.server_exit}, client {r.client_exit}")
    return found


def stage_tables(results: Sequence[RunResult]) -> str:
    """One per-stage table per run that has one."""
    parts = []
    for r in results:
        if r.stages is not None:
            parts.append(
                f"\n{r.label} {variant_label(r)}, per stage:\n\n{budget_markdown(r.stages)}"
            )
        elif r.stages_error is not None:
            parts.append(f"\n{r.label} {variant_label(r)}: no per-stage table: {r.stages_error}")
    return "\n".join(parts)


def notes(results: Sequence[RunResult]) -> list[str]:
    return [
        f"- {r.label} {variant_label(r)}: " + "; ".join(found)
        for r in results
        if (found := run_notes(r))
    ]


def machine_description() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "?"

    return (
        f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {model}; "
        f"Python {platform.python_version()}, aiortc {version('aiortc')}, av {version('av')}"
    )


# --- Command line ---------------------------------------------------------


def unpack(revision: str, into: Path) -> None:
    """The tree of commit ``revision`` in ``into`` (the work tree is not touched)."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", revision], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def select(only: Optional[Sequence[str]]) -> list[Configuration]:
    if not only:
        return list(CONFIGURATIONS)
    names = [n for item in only for n in item.split(",") if n]
    known = {c.name: c for c in CONFIGURATIONS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(
            f"unknown configuration(s) {', '.join(unknown)}; choose from {', '.join(known)}"
        )
    return [known[n] for n in names]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark end-to-end latency of server + client, fast vs stock jitter buffer.",
    )
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="streaming seconds per run (default: 20)"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only these configurations (repeat or comma-separate): "
        + ", ".join(c.name for c in CONFIGURATIONS),
    )
    parser.add_argument(
        "--jitter-buffer",
        action="append",
        choices=JITTER_BUFFERS,
        help="only this jitter buffer (default: both)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write raw results here")
    parser.add_argument(
        "--before",
        metavar="REV",
        help="also run the programs of commit REV (fast jitter buffer) per configuration",
    )
    parser.add_argument(
        "--no-trace-stages",
        dest="trace_stages",
        action="store_false",
        help="run the programs without --trace-stages (no per-stage tables)",
    )
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=30.0,
        metavar="PCT",
        help="before each run, wait until other processes use less than this "
        "%% of a core (default: 30; 0 turns waiting off)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        metavar="S",
        help="wait at most this long for that, then run anyway (default: 60)",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.seconds <= 0:
        raise SystemExit("--seconds must be positive")
    configurations = select(args.only)
    jitters = args.jitter_buffer or list(JITTER_BUFFERS)
    # orig_argv: the interpreter as invoked too, so the line can be re-run as is.
    command = shlex.join(sys.orig_argv if argv is None else ["bench/latency.py", *argv])
    print(f"command: {command}", flush=True)
    print(f"machine: {machine_description()}", flush=True)
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-before-") as scratch:
        before = Path(scratch, "tree")
        if args.before:
            unpack(args.before, before)
        # Only a tree with stage tracing takes --trace-stages.
        trace_before = args.trace_stages and (before / "protocol/stage_trace.py").exists()
        for configuration in configurations:
            runs = [(jitter, None) for jitter in jitters]
            runs += [("fast", args.before)] if args.before else []
            for jitter, revision in runs:
                name = f"{jitter} @ {revision}" if revision else jitter
                # Progress on stderr so stdout stays a clean, pasteable report.
                print(f"running {configuration.label()} {name} ...", file=sys.stderr, flush=True)
                if args.quiet_below > 0:
                    wait_until_quiet(args.quiet_below, args.quiet_wait)
                if revision is None:
                    result = run_once(configuration, jitter, args.seconds, args.trace_stages)
                else:
                    result = run_once(
                        configuration, jitter, args.seconds, trace_before, root=before
                    )
                    result.programs = revision
                results.append(result)
    print()
    print(markdown_table(results))
    if args.trace_stages:
        print(stage_tables(results))
    for variant, what in (("stock", "stock/fast"), ("before", f"{args.before}/this tree")):
        ratios = [p50_ratio(results, c.name, variant) for c in configurations]
        valid = [r for r in ratios if r is not None]
        if valid:
            print(
                f"\n{what} p50 latency ratio: median {statistics.median(valid):.2f}× "
                f"over {len(valid)} configuration(s)"
            )
    lines = notes(results)
    if lines:
        print("\nnotes:\n" + "\n".join(lines))
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "command": command,
                    "machine": machine_description(),
                    "results": [asdict(r) for r in results],
                },
                indent=2,
            )
            + "\n"
        )
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
