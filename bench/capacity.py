"""Capacity benchmark: how many concurrent sessions one server core carries.

``.venv/bin/python bench/capacity.py``                       (N = 1, 2, 4, ..., 24; the load client)
``.venv/bin/python bench/capacity.py --sessions 1,2,4 --seconds 8``   (a short trial)
``.venv/bin/python bench/capacity.py --before HEAD~3``       (this tree's server against that one's)
``.venv/bin/python bench/capacity.py --clients real``        (N = 1, 2, 4, ..., 12; real clients)

For each N, one server process is pinned to one core (``--server-cpu``,
default CPU 0) and its clients to the other cores (``--client-cpus``,
default CPU 1). All N sessions stream 640x480@30 VP8 at the same time for
``--seconds``; the server's per-session reports (``--report-dir``) give
answered %, error and latency. The table shows, per N, the worst session
and the CPU use of both sides, so a run whose *clients* ran out of CPU is
told apart from one whose server did.

The clients (``--clients``):

- ``load`` (the default): one ``lab/load_client.py`` process opens all N
  sessions. It receives every frame through the real client's receiver
  hooks and answers each by its RTP timestamp and pts, with the frame's true
  centre, but decodes and detects nothing, so it needs a fraction of a core
  for 24 sessions, and the server does exactly the work it does for real
  clients. Its error is about 0; a large one means frames were misnamed.
- ``real``: N ``client/client.py``, each with its detector process; on one
  core they run out of CPU at about 12 sessions, before the server does.

Sessions per server core, the headline, is the largest N at which every
session had >= 99 % of its frames answered and a latency p99 <= 20 ms,
and sent >= 99 % of the frames due at 30 fps (a server short of CPU thins
its frame rate, and would pass with half the frames otherwise), and
so did every smaller N measured (a noisy pass above a failure does not
count). Once ``--stop-after`` levels in a row have failed, larger N cannot
change it and are not run.

``--before REV`` also measures the server of commit ``REV`` (its tree
unpacked with ``git archive`` into a temporary directory, run with the same
venv and the same clients), level by level, interleaved with this tree's
(which of the two goes first alternates), and prints both tables and both
headlines: a server change is measured against what came before, on the
same machine, in the same minutes.

Starting N real clients on one core takes seconds each (imports, the
detector process), so a server started first would see its sessions begin
one by one and overlap only partly. So the clients start first, against a
port nobody listens on yet; they retry (``--connect-timeout``) and, once
every one of them is ready and retrying, the server starts: all sessions
then begin within the clients' retry interval (at most 2 s; the table shows
the spread). The load client does the same, and then opens its sessions one
after the other, each once the previous one's offer is in (how it knows
which scene each session shows; see ``lab/load_client.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    import common  # noqa: F401  # bench/common.py: puts the repository root on sys.path

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Optional, Sequence

from bench.common import number
from bench.latency import (
    NEUTRAL_ENVIRONMENT,
    SAMPLE_INTERVAL_S,
    CpuWindow,
    machine_description,
    scan_processes,
    unpack,
    wait_until_quiet,
)
from lab.process_stats import busy_ticks
from lab.programs import PYTHON, ROOT, Program, free_port, read_reports, start_client

#: The session counts measured by default, per kind of client: N real clients
#: run out of their core at about 12, the load client goes well past 18.
DEFAULT_SESSIONS = {
    "real": (1, 2, 4, 6, 8, 10, 12),
    "load": (1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24),
}
CLIENT_KINDS = tuple(DEFAULT_SESSIONS)
LOAD_CLIENT = "lab/load_client.py"

#: Levels in a row that may fail before the larger N are skipped: the
#: headline stops at the first failure, and a second one says it was no fluke.
DEFAULT_STOP_AFTER = 2

#: The quality a session must keep for its N to count (the issue's definition).
MIN_ANSWERED_RATIO = 0.99
MAX_P99_MS = 20.0
#: Frames actually sent, of those due at the nominal rate. A server short of
#: CPU queues its frames; its link adaptation reads that queueing as a
#: narrow link and thins the frame rate, which lightens its load while every
#: frame it still sends is answered: a pass bought with half the frames.
MIN_SENT_RATIO = 0.99

#: A side using this much of the cores it is pinned to is saturated: its
#: share of the latency grows with N whatever the other side does.
SATURATED_PCT = 90.0

#: Every client must have imported, spawned its detector and begun retrying
#: within this; 12 clients starting on one core take about half a minute.
CLIENT_READY_TIMEOUT_S = 180.0

#: From the server's start until all N sessions stream.
SESSIONS_START_TIMEOUT_S = 60.0

#: After streaming: the answer grace, reports written, clients gone.
SHUTDOWN_TIMEOUT_S = 45.0

#: The client logs this (at -v) when its first connection attempt fails,
#: i.e. once its detector is ready and it is waiting for the server.
CLIENT_WAITING = "not reachable"
SERVER_LISTENING = "signaling on"
SESSION_STREAMING = ": streaming to "

#: CPU that other jobs used on the server's core (% of it) above which a row
#: is marked as disturbed: a figure measured so is the machine's, not the
#: server's.
OTHERS_ON_CORE_WARNING_PCT = 10.0


class LevelFailed(Exception):
    pass


@dataclass(frozen=True)
class ServerTree:
    """Whose ``server/server.py`` runs: this tree's, or that of a commit (``--before``)."""

    root: Path
    #: "" for this tree, else the revision as given.
    revision: str = ""

    @property
    def script(self) -> str:
        return str(self.root / "server" / "server.py")

    def admission_flags(self, sessions: int) -> list[str]:
        """Room for all N: every session comes from 127.0.0.1, and since issue 19 a
        server admits only ``--max-sessions-per-peer`` (4) from one address."""
        flags = ["--max-sessions", str(sessions)]
        if "--max-sessions-per-peer" in Path(self.script).read_text():
            flags += ["--max-sessions-per-peer", str(sessions)]
        return flags


