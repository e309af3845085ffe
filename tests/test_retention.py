"""A bounded report directory (server.reports.retention, server.reports.report).

The deletion order is checked as a pure function. Against the real server,
the report directory is a small tmpfs mounted in a private mount namespace
(``unshare -m``) that only the server lives in; the test reads it through
``/proc/<pid>/root``, the server's view of the file system. One run keeps
it under ``--report-max-mb`` over many sessions and one long one; another
fills it: the session still streams and scores to its end, and the failure
is one log line and a metric.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Optional

import pytest

from lab.programs import Program, close_all, free_port, start_client, start_server
from server.reports.report import SECOND_COLUMNS, SessionReport
from server.reports.retention import TARGET_SHARE, ReportFile, deletions, scan
from tests.test_faults import wait_until

pytestmark = pytest.mark.e2e


def _file(session: str, kind: str, size: int) -> ReportFile:
    return ReportFile(Path(f"{session}.{kind}"), session, kind, size, 0.0)


OLD, MIDDLE, NEW = (f"session-20261203T10000{i}-000{i}" for i in (1, 2, 3))


def test_nothing_goes_while_there_is_room_for_the_next_plot() -> None:
    files = [_file(OLD, "csv", 100), _file(OLD, "png", 100), _file(OLD, "json", 10)]
    assert deletions(files, 310, set()) == []
    assert deletions(files, 309, set()) != []


def test_oldest_bulk_first_then_summaries_and_never_a_live_session() -> None:
    files = [
        _file(NEW, "csv", 400),  # live
        _file(MIDDLE, "csv", 300),
        _file(MIDDLE, "png", 100),
        _file(MIDDLE, "json", 10),
        _file(OLD, "csv", 300),
        _file(OLD, "seconds.csv", 50),
        _file(OLD, "png", 100),
        _file(OLD, "json", 10),
    ]
    doomed = deletions(files, 1000, live={NEW})
    assert [(f.session, f.kind) for f in doomed] == [
        (OLD, "csv"),
        (OLD, "seconds.csv"),
        (OLD, "png"),
        (MIDDLE, "csv"),
    ]
    left = sum(f.size for f in files) - sum(f.size for f in doomed)
    assert left + 100 <= 1000 * TARGET_SHARE  # room for one more plot of 100
    # Far over the bound: summaries go too, the oldest first, live never.
    doomed = deletions(files, 420, live={NEW})
    assert [f.session for f in doomed if f.kind == "json"] == [OLD, MIDDLE]
    assert all(f.session != NEW for f in doomed)


def test_scan_sees_only_report_files(tmp_path: Path) -> None:
    (tmp_path / f"{OLD}.csv").write_text("x" * 10)
    (tmp_path / f"{OLD}.json.tmp").write_text("x")
    (tmp_path / "notes.txt").write_text("mine")
    [found] = scan(tmp_path)
    assert (found.session, found.kind, found.size) == (OLD, "csv", 10)
    assert scan(tmp_path / "missing") == []


def test_a_session_report_stays_under_its_limit_and_says_so(tmp_path: Path) -> None:
    from server.core.ledger import FrameRecord

    report = SessionReport(tmp_path, "session-x", limit_bytes=10_000)
    report.open()
    for index in range(1000):
        report.write_frame(FrameRecord(index, index * 3000, 1.0, 2.0, 0.0, True, 1.0, 2.0, 0.0, 5))
    assert report.close({"frames_sent": 1000})
    assert report.csv_path.stat().st_size <= 8_000
    assert '"report_rows_dropped"' in report.json_path.read_text()


def test_an_unwritable_directory_is_one_line_and_one_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    failures: list[int] = []
    report = SessionReport(blocker / "reports", "session-y", on_failure=lambda: failures.append(1))
    report.open()
    report.write_second({name: i for i, name in enumerate(SECOND_COLUMNS)})
    assert not report.close({})
    assert failures == [1]
    assert caplog.text.count("report stops") == 1 and "Traceback" not in caplog.text


# ---------------------------------------------------------------- on a small tmpfs


def _private_tmpfs(directory: Path, size: str) -> list[str]:
    """A prefix that runs a program with a tmpfs of ``size`` on ``directory``, in a
    mount namespace of its own: it vanishes with the program."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace here: {probe.stderr.decode().strip()}")
    directory.mkdir(parents=True, exist_ok=True)
    script = f'mount -t tmpfs -o size={size} tmpfs "{directory}" && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"]


def _bytes_in(server: Program, directory: Path) -> int:
    seen = Path(f"/proc/{server.pid}/root") / directory.relative_to("/")
    return sum(f.size for f in scan(seen))


def _metric(http_port: int, name: str) -> Optional[float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


@pytest.mark.timeout(240)
def test_many_sessions_and_a_long_one_stay_under_the_bound(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    max_bytes = 400_000
    port = free_port()
    server = start_server(
        port,
        "--report-dir",
        str(reports),
        "--report-max-mb",
        f"{max_bytes / 1e6:g}",
        "--max-sessions",
        "2",
        "--fps",
        "60",
        prefix=_private_tmpfs(reports, "4m"),
    )
    clients: list[Optional[Program]] = []
    largest = 0
    try:
        # A long session (its CSV share is 80 KB: about 23 s at 60 fps) beside
        # short ones that come and go, each leaving a plot.
        long_one = start_client(port, "--duration", "40")
        clients.append(long_one)
        for _ in range(8):
            short = start_client(port, "--duration", "2")
            clients.append(short)
            deadline = time.monotonic() + 60
            while short.process.poll() is None and time.monotonic() < deadline:
                largest = max(largest, _bytes_in(server, reports))
                time.sleep(0.2)
            assert short.wait(timeout=5) == 0, short.describe()
        while long_one.process.poll() is None:
            largest = max(largest, _bytes_in(server, reports))
            time.sleep(0.2)
        assert long_one.wait(timeout=5) == 0, long_one.describe()
        time.sleep(3)  # its plot
        largest = max(largest, _bytes_in(server, reports))
        server.stop()
        summaries = server.json_documents()
        log = server.stderr
    finally:
        close_all(*clients, server)
    print(f"\nreport dir at most {largest} bytes of {max_bytes}")
    assert largest <= max_bytes
    assert "report retention: deleted" in log
    [long_summary] = [s for s in summaries if s.get("duration_s", 0) > 30]
    assert long_summary["answered_ratio"] > 0.9  # the cap cost rows on disk, not tracking


@pytest.mark.timeout(120)
def test_a_full_disk_leaves_the_session_complete(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    port, http_port = free_port(), free_port()
    server = start_server(
        port,
        "--report-dir",
        str(reports),
        http_port=http_port,
        # A tmpfs of one page, and a bound far above it: the disk fills first.
        prefix=_private_tmpfs(reports, "4k"),
    )
    client = None
    try:
        server.wait_for_output("console on", timeout=30)
        client = start_client(port, "--duration", "5")
        assert client.wait(timeout=60) == 0, client.describe()
        assert wait_until(lambda: "report stops" in server.stderr, 10), server.describe()
        assert _metric(http_port, "balltracker_report_write_failures_total") == 1.0
        server.stop()
        [summary] = [d for d in server.json_documents() if "end_reason" in d]
        log = server.stderr
    finally:
        close_all(client, server)
    assert summary["end_reason"] == "client said bye", summary
    assert summary["answered_ratio"] > 0.9, summary
    assert log.count("report stops") == 1 and "No space left on device" in log
    assert "Traceback" not in log
