"""The plot worker (server.reports.plotter): a bounded queue, and a fresh
worker after one dies."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from server.reports.plotter import ReportPlotter
from tests.test_report import written_session


@pytest.mark.timeout(120)
def test_plots_beyond_the_bound_are_skipped_not_queued(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reports = [written_session(tmp_path / str(i)) for i in range(4)]
    for report in reports:
        report.close({"frames_sent": 90})

    async def plot_all() -> ReportPlotter:
        plotter = ReportPlotter(max_pending=2)
        try:
            await asyncio.gather(
                *(plotter.plot(r.csv_path, {"frames_sent": 90}, r.png_path) for r in reports)
            )
        finally:
            plotter.close()
        return plotter

    plotter = asyncio.run(plot_all())
    drawn = [r for r in reports if r.png_path.exists()]
    assert len(drawn) == 2 and plotter.skipped == 2
    assert caplog.text.count("plots already queued") == 2
    # Skipping costs only the PNG: every summary is there.
    assert all(r.json_path.exists() for r in reports)


@pytest.mark.timeout(120)
def test_a_dead_worker_is_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first, second, third = (written_session(tmp_path / name) for name in "abc")
    for report in (first, second, third):
        report.close({"frames_sent": 90})

    async def scenario() -> ReportPlotter:
        plotter = ReportPlotter()
        try:
            await plotter.plot(first.csv_path, {"frames_sent": 90}, first.png_path)
            pool = plotter._pool
            assert pool is not None
            for pid in list(pool._processes):  # the worker dies (OOM killer, a crash)
                os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(1.0)
            await plotter.plot(second.csv_path, {"frames_sent": 90}, second.png_path)
            await plotter.plot(third.csv_path, {"frames_sent": 90}, third.png_path)
        finally:
            plotter.close()
        return plotter

    plotter = asyncio.run(scenario())
    assert first.png_path.exists() and third.png_path.exists()
    assert plotter.restarts == 1
    assert "the plot worker died" in caplog.text
