#!/usr/bin/env python3
"""Set up and run the project with nothing but Python 3.10+.

    python3 dev.py demo    # venv + deps, then server and client for ~10 s
    python3 dev.py test    # venv + deps + system tools, then the whole suite
    python3 dev.py setup   # just the environment

Everything lands in ./.venv. System packages that tests need (Xvfb, nftables,
...) are installed with apt-get when running as root on Debian/Ubuntu;
otherwise the missing ones are named and the run stops.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"

# Debian package -> a file that shows it is installed.
RUNTIME_PACKAGES = {
    "libgl1": "/usr/lib/x86_64-linux-gnu/libGL.so.1",
    "libglib2.0-0": "/usr/lib/x86_64-linux-gnu/libglib-2.0.so.0",
}
TEST_PACKAGES = {
    "xvfb": "/usr/bin/Xvfb",
    "x11-apps": "/usr/bin/xwd",
    "imagemagick": "/usr/bin/convert",
    "iproute2": "/usr/sbin/ip",
    "nftables": "/usr/sbin/nft",
    "iptables": "/usr/sbin/iptables-nft",
    "libnetfilter-queue-dev": "/usr/include/libnetfilter_queue/libnetfilter_queue.h",
    "gcc": "/usr/bin/gcc",
    "libc6-dev": "/usr/include/stdio.h",
    # netfilterqueue compiles against the headers of the Python running it.
    "python3-dev": str(Path(sysconfig.get_paths()["include"]) / "Python.h"),
}


def run(argv: list[str], **kwargs: object) -> None:
    print("+", " ".join(str(a) for a in argv), flush=True)
    subprocess.run(argv, check=True, **kwargs)  # type: ignore[call-overload]


def missing_packages(packages: dict[str, str]) -> list[str]:
    def present(path: str) -> bool:
        # Multi-arch paths differ between machines; accept any architecture.
        if Path(path).exists():
            return True
        name = Path(path).name
        return any(Path("/usr/lib").glob(f"*/{name}")) or shutil.which(name) is not None

    return [name for name, path in packages.items() if not present(path)]


def ensure_system_packages(packages: dict[str, str]) -> None:
    missing = missing_packages(packages)
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        sys.exit(
            "error: missing system packages: "
            + " ".join(missing)
            + "\n(install them, or run as root on Debian/Ubuntu to have them installed)"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)


def ensure_venv(requirements: Path) -> None:
    """Create .venv and install ``requirements`` unless already done for this file."""
    if not PYTHON.exists():
        print(f"+ creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    stamp = VENV / f".installed-{requirements.name}"
    digest = hashlib.sha256()
    for path in sorted(ROOT.glob("requirements*.txt")):
        digest.update(path.read_bytes())
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return
    run([str(PYTHON), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    run([str(PYTHON), "-m", "pip", "install", "-q", "-r", str(requirements)])
    stamp.write_text(digest.hexdigest())


def demo(seconds: float, port: int) -> int:
    """Server and client side by side; the server prints the session summary."""
    ensure_system_packages(RUNTIME_PACKAGES)
    ensure_venv(ROOT / "requirements.txt")
    common = ["--signaling-port", str(port)]
    server = subprocess.Popen(
        [
            str(PYTHON),
            "server/server.py",
            *common,
            "--http-port",
            "0",
            "--once",
            "--duration",
            str(seconds),
            "--report-dir",
            "reports",
        ],
        cwd=ROOT,
    )
    client = subprocess.Popen([str(PYTHON), "client/client.py", *common], cwd=ROOT)
    try:
        client_status = client.wait(timeout=seconds + 60)
        server_status = server.wait(timeout=15)
    except (KeyboardInterrupt, subprocess.TimeoutExpired):
        for process in (client, server):
            process.terminate()
        for process in (client, server):
            process.wait()
        return 1
    print(f"reports written to {ROOT / 'reports'}")
    return client_status or server_status


def test(pytest_args: list[str]) -> int:
    ensure_system_packages({**RUNTIME_PACKAGES, **TEST_PACKAGES})
    ensure_venv(ROOT / "requirements-test.txt")
    return subprocess.call([str(PYTHON), "-m", "pytest", *pytest_args], cwd=ROOT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run server and client locally")
    demo_parser.add_argument("--seconds", type=float, default=10.0)
    demo_parser.add_argument("--port", type=int, default=1234, help="signaling port")
    test_parser = commands.add_parser("test", help="run the whole test suite")
    test_parser.add_argument("pytest_args", nargs=argparse.REMAINDER)
    commands.add_parser("setup", help="create .venv with everything the tests need")
    args = parser.parse_args()
    if sys.version_info < (3, 10):
        sys.exit("error: Python 3.10 or newer is needed")
    if args.command == "demo":
        return demo(args.seconds, args.port)
    if args.command == "test":
        return test(args.pytest_args)
    ensure_system_packages({**RUNTIME_PACKAGES, **TEST_PACKAGES})
    ensure_venv(ROOT / "requirements-test.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
