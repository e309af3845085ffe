"""lab/process_stats.py reads what it says, for this process and its children."""

from __future__ import annotations

import os
import subprocess
import sys

from lab.process_stats import (
    busy_ticks,
    cpu_seconds,
    open_fds,
    process_tree,
    rss_bytes,
    thread_count,
    tree_rss_bytes,
)


def test_this_process_is_read_from_proc() -> None:
    me = os.getpid()
    assert open_fds(me) == len(os.listdir("/proc/self/fd"))
    assert thread_count(me) >= 1
    assert 10 * 2**20 < rss_bytes(me) < 4 * 2**30
    before = cpu_seconds(me)
    sum(i * i for i in range(2_000_000))
    assert cpu_seconds(me) > before


def test_a_child_is_in_the_tree_and_its_memory_counts() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        assert child.pid in process_tree(os.getpid())
        assert tree_rss_bytes(os.getpid()) > rss_bytes(os.getpid())
    finally:
        child.communicate(b"", timeout=10)


def test_busy_ticks_of_all_cores_is_the_sum_of_each_core() -> None:
    cores = range(os.cpu_count() or 1)
    each = sum(busy_ticks({core}) for core in cores)
    total = busy_ticks()
    # Read a moment apart: the machine keeps ticking in between.
    assert total >= each - 5 * len(cores)
    assert busy_ticks(set()) == 0
    assert busy_ticks() >= total
