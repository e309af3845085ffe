"""What another process holds and uses, read from /proc: memory, fds, threads, CPU.

The fault tests check that the server gives back what a session took; the
soak and capacity benchmarks chart the same figures over time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Collection, Optional

#: Clock ticks per second for the utime/stime fields of /proc/PID/stat.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    """How many file descriptors process ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def _status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


def thread_count(pid: int) -> int:
    return _status_field(pid, "Threads")


def rss_bytes(pid: int) -> int:
    return _status_field(pid, "VmRSS") * 1024


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    # The command name in field 2 may contain spaces: split after its ')'.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (the client spawns a detector process)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited while we looked
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def tree_rss_bytes(pid: int) -> int:
    total = 0
    for member in process_tree(pid):
        try:
            total += rss_bytes(member)
        except (OSError, KeyError):
            pass  # a zombie has no VmRSS; an exited one no /proc entry
    return total


def idle_cpu_fraction(pid: int, seconds: float = 2.0) -> float:
    """Share of one core the process burns over ``seconds`` of wall time."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def busy_ticks(cpus: Optional[Collection[int]] = None) -> int:
    """CPU ticks spent on anything but idle, by all cores or by ``cpus`` (/proc/stat).

    Steal counts as busy: on a VM it is time our processes could not run.
    """
    busy = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if cpus is None:
            wanted = name == "cpu"  # the first line: every core summed
        else:
            wanted = name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus
        if wanted:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
            busy += user + nice + system + irq + softirq + steal
    return busy