@dataclass
class LevelResult:
    sessions: int
    seconds: float
    #: "real" or "load" (see the module's docstring).
    clients: str = "real"
    #: Whose server: "" for this tree, else the commit given to --before.
    revision: str = ""
    error: Optional[str] = None
    reports: list[dict[str, Any]] = field(default_factory=list)
    #: Seconds between the first and the last session starting to stream.
    start_spread_s: Optional[float] = None
    server_cpu_pct: Optional[float] = None  # of the server's core(s)
    #: Runnable but waiting for the core, summed over the server's threads, in
    #: % of wall time: its threads queueing behind each other (every session
    #: renders and encodes a frame per 33 ms) and behind other jobs.
    server_wait_pct: Optional[float] = None
    #: What other processes used on the server's and on the clients' cores.
    others_on_server_core_pct: Optional[float] = None
    others_on_client_cores_pct: Optional[float] = None
    client_cpu_pct: Optional[float] = None  # of the clients' core(s), all clients together
    server_rss_mb: Optional[float] = None
    client_exits: list[Optional[int]] = field(default_factory=list)
    detector_dropped: int = 0
    #: The load client's summary (``lab/load_client.py``); None with real clients.
    load_client: Optional[dict[str, Any]] = None
    server_log: list[str] = field(default_factory=list)

    # -- derived figures ---------------------------------------------------------

    def worst(self) -> Optional[dict[str, Any]]:
        """The session with the highest latency p99 (ties: the fewest answered)."""
        if not self.reports:
            return None
        return max(
            self.reports,
            key=lambda r: (_p99(r), -r["answered_ratio"]),
        )

    def min_answered(self) -> Optional[float]:
        return min((r["answered_ratio"] for r in self.reports), default=None)

    def min_sent(self) -> Optional[float]:
        return min((sent_ratio(r) for r in self.reports), default=None)

    def passed(self) -> bool:
        return (
            self.error is None
            and len(self.reports) == self.sessions
            and all(
                r["answered_ratio"] >= MIN_ANSWERED_RATIO
                and _p99(r) <= MAX_P99_MS
                and sent_ratio(r) >= MIN_SENT_RATIO
                for r in self.reports
            )
        )

    def limit(self, server_cpus: int, client_cpus: int) -> str:
        """Which side ran out of CPU, if any."""
        sides = []
        if self.server_cpu_pct is not None and self.server_cpu_pct >= SATURATED_PCT * server_cpus:
            sides.append("server")
        if self.client_cpu_pct is not None and self.client_cpu_pct >= SATURATED_PCT * client_cpus:
            sides.append("clients")
        return " + ".join(sides) or "—"


