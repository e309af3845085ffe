"""coturn in a NetworkLab's relay namespace: the TURN relay of the network tests.

Debian's ``turnserver`` (package ``coturn``) runs as a plain process, one per
test, never as the package's service. It authenticates with the TURN REST
API's shared secret (``use-auth-secret``), as in the deployments, and
relays on the lab's relay address, which both the server's and the client's
namespaces reach. TLS, DTLS and its admin CLI are off.

Typical use::

    with NetworkLab(relay=True) as lab, TurnRelay(lab, secret="s3cret") as relay:
        lab.block_direct_udp()
        relay.url("tcp")  # "turn:198.18.0.1:3478?transport=tcp"
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from lab.network_lab import LabError, NetworkLab

TURNSERVER = "turnserver"
TURN_PORT = 3478
REALM = "balltracker"
#: coturn logs this once its listeners and relay threads are up.
READY_LINE = "Total General servers"
START_TIMEOUT_S = 15.0


class TurnRelay:
    """One coturn process in ``lab``'s relay namespace; ``close()`` stops it."""

    def __init__(
        self,
        lab: NetworkLab,
        secret: str,
        *,
        port: int = TURN_PORT,
        min_port: int = 49152,
        max_port: int = 65535,
        verbose: bool = False,
    ) -> None:
        if lab.relay_ns is None:
            raise LabError("TurnRelay needs a NetworkLab(relay=True)")
        self._lab = lab
        self.secret = secret
        self.port = port
        self._min_port, self._max_port = min_port, max_port
        self._verbose = verbose
        self._directory = tempfile.TemporaryDirectory(prefix="balltracker-turn-")
        self._log_path = Path(self._directory.name) / "turnserver.log"
        self._process: Optional[subprocess.Popen[Any]] = None

    @staticmethod
    def available() -> tuple[bool, str]:
        if shutil.which(TURNSERVER) is None:
            return False, "`turnserver` not found (apt-get install coturn)"
        return True, "ok"

    def url(self, transport: str = "udp") -> str:
        """The ``turn:`` URL both namespaces reach the relay at."""
        return f"turn:{self._lab.relay_address}:{self.port}?transport={transport}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise LabError("TurnRelay is not started")
        return self._process.pid

    @property
    def log(self) -> str:
        return self._log_path.read_text(errors="replace") if self._log_path.exists() else ""

    def start(self) -> TurnRelay:
        address = self._lab.relay_address
        argv = [
            TURNSERVER,
            "-n",  # no configuration file: everything is here
            "--listening-ip", address,
            "--relay-ip", address,
            "--listening-port", str(self.port),
            "--min-port", str(self._min_port),
            "--max-port", str(self._max_port),
            "--use-auth-secret",
            "--static-auth-secret", self.secret,
            "--realm", REALM,
            "--no-tls", "--no-dtls", "--no-cli",
            "--log-file", "stdout", "--simple-log",
            "--pidfile", str(Path(self._directory.name) / "turnserver.pid"),
            "--db", str(Path(self._directory.name) / "turndb"),
        ]  # fmt: skip
        if self._verbose:
            argv.append("--verbose")
        with open(self._log_path, "wb") as log:
            # `ip netns exec` execs turnserver: the pid is the relay's own.
            self._process = self._lab.popen(
                "relay", argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while READY_LINE not in self.log:
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise LabError(f"turnserver did not start:\n{self.log[-2000:]}")
            time.sleep(0.05)
        return self

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the relay so far (all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def cleanup(self) -> None:
        """``close()`` and remove the relay's log and files."""
        self.close()
        self._directory.cleanup()

    def __enter__(self) -> TurnRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
