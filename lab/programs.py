"""The real server and client as subprocesses, for end-to-end tests.

Output goes to files, not pipes, so a chatty program can never block on a
full pipe while a test waits for it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path
from types import ModuleType
from typing import Any, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Program:
    """One running program with its stdout and stderr captured to files."""

    def __init__(
        self, argv: Sequence[str], prefix: Sequence[str] = (), env: Optional[dict[str, str]] = None
    ) -> None:
        self.argv = [*prefix, *argv]
        self._output = tempfile.TemporaryDirectory(prefix="balltracker-")
        self._stdout_path = Path(self._output.name) / "stdout"
        self._stderr_path = Path(self._output.name) / "stderr"
        environment = dict(os.environ, PYTHONUNBUFFERED="1")
        environment.update(env or {})
        with open(self._stdout_path, "wb") as out, open(self._stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=environment,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stdout(self) -> str:
        return self._stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self._stderr_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def wait_for_output(self, text: str, timeout: float, count: int = 1) -> None:
        """Wait until ``text`` has appeared ``count`` times in the program's log.

        The log is stderr; stdout carries the JSON summaries, whose keys
        (``frames_answered``...) would match log words like "answered".
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stderr.count(text) >= count:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not seen {count}x from {self.argv}:\n{self.describe()}")

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL for the whole process group after a grace period."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        self._output.cleanup()

    def describe(self) -> str:
        return f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}"

    def json_documents(self) -> list[dict[str, Any]]:
        """Every JSON summary the program wrote to stdout: one object a line."""
        documents = []
        for line in self.stdout.splitlines():
            if line.startswith("{"):
                documents.append(json.loads(line))
        return documents


def close_all(*programs: Optional[Program]) -> None:
    """Stop every program that was started (None: never got that far)."""
    for program in programs:
        if program is not None:
            program.close()


def start_server(
    port: int,
    *flags: str,
    prefix: Sequence[str] = (),
    host: str = "127.0.0.1",
    http_port: int = 0,
    env: Optional[dict[str, str]] = None,
    progress_interval: Optional[float] = 1.0,
) -> Program:
    """Start the server and wait until its signaling port listens.

    The harness asks for a progress line a second at INFO (tests wait for
    "answered" in it); ``progress_interval=None`` keeps the server's default,
    DEBUG only.
    """
    progress = (
        [] if progress_interval is None else ["--progress-interval", f"{progress_interval:g}"]
    )
    server = Program(
        [
            PYTHON,
            "server/server.py",
            "--signaling-host",
            host,
            "--signaling-port",
            str(port),
            "--http-port",
            str(http_port),
            *progress,
            *flags,
        ],
        prefix,
        env,
    )
    server.wait_for_output("signaling on", timeout=30)
    return server


def start_client(
    port: int,
    *flags: str,
    prefix: Sequence[str] = (),
    host: str = "127.0.0.1",
    env: Optional[dict[str, str]] = None,
) -> Program:
    return Program(
        [
            PYTHON,
            "client/client.py",
            "--signaling-host",
            host,
            "--signaling-port",
            str(port),
            *flags,
        ],
        prefix,
        env,
    )


def read_reports(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob("session-*.json"))]


def wait_for_reports(directory: Path, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The session reports once at least ``count`` exist (or whatever exists at the deadline)."""
    deadline = time.monotonic() + timeout
    reports = read_reports(directory)
    while len(reports) < count and time.monotonic() < deadline:
        time.sleep(0.1)
        reports = read_reports(directory)
    return reports


def wait_for_plots(directory: Path, count: int, timeout: float = 30.0) -> int:
    """How many session plots exist once ``count`` do (or at the deadline).

    The server's worker process draws them after the sessions end.
    """
    deadline = time.monotonic() + timeout
    while len(list(directory.glob("session-*.png"))) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return len(list(directory.glob("session-*.png")))


def load_program(path: str) -> ModuleType:
    """A program's module (``server/server.py``), loaded in this process for its parser."""
    spec = spec_from_file_location(f"program_{Path(path).stem}", ROOT / path)
    assert spec is not None and spec.loader is not None
    module = module_from_spec(spec)
    # Run as a module without a package, the entry point rewrites sys.path[0]
    # as it does for a script; the caller needs its own back.
    saved_path = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved_path
    return module