def sent_ratio(report: dict[str, Any]) -> float:
    """Frames sent / frames due: skipped behind schedule or thinned for rate count against."""
    sent = report["frames_sent"]
    due = sent + report.get("frames_skipped", 0) + report.get("frames_skipped_for_rate", 0)
    return sent / due if due else 0.0


def _p99(report: dict[str, Any]) -> float:
    p99 = report["latency_ms"].get("p99")
    return float("inf") if p99 is None else float(p99)


# --- processes ---------------------------------------------------------------


@contextlib.contextmanager
def affinity(cpus: set[int]) -> Iterator[None]:
    """Run this (one-threaded) process on ``cpus`` meanwhile: a child started
    inside inherits the mask at fork, with all its later threads and children
    (aiortc's encoder threads, the client's detector), so no thread of it
    ever runs elsewhere, not even during its first milliseconds."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def session_rss_mb(session_id: int) -> float:
    """Resident memory of every process in one process session, in MB."""
    total_kb = 0
    pids = {s.key[0] for s in scan_processes() if s.session == session_id}
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:  # exited meanwhile
            pass
    return total_kb / 1024


class RunQueueWait:
    """How long the threads of one process session waited for a CPU while
    runnable (``/proc/<pid>/task/<tid>/schedstat``, field 2), between
    ``start()`` and ``stop()``, in % of the wall time.

    CPU % alone cannot tell a server that needed little from one that was
    kept off its core by other jobs on a shared machine; this can. Threads
    are summed, so several runnable threads can exceed 100 %.
    """

    def __init__(self, session_id: int) -> None:
        self._session_id = session_id
        self._last_seen: dict[tuple[int, int], int] = {}  # (pid, tid) -> ns waited
        self._begin = 0
        self._begin_wall = 0.0
        self.percent: Optional[float] = None

    def sample(self) -> None:
        pids = {s.key[0] for s in scan_processes() if s.session == self._session_id}
        for pid in pids:
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:  # exited meanwhile
                continue
            for tid in tids:
                try:
                    waited = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                self._last_seen[(pid, int(tid))] = waited

    def start(self) -> None:
        self.sample()
        self._begin = sum(self._last_seen.values())
        self._begin_wall = time.monotonic()

    def stop(self) -> None:
        self.sample()
        wall_ns = (time.monotonic() - self._begin_wall) * 1e9
        self.percent = 100.0 * (sum(self._last_seen.values()) - self._begin) / wall_ns


class CoreLoad:
    """% busy of a set of cores between ``start()`` and ``stop()``."""

    def __init__(self, cpus: set[int]) -> None:
        self._cpus = cpus
        self._begin = 0
        self._begin_wall = 0.0
        self.percent = 0.0

    def start(self) -> None:
        self._begin, self._begin_wall = busy_ticks(self._cpus), time.monotonic()

    def stop(self) -> None:
        ticks = busy_ticks(self._cpus) - self._begin
        capacity = os.sysconf("SC_CLK_TCK") * (time.monotonic() - self._begin_wall)
        self.percent = 100.0 * ticks / (capacity * len(self._cpus))


def _wait_count(program: Program, text: str, count: int, deadline: float) -> None:
    while program.stderr.count(text) < count:
        if program.process.poll() is not None:
            raise LevelFailed(f"{Path(program.argv[1]).stem} exited: {_tail(program)}")
        if time.monotonic() > deadline:
            raise LevelFailed(
                f"{text.strip()!r} seen {program.stderr.count(text)}/{count} times in time"
            )
        time.sleep(0.05)


def _tail(program: Program) -> str:
    lines = program.stderr.strip().splitlines()
    return lines[-1] if lines else "(no output)"


def _wait_clients_ready(clients: Sequence[Program], deadline: float) -> None:
    for client in clients:
        _wait_count(client, CLIENT_WAITING, 1, deadline)


def _wait_sessions_streaming(server: Program, count: int, deadline: float) -> float:
    """Wait until ``count`` sessions stream; the seconds from the first to the last."""
    first: Optional[float] = None
    seen = 0
    while seen < count:
        if server.process.poll() is not None:
            raise LevelFailed(f"server exited: {_tail(server)}")
        if time.monotonic() > deadline:
            raise LevelFailed(f"only {seen} of {count} sessions started streaming")
        now_seen = server.stderr.count(SESSION_STREAMING)
        if now_seen and first is None:
            first = time.monotonic()
        seen = now_seen
        time.sleep(0.05)
    assert first is not None
    return time.monotonic() - first


def _wait_reports(directory: Path, count: int, deadline: float) -> list[dict[str, Any]]:
    reports = read_reports(directory)
    while len(reports) < count and time.monotonic() < deadline:
        time.sleep(0.2)
        reports = read_reports(directory)
    return reports


def start_clients(kind: str, port: int, sessions: int, seconds: float) -> list[Program]:
    """N real clients, or one load client with N sessions; all logging CLIENT_WAITING."""
    flags = [
        "-v",  # for CLIENT_WAITING
        "--connect-timeout",
        f"{CLIENT_READY_TIMEOUT_S + SESSIONS_START_TIMEOUT_S:g}",
        # A backstop: the server's --duration ends the sessions.
        "--duration",
        f"{seconds + SHUTDOWN_TIMEOUT_S:g}",
    ]
    if kind == "real":
        return [start_client(port, *flags, env=NEUTRAL_ENVIRONMENT) for _ in range(sessions)]
    # Its scene flags are the server's defaults, as the server's here are;
    # each level's server is fresh, so its sessions are numbered from 1.
    command = [PYTHON, LOAD_CLIENT, "--signaling-port", str(port), "--sessions", str(sessions)]
    return [Program([*command, *flags], env=NEUTRAL_ENVIRONMENT)]


def run_level(
    sessions: int,
    seconds: float,
    server_cpus: set[int],
    client_cpus: set[int],
    clients_kind: str = "real",
    tree: ServerTree = ServerTree(ROOT),
) -> LevelResult:
    """N concurrent sessions against one pinned server; leaves no process behind."""
    result = LevelResult(sessions, seconds, clients_kind, tree.revision)
    server: Optional[Program] = None
    clients: list[Program] = []
    with tempfile.TemporaryDirectory(prefix="bench-capacity-") as report_dir:
        try:
            port = free_port()
            with affinity(client_cpus):
                clients = start_clients(clients_kind, port, sessions, seconds)
            _wait_clients_ready(clients, time.monotonic() + CLIENT_READY_TIMEOUT_S)
            with affinity(server_cpus):
                # Not lab.programs.start_server: it waits before returning the
                # Program, so a server that never listens would escape cleanup.
                server = Program(
                    [
                        PYTHON,
                        tree.script,
                        "--signaling-host",
                        "127.0.0.1",
                        "--signaling-port",
                        str(port),
                        "--http-port",
                        "0",
                        "--width",
                        "640",
                        "--height",
                        "480",
                        "--fps",
                        "30",
                        "--codec",
                        "vp8",
                        *tree.admission_flags(sessions),
                        "--duration",
                        f"{seconds:g}",
                        "--report-dir",
                        report_dir,
                    ],
                    env=NEUTRAL_ENVIRONMENT,
                )
            if os.sched_getaffinity(server.pid) != server_cpus:
                raise LevelFailed(f"server not pinned: {os.sched_getaffinity(server.pid)}")
            window = CpuWindow(
                {"server": server.pid} | {f"client-{i}": c.pid for i, c in enumerate(clients)}
            )
            result.start_spread_s = _wait_sessions_streaming(
                server, sessions, time.monotonic() + SESSIONS_START_TIMEOUT_S
            )
            # CPU while all N stream: each session ends `seconds` after it began.
            waited = RunQueueWait(server.pid)
            server_cores, client_cores = CoreLoad(server_cpus), CoreLoad(client_cpus)
            window.start()
            waited.start()
            server_cores.start()
            client_cores.start()
            end = time.monotonic() + max(seconds - result.start_spread_s - 1.0, 1.0)
            while (left := end - time.monotonic()) > 0:
                time.sleep(min(SAMPLE_INTERVAL_S, left))
                window.sample()
                waited.sample()
            result.server_rss_mb = session_rss_mb(server.pid)
            window.stop()
            waited.stop()
            server_cores.stop()
            client_cores.stop()
            result.server_wait_pct = waited.percent
            result.server_cpu_pct = window.percent["server"] / len(server_cpus)
            client_total = sum(v for k, v in window.percent.items() if k.startswith("client-"))
            result.client_cpu_pct = client_total / len(client_cpus)
            # This script's own sampling runs on the clients' cores and counts
            # among their "others"; it is a few % at most.
            result.others_on_server_core_pct = max(
                server_cores.percent - result.server_cpu_pct, 0.0
            )
            result.others_on_client_cores_pct = max(
                client_cores.percent - result.client_cpu_pct, 0.0
            )

            deadline = time.monotonic() + SHUTDOWN_TIMEOUT_S
            result.reports = _wait_reports(Path(report_dir), sessions, deadline)
            for client in clients:
                try:
                    result.client_exits.append(client.wait(max(deadline - time.monotonic(), 0.1)))
                except subprocess.TimeoutExpired:  # still running: recorded as None
                    result.client_exits.append(None)
                documents = client.json_documents()
                if documents and clients_kind == "load":
                    result.load_client = documents[-1]
                elif documents:
                    result.detector_dropped += documents[-1].get("detector", {}).get("dropped", 0)
            if len(result.reports) < sessions:
                raise LevelFailed(f"{len(result.reports)} of {sessions} session reports written")
        except (LevelFailed, OSError, ValueError) as exc:  # ValueError: bad report JSON
            result.error = str(exc).splitlines()[0]
        finally:
            if server is not None:
                result.server_log = server.stderr.splitlines()[-20:]
            for program in (*clients, server):
                if program is not None:
                    program.close()
    return result


# --- report ------------------------------------------------------------------

COLUMNS = (
    "sessions",
    "answered % (min)",
    "sent % of due (min)",
    "error mean px (worst)",
    "latency p50 ms (worst session)",
    "latency p99 ms (worst session)",
    "server CPU % of its core",
    "others on the server's core %",
    "server run-queue wait %",
    "clients CPU % of their core",
    "others on the clients' core %",
    "out of CPU",
    "start spread s",
    "server RSS MB",
    "≥ 99 % answered and sent, p99 ≤ 20 ms",
)


def table_row(result: LevelResult, server_cpus: int, client_cpus: int) -> list[str]:
    if result.error is not None and not result.reports:
        return [str(result.sessions), f"FAILED: {result.error}"] + [""] * (len(COLUMNS) - 2)
    worst = result.worst()
    assert worst is not None
    min_answered = result.min_answered()
    min_sent = result.min_sent()
    worst_error = max(r["error_px"]["mean"] or 0.0 for r in result.reports)
    return [
        str(result.sessions),
        number(None if min_answered is None else 100.0 * min_answered, 1),
        number(None if min_sent is None else 100.0 * min_sent, 1),
        number(worst_error, 3),
        number(worst["latency_ms"].get("p50"), 1),
        number(worst["latency_ms"].get("p99"), 1),
        number(result.server_cpu_pct, 0),
        number(result.others_on_server_core_pct, 0),
        number(result.server_wait_pct, 0),
        number(result.client_cpu_pct, 0),
        number(result.others_on_client_cores_pct, 0),
        result.limit(server_cpus, client_cpus),
        number(result.start_spread_s, 1),
        number(result.server_rss_mb, 0),
        "yes" if result.passed() else "no",
    ]


#: With the load client, the clients' CPU column is its own (one process).
LOAD_CLIENT_COLUMNS = {
    "clients CPU % of their core": "load client CPU % of its core",
    "others on the clients' core %": "others on the load client's core %",
}


def columns(results: Sequence[LevelResult]) -> list[str]:
    if results and all(r.clients == "load" for r in results):
        return [LOAD_CLIENT_COLUMNS.get(name, name) for name in COLUMNS]
    return list(COLUMNS)


def markdown_table(results: Sequence[LevelResult], server_cpus: int, client_cpus: int) -> str:
    rows = [columns(results), ["---"] * len(COLUMNS)]
    rows += [table_row(r, server_cpus, client_cpus) for r in results]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def sessions_per_core(results: Sequence[LevelResult]) -> int:
    """The largest N that passed, with every smaller N measured passing too (0: none).

    With several runs of a level (``--repeat``), every run of it must pass.
    """
    best = 0
    for sessions in sorted({r.sessions for r in results}):
        if not all(r.passed() for r in results if r.sessions == sessions):
            break
        best = sessions
    return best


def notes(results: Sequence[LevelResult], server_cpus: int, client_cpus: int) -> list[str]:
    found = []
    for r in results:
        items = []
        if r.error is not None:
            items.append(r.error)
        if (r.others_on_server_core_pct or 0.0) > OTHERS_ON_CORE_WARNING_PCT:
            items.append(
                f"other jobs used {r.others_on_server_core_pct:.0f}% of the server's core: "
                "disturbed"
            )
        if (r.others_on_client_cores_pct or 0.0) > OTHERS_ON_CORE_WARNING_PCT:
            items.append(
                f"other jobs used {r.others_on_client_cores_pct:.0f}% of the clients' core(s)"
            )
        skipped = sum(rep.get("frames_skipped", 0) for rep in r.reports)
        if skipped:
            items.append(f"server skipped {skipped} frames (rendering behind schedule)")
        thinned = sum(rep.get("frames_skipped_for_rate", 0) for rep in r.reports)
        sent = sum(rep.get("frames_sent", 0) for rep in r.reports)
        if thinned:
            # Its link adaptation takes queueing on a busy core for a narrow
            # link: fewer frames sent, less work, yet every one answered.
            items.append(
                f"server thinned {thinned} frames for rate ({sent} sent): "
                "it took the latency for a narrow link"
            )
        if r.detector_dropped:
            items.append(f"detectors dropped {r.detector_dropped} frames (clients behind)")
        unanswered = (r.load_client or {}).get("frames_unanswered", 0)
        if unanswered:
            items.append(f"the load client left {unanswered} frames unanswered (channel not open)")
        if r.clients == "load" and any((rep["error_px"]["mean"] or 0.0) > 1.0 for rep in r.reports):
            items.append(
                "error above 1 px with the load client: its answers named the wrong frames "
                "or scenes (lab/load_client.py)"
            )
        if any(code != 0 for code in r.client_exits):
            items.append(f"client exit statuses {r.client_exits}")
        if not r.passed() and "clients" in r.limit(server_cpus, client_cpus):
            items.append(
                "the clients' core was saturated: this failure may be the clients', "
                "not the server's"
            )
        if items:
            found.append(f"- N={r.sessions}: " + "; ".join(items))
    return found


def headline(results: Sequence[LevelResult], server_cpus: int, client_cpus: int) -> list[str]:
    best = sessions_per_core(results)
    whose = f" (the server of {results[0].revision})" if results and results[0].revision else ""
    lines = [
        f"sessions per server core{whose}: {best} (every session >= {100 * MIN_ANSWERED_RATIO:.0f}% "
        f"answered, p99 <= {MAX_P99_MS:g} ms and >= {100 * MIN_SENT_RATIO:.0f}% of its frames sent, "
        "at this N and every smaller N measured)"
    ]
    runs_by_n: dict[int, list[LevelResult]] = {}
    for r in results:
        runs_by_n.setdefault(r.sessions, []).append(r)
    if any(len(runs) > 1 for runs in runs_by_n.values()):
        lines.append(
            "runs that passed, by N: "
            + ", ".join(
                f"{n}: {sum(r.passed() for r in runs)}/{len(runs)}"
                for n, runs in sorted(runs_by_n.items())
            )
        )
    first_fail = next(
        (r for r in sorted(results, key=lambda r: r.sessions) if not r.passed()), None
    )
    if first_fail is not None and "clients" in first_fail.limit(server_cpus, client_cpus):
        lines.append(
            f"N={first_fail.sessions} failed with the clients out of CPU: the server may carry "
            "more; this figure is a lower bound. Give the clients more cores (--client-cpus)."
        )
    disturbed = [
        r.sessions
        for r in results
        if (r.others_on_server_core_pct or 0.0) > OTHERS_ON_CORE_WARNING_PCT
        or (r.others_on_client_cores_pct or 0.0) > OTHERS_ON_CORE_WARNING_PCT
    ]
    if disturbed:
        lines.append(
            f"N={','.join(map(str, disturbed))}: other jobs ran on the measured cores. "
            "Measure again on a quiet machine."
        )
    # The busiest run at the headline N sizes the pod: a quieter one would flatter it.
    cpus = [r.server_cpu_pct for r in runs_by_n.get(best, []) if r.server_cpu_pct is not None]
    if best and cpus:
        cpu = max(cpus)
        rss = max(r.server_rss_mb or 0.0 for r in runs_by_n[best])
        lines.append(
            f"Kubernetes: BALLTRACKER_MAX_SESSIONS={best} with requests.cpu 1 (one core); a full pod then "
            f"uses about {cpu:.0f}% of its request, so an HPA target of about "
            f"{0.75 * cpu:.0f}% scales out when pods are three quarters full on average; "
            f"server memory at N={best}: {rss:.0f} MB resident"
        )
    return lines


# --- command line ------------------------------------------------------------


def _cpu_list(text: str) -> set[int]:
    try:
        cpus = {int(item) for item in text.split(",") if item}
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of CPU numbers: {text!r}") from None
    if not cpus:
        raise argparse.ArgumentTypeError("no CPU given")
    return cpus


def _session_list(text: str) -> list[int]:
    try:
        counts = [int(item) for item in text.split(",") if item]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of session counts: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("session counts must be positive")
    return sorted(set(counts))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Sessions per server core: one pinned server, N concurrent sessions.",
    )
    parser.add_argument(
        "--clients",
        choices=CLIENT_KINDS,
        default="load",
        help="load: one lab/load_client.py with N sessions, no decoding (default); "
        "real: N client/client.py, each decoding and detecting",
    )
    parser.add_argument(
        "--sessions",
        type=_session_list,
        default=None,
        metavar="N,N,...",
        help="concurrent session counts to measure (default: "
        + "; ".join(
            f"{kind} {','.join(map(str, counts))}" for kind, counts in DEFAULT_SESSIONS.items()
        )
        + ")",
    )
    parser.add_argument(
        "--seconds", type=float, default=15.0, help="streaming seconds per N (default: 15)"
    )
    parser.add_argument(
        "--before",
        metavar="REV",
        help="also measure the server of commit REV, level by level, interleaved",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="K",
        help="run each N K times, one after the other; N counts as carried only "
        "if every run passed (default: 1)",
    )
    parser.add_argument(
        "--stop-after",
        type=int,
        default=DEFAULT_STOP_AFTER,
        metavar="K",
        help="skip the larger N once K levels in a row failed "
        f"(default: {DEFAULT_STOP_AFTER}; 0 runs every N)",
    )
    parser.add_argument(
        "--server-cpu",
        type=_cpu_list,
        default={0},
        metavar="CPU[,CPU]",
        help="CPU(s) the server is pinned to (default: 0)",
    )
    parser.add_argument(
        "--client-cpus",
        type=_cpu_list,
        default={1},
        metavar="CPU[,CPU]",
        help="CPU(s) all clients share (default: 1)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write raw results here")
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=30.0,
        metavar="PCT",
        help="before each N, wait until other processes use less than this "
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


class LevelSchedule:
    """Which (N, server) to run next: the servers interleaved level by level (each
    level ``repeat`` times), each server's larger N skipped once ``stop_after``
    of its runs in a row failed."""

    def __init__(
        self,
        sessions: Sequence[int],
        trees: Sequence[ServerTree],
        stop_after: int,
        repeat: int = 1,
    ):
        self._sessions = [n for n in sessions for _ in range(repeat)]
        self._trees = trees
        self._stop_after = stop_after
        self._failures_in_a_row = {tree.revision: 0 for tree in trees}
        self.results: dict[str, list[LevelResult]] = {tree.revision: [] for tree in trees}

    def runs(self) -> Iterator[tuple[int, ServerTree]]:
        for index, sessions in enumerate(self._sessions):
            # Alternate which server goes first, so neither always follows the other.
            order = self._trees if index % 2 == 0 else list(reversed(self._trees))
            for tree in order:
                failures = self._failures_in_a_row[tree.revision]
                if self._stop_after and failures >= self._stop_after:
                    continue
                yield sessions, tree

    def record(self, result: LevelResult) -> None:
        self.results[result.revision].append(result)
        failed = not result.passed()
        self._failures_in_a_row[result.revision] = (
            self._failures_in_a_row[result.revision] + 1 if failed else 0
        )


def print_report(results: Sequence[LevelResult], server_cpus: int, client_cpus: int) -> None:
    print()
    if results and results[0].revision:
        print(f"server of {results[0].revision}:\n")
    print(markdown_table(results, server_cpus, client_cpus))
    print()
    print("\n".join(headline(results, server_cpus, client_cpus)))
    lines = notes(results, server_cpus, client_cpus)
    if lines:
        print("\nnotes:\n" + "\n".join(lines))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.seconds < 3:
        parser.error("--seconds must be at least 3")
    if args.stop_after < 0:
        parser.error("--stop-after must be 0 or more")
    if args.repeat < 1:
        parser.error("--repeat must be 1 or more")
    sessions = args.sessions or list(DEFAULT_SESSIONS[args.clients])
    usable = os.sched_getaffinity(0)
    for name, cpus in (("--server-cpu", args.server_cpu), ("--client-cpus", args.client_cpus)):
        if not cpus <= usable:
            parser.error(f"{name} {sorted(cpus)}: this process may only use CPUs {sorted(usable)}")
    if args.server_cpu & args.client_cpus:
        parser.error("the server and the clients must not share a CPU")
    command = shlex.join(sys.orig_argv if argv is None else ["bench/capacity.py", *argv])
    print(f"command: {command}", flush=True)
    print(f"machine: {machine_description()}", flush=True)
    print(
        f"server on CPU {sorted(args.server_cpu)}, clients ({args.clients}) on CPU "
        f"{sorted(args.client_cpus)}; 640x480@30 VP8, {args.seconds:g} s per N",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-capacity-before-") as scratch:
        trees = [ServerTree(ROOT)]
        if args.before:
            before = ServerTree(Path(scratch, "tree"), args.before)
            try:
                unpack(args.before, before.root)
            except subprocess.CalledProcessError as exc:
                parser.error(f"--before {args.before}: {exc.stderr.decode().strip()}")
            trees.append(before)
        schedule = LevelSchedule(sessions, trees, args.stop_after, args.repeat)
        # This process samples /proc twice a second: keep it off the server's core.
        with affinity(args.client_cpus):
            for count, tree in schedule.runs():
                # Progress on stderr so stdout stays a clean, pasteable report.
                whose = f" (server of {tree.revision})" if tree.revision else ""
                print(f"running N={count}{whose} ...", file=sys.stderr, flush=True)
                if args.quiet_below > 0:
                    wait_until_quiet(args.quiet_below, args.quiet_wait)
                schedule.record(
                    run_level(
                        count, args.seconds, args.server_cpu, args.client_cpus, args.clients, tree
                    )
                )
    server_cpus, client_cpus = len(args.server_cpu), len(args.client_cpus)
    for results in schedule.results.values():
        print_report(results, server_cpus, client_cpus)
    if args.json is not None:
        document: dict[str, Any] = {
            "command": command,
            "machine": machine_description(),
            "clients": args.clients,
            "sessions_per_core": sessions_per_core(schedule.results[""]),
            "results": [asdict(r) for r in schedule.results[""]],
        }
        if args.before:
            document["before"] = {
                "revision": args.before,
                "sessions_per_core": sessions_per_core(schedule.results[args.before]),
                "results": [asdict(r) for r in schedule.results[args.before]],
            }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    every = [r for results in schedule.results.values() for r in results]
    return 1 if any(r.error for r in every) else 0


if __name__ == "__main__":
    sys.exit(main())
