"""Draws the finished sessions' plots in a worker process of their own.

matplotlib's rendering holds the GIL for a few hundred ms a plot and leaves
tens of MB of caches behind; in the server's process that would stall every
live session's event loop and grow its memory. One spawned worker draws
the plots one after another, on whichever core is free, and its memory is
its own. A plot that fails is logged and costs only the PNG.

At most ``max_pending`` plots wait or run at once: beyond that a session
gets no PNG (its CSVs and summary are written all the same) rather than a
queue that grows with every session. A worker that dies (killed, out of
memory) breaks the pool; the next plot starts a fresh one.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Optional

logger = logging.getLogger("server.reports.report")

#: Plots drawn or waiting at once; each takes a few hundred ms.
MAX_PENDING_PLOTS = 32


def _draw(csv_path: Path, summary: dict[str, Any], png_path: Path) -> None:
    # Runs in the worker. matplotlib is imported here, not at the top, so
    # that the server's own process never loads it.
    from server.reports.plot import write_plot

    write_plot(csv_path, summary, png_path)


class ReportPlotter:
    def __init__(self, max_pending: int = MAX_PENDING_PLOTS) -> None:
        self._pool: Optional[ProcessPoolExecutor] = None
        self._max_pending = max_pending
        self._pending = 0
        self.skipped = 0
        self.restarts = 0

    async def plot(self, csv_path: Path, summary: dict[str, Any], png_path: Path) -> None:
        if self._pending >= self._max_pending:
            self.skipped += 1
            logger.warning(
                "no plot written to %s: %d plots already queued", png_path, self._pending
            )
            return
        if self._pool is None:
            # spawn, not fork: a fork of a process running aiortc's threads is unsafe.
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        pool = self._pool
        loop = asyncio.get_running_loop()
        self._pending += 1
        try:
            await loop.run_in_executor(pool, _draw, csv_path, summary, png_path)
        except BrokenProcessPool:
            logger.warning(
                "no plot written to %s: the plot worker died; starting another", png_path
            )
            self._replace(pool)
        except Exception as error:  # the plot must never cost the report
            logger.warning("no plot written to %s: %r", png_path, error)
        finally:
            self._pending -= 1

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if self._pool is broken:
            self._pool = None
            self.restarts += 1
            broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
