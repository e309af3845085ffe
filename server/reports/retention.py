"""Keeps the report directory under a byte bound (``--report-max-mb``).

Two halves make the bound hold for any number of sessions and for a session
that never ends:

- a live session's CSVs may take at most ``session_limit_bytes``, half the
  bound shared among ``max_sessions`` (``SessionReport`` stops writing rows
  there), so live sessions together never take more than half;
- finished sessions' files are deleted, oldest session first, until the
  directory is back under ``TARGET_SHARE`` of the bound: first their per-frame
  and per-second CSVs and plots, and only when those are gone their JSON
  summaries, the smallest and most useful part.

It runs before and after each ended session's summary and plot are written
(making room for a plot as large as the largest one there) and every
``CHECK_INTERVAL_S``, in a thread: a directory listing must not stall the
sessions' event loop. So the bound holds unless several sessions end within
one pass, each with a plot larger than any before it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from server.reports.report import REPORT_FILE

logger = logging.getLogger("server.reports.retention")

#: Deleting down to a little under the bound leaves room for the next few
#: sessions' plots without a deletion pass each.
TARGET_SHARE = 0.9

CHECK_INTERVAL_S = 10.0


@dataclass(frozen=True)
class ReportFile:
    path: Path
    session: str
    kind: str
    size: int
    modified: float


def scan(directory: Path) -> list[ReportFile]:
    """The report files in ``directory`` (anything else is left alone)."""
    files = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        match = REPORT_FILE.fullmatch(entry.name)
        if match is None:
            continue
        try:
            stat = entry.stat()
        except OSError:
            continue  # deleted meanwhile
        files.append(ReportFile(Path(entry.path), match[1], match[2], stat.st_size, stat.st_mtime))
    return files


def deletions(files: Iterable[ReportFile], max_bytes: int, live: set[str]) -> list[ReportFile]:
    """Which files to delete, in order, to make room for one more plot.

    Room: ``files`` plus a plot as large as the largest there must fit in
    ``max_bytes``; if not, delete down to ``TARGET_SHARE`` of that. Nothing
    of a live session goes; of the others, the oldest sessions' bulky files
    first, then the oldest summaries.
    """
    files = list(files)
    total = sum(f.size for f in files)
    next_plot = max((f.size for f in files if f.kind == "png"), default=0)
    if total + next_plot <= max_bytes:
        return []
    target = int(max_bytes * TARGET_SHARE) - next_plot
    # Session names sort by start time (their timestamp and number).
    finished = sorted((f for f in files if f.session not in live), key=lambda f: f.session)
    order = [f for f in finished if f.kind != "json"] + [f for f in finished if f.kind == "json"]
    chosen = []
    for file in order:
        if total <= target:
            break
        chosen.append(file)
        total -= file.size
    return chosen


class ReportRetention:
    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        max_sessions: int,
        live_sessions: Callable[[], set[str]],
    ) -> None:
        self._directory = directory
        self.max_bytes = max_bytes
        #: What one live session's CSVs may take (see the module's docstring).
        self.session_limit_bytes = max(64 * 1024, max_bytes // (2 * max_sessions))
        self._live_sessions = live_sessions
        self._task: Optional[asyncio.Task[None]] = None
        self._lock = asyncio.Lock()
        self.deleted_files = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def enforce(self) -> None:
        """Delete what the bound requires (one pass at a time)."""
        async with self._lock:
            live = self._live_sessions()
            self.deleted_files += await asyncio.to_thread(self._enforce, live)

    def _enforce(self, live: set[str]) -> int:
        doomed = deletions(scan(self._directory), self.max_bytes, live)
        deleted = 0
        for file in doomed:
            try:
                file.path.unlink()
                deleted += 1
            except FileNotFoundError:
                pass
            except OSError as error:
                logger.warning("cannot delete old report %s: %s", file.path, error)
        if doomed:
            logger.info(
                "report retention: deleted %d files of old sessions to stay under %.0f MB",
                deleted,
                self.max_bytes / 1e6,
            )
        return deleted

    async def _run(self) -> None:
        while True:
            try:
                await self.enforce()
            except Exception:  # the next pass tries again; the server goes on
                logger.exception("report retention failed")
            await asyncio.sleep(CHECK_INTERVAL_S)
