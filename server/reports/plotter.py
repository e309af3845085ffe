"""Draws the finished sessions' plots in a worker process of their own.

matplotlib's rendering holds the GIL for a few hundred ms a plot and leaves
tens of MB of caches behind; in the server's process that would stall every
live session's event loop and grow its memory. One spawned worker draws
the plots one after another, on whichever core is free, and its memory is
its own. A plot that fails is logged and costs only the PNG.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Optional

logger = logging.getLogger("server.reports.report")


def _draw(csv_path: Path, summary: dict[str, Any], png_path: Path) -> None:
    # Runs in the worker. matplotlib is imported here, not at the top, so
    # that the server's own process never loads it.
    from server.reports.plot import write_plot

    write_plot(csv_path, summary, png_path)


class ReportPlotter:
    def __init__(self) -> None:
        self._pool: Optional[ProcessPoolExecutor] = None

    async def plot(self, csv_path: Path, summary: dict[str, Any], png_path: Path) -> None:
        if self._pool is None:
            # spawn, not fork: a fork of a process running aiortc's threads is unsafe.
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._pool, _draw, csv_path, summary, png_path)
        except Exception as error:  # the plot must never cost the report
            logger.warning("no plot written to %s: %r", png_path, error)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
