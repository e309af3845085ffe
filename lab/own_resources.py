"""What this test process holds, to check that code under test gives it back."""

from __future__ import annotations

import os


def own_shm() -> set[str]:
    """Shared memory this process created or still maps. Other programs on
    the machine may use /dev/shm meanwhile, so a plain listing would race."""
    names = {n for n in os.listdir("/dev/shm") if n.startswith(f"balltrack_{os.getpid()}_")}
    with open("/proc/self/maps") as maps:
        names |= {line.split("/dev/shm/", 1)[1].strip() for line in maps if "/dev/shm/" in line}
    return names


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}
