#!/usr/bin/env python3
"""Userspace packet delayer for NFQUEUE: holds every queued packet for a fixed time.

Why this exists: the kernel on the test machines has no ``netem``, so the usual
``tc qdisc ... netem delay`` is unavailable. Instead an iptables-nft rule
(``-j NFQUEUE --queue-num N --queue-bypass``) hands each egress packet to this
process, which accepts it again once its release time has come.

Run it inside the network namespace whose egress it should delay (the NFQUEUE
number is per namespace), e.g.::

    ip netns exec NS python packet_delayer.py --queue-num 4242 --delay-ms 50

Protocol with the parent (``lab/network_lab.py``):

- stdout: prints ``ready`` once the queue is bound, so the parent may install the
  iptables rule without a window where packets are queued to nobody;
- stdin: lines ``delay MS [JITTER_MS]`` change the delay at run time; EOF on stdin
  (the parent died or closed the pipe) makes the delayer exit, so a crashed test
  run does not leave it behind;
- SIGTERM/SIGINT: exit promptly. On every exit held packets are accepted first, not dropped.

Ordering: release times are made monotonic (``max(now + delay, previous)``), so a
plain FIFO deque is enough and packets always leave in arrival order, even with
jitter or after the delay is lowered. That is both cheaper than a heap and it
matches what a real path without reordering does. Verdicts are issued in FIFO order
too, which keeps the kernel's lookup of the queued entry at the head of its list.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import selectors
import signal
import sys
import time
from types import FrameType
from typing import Any

# Queued-but-unreleased packets the kernel keeps for us; ~1-2 Mbit/s of video is
# a few hundred packets per second, so even a 1 s delay fits comfortably.
DEFAULT_MAX_LEN = 8192


class PacketDelayer:
    """Binds one NFQUEUE and releases its packets after ``delay_ms`` (+/- jitter)."""

    def __init__(
        self,
        queue_num: int,
        delay_ms: float,
        jitter_ms: float = 0.0,
        max_len: int = DEFAULT_MAX_LEN,
    ) -> None:
        self.queue_num = queue_num
        self.max_len = max_len
        self._delay_s = 0.0
        self._jitter_s = 0.0
        self.set_delay(delay_ms, jitter_ms)
        # (release time, packet). Release times are non-decreasing: see module doc.
        self._held: collections.deque[tuple[float, Any]] = collections.deque()
        self._last_release = 0.0
        self.packets_seen = 0
        self._stop = False

    def request_stop(self, signum: int = 0, frame: FrameType | None = None) -> None:
        """Signal handler: only sets a flag. The wakeup fd (see run) wakes select()."""
        self._stop = True

    def set_delay(self, delay_ms: float, jitter_ms: float = 0.0) -> None:
        if delay_ms < 0 or jitter_ms < 0:
            raise ValueError("delay and jitter must be >= 0")
        self._delay_s = delay_ms / 1000.0
        self._jitter_s = jitter_ms / 1000.0

    def _on_packet(self, pkt: Any) -> None:
        # Called from inside NetfilterQueue.run(); only record the packet here,
        # verdicts are issued from the main loop when the packet is due.
        now = time.monotonic()
        hold = self._delay_s
        if self._jitter_s:
            hold = max(0.0, hold + random.uniform(-self._jitter_s, self._jitter_s))
        release = max(now + hold, self._last_release)
        self._last_release = release
        self._held.append((release, pkt))
        self.packets_seen += 1

    def _release_due(self, now: float) -> None:
        held = self._held
        while held and held[0][0] <= now:
            held.popleft()[1].accept()

    def _release_all(self) -> None:
        while self._held:
            try:
                self._held.popleft()[1].accept()
            except OSError:
                pass  # queue already gone; the kernel drops what it still holds

    def run(self, stdin_control: bool, max_runtime_s: float) -> None:
        # Imported here, not at the top, so --help works without the module.
        from netfilterqueue import COPY_META, NetfilterQueue

        nfq = NetfilterQueue()
        # COPY_META: we never look at payloads, so don't copy them to userspace.
        nfq.bind(self.queue_num, self._on_packet, max_len=self.max_len, mode=COPY_META)
        sel = selectors.DefaultSelector()
        nfq_fd = nfq.get_fd()
        os.set_blocking(nfq_fd, False)
        sel.register(nfq_fd, selectors.EVENT_READ, "nfq")
        if stdin_control:
            sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
        # Signals must not raise inside NetfilterQueue's C callback path, so the
        # handler only sets a flag and Python writes a byte to this pipe, which
        # makes select() return.
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        sel.register(wake_r, selectors.EVENT_READ, "wake")
        stdin_buf = b""
        print("ready", flush=True)
        deadline = time.monotonic() + max_runtime_s
        try:
            while not self._stop:
                now = time.monotonic()
                if now >= deadline:
                    break
                self._release_due(now)
                timeout = deadline - now
                if self._held:
                    timeout = min(timeout, max(0.0, self._held[0][0] - now))
                for key, _ in sel.select(timeout):
                    if key.data == "nfq":
                        nfq.run(block=False)
                    elif key.data == "wake":
                        os.read(wake_r, 512)
                    else:
                        chunk = os.read(sys.stdin.fileno(), 4096)
                        if not chunk:
                            return  # parent went away: exit (finally releases packets)
                        stdin_buf += chunk
                        while b"\n" in stdin_buf:
                            line, stdin_buf = stdin_buf.split(b"\n", 1)
                            self._command(line.decode().strip())
        finally:
            self._release_all()
            signal.set_wakeup_fd(old_wakeup)
            sel.close()
            os.close(wake_r)
            os.close(wake_w)
            nfq.unbind()

    def _command(self, line: str) -> None:
        parts = line.split()
        if not parts:
            return
        if parts[0] == "delay" and len(parts) in (2, 3):
            self.set_delay(float(parts[1]), float(parts[2]) if len(parts) == 3 else 0.0)
            print(f"ok delay {parts[1]}", flush=True)
        else:
            print(f"error unknown command {line!r}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queue-num", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, required=True)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--max-len", type=int, default=DEFAULT_MAX_LEN)
    parser.add_argument(
        "--max-runtime-s",
        type=float,
        default=3600.0,
        help="exit after this long no matter what (bounded lifetime)",
    )
    parser.add_argument(
        "--no-stdin", action="store_true", help="ignore stdin (no run-time control, no exit on EOF)"
    )
    args = parser.parse_args(argv)
    delayer = PacketDelayer(args.queue_num, args.delay_ms, args.jitter_ms, args.max_len)
    signal.signal(signal.SIGTERM, delayer.request_stop)
    signal.signal(signal.SIGINT, delayer.request_stop)
    delayer.run(stdin_control=not args.no_stdin, max_runtime_s=args.max_runtime_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
