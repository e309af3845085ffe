#!/usr/bin/env python3
"""Set up and run the project with nothing but Python 3.10+.

    python3 dev.py demo    # venv + deps, then server and client for ~10 s
    python3 dev.py test    # venv + deps + system packages, then the whole suite
    python3 dev.py setup   # just the environment

Everything lands in ./.venv. System packages that tests need (Xvfb, nftables,
Chromium, ...) are installed with apt-get when running as root on
Debian/Ubuntu; otherwise the missing ones are named on one line and the run
stops. Whether a package is installed is asked of dpkg, never guessed from a
program's name on PATH: a look-alike ``convert`` or ``ip`` proves nothing.
An entry ``a|b`` is satisfied by either package; ``a`` is the one installed.
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
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"

#: Debian packages the GUI OpenCV wheel loads at import time.
RUNTIME_PACKAGES = ("libgl1", "libglib2.0-0")
#: Either package gives /usr/bin/kubectl (see TEST_PACKAGES).
KUBECTL = "kubernetes-client|kubectl"
#: Debian packages the tests use, on top of the runtime ones. An entry
#: "a|b" is satisfied by either package; "a" is the one to install.
TEST_PACKAGES = (
    "xvfb",  # the virtual screen for the --display window tests
    "libxcb1",  # what mss reads that screen through
    "chromium",  # the browser tests (driven by playwright)
    "iproute2",  # network namespaces and veth pairs
    "nftables",  # packet loss
    "iptables",  # the NFQUEUE rule that delays packets
    "libnetfilter-queue-dev",  # netfilterqueue compiles against it
    "gcc",
    "libc6-dev",
    "util-linux",  # unshare: the network tests of a non-root user
    # kubectl, for `kubectl kustomize` and `kubectl apply --dry-run=client`
    # (tests/test_deployment.py). Debian 12 ships 1.20 as kubernetes-client:
    # old, but both checks pass with it. A `kubectl` package (Kubernetes' or
    # Google Cloud's apt repository) owns the same /usr/bin/kubectl, so
    # kubernetes-client cannot be installed next to it; it counts instead.
    KUBECTL,
    # A Docker engine of the test's own, and the base image it builds
    # without a registry (tests/test_compose_docker.py). Docker's own
    # docker-ce package gives the same dockerd, so it counts.
    "docker.io|docker-ce",
    "debootstrap",
)


def run(argv: Sequence[str], **kwargs: object) -> None:
    print("+", " ".join(str(a) for a in argv), flush=True)
    subprocess.run(argv, check=True, **kwargs)  # type: ignore[call-overload]


def installed_packages(names: Sequence[str]) -> Optional[set[str]]:
    """The subset of ``names`` that dpkg lists as installed; None without dpkg."""
    if shutil.which("dpkg-query") is None:
        return None
    listing = subprocess.run(
        ["dpkg-query", "--show", "--showformat=${Package}\t${db:Status-Abbrev}\n", *names],
        capture_output=True,
        text=True,
    ).stdout
    installed = set()
    for line in listing.splitlines():
        package, _, status = line.partition("\t")
        if status.startswith("ii"):
            # Multi-arch packages are listed as name:arch.
            installed.add(package.split(":")[0])
    return installed


def python_headers_package() -> tuple[str, ...]:
    """python3-dev, when the running Python has no headers to compile against."""
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return () if headers.exists() else ("python3-dev",)


def missing_packages(names: Sequence[str]) -> Optional[list[str]]:
    """What to install for ``names``; None without dpkg.

    An entry ``"a|b"`` (Debian's notation for alternatives) is met by either
    package; when neither is installed, ``a`` is named.
    """
    choices = [name.split("|") for name in names]
    installed = installed_packages([package for options in choices for package in options])
    if installed is None:
        return None
    return [options[0] for options in choices if not installed.intersection(options)]


def ensure_system_packages(names: Sequence[str]) -> None:
    missing = missing_packages(names)
    if missing is None:
        print(
            "warning: no dpkg-query here, so system packages cannot be checked; "
            "needed: " + " ".join(names),
            file=sys.stderr,
        )
        return
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        sys.exit(
            "error: missing system packages: "
            + " ".join(missing)
            + " (install them: sudo apt-get install "
            + " ".join(missing)
            + ")"
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
    reports = sorted((ROOT / "reports").glob("session-*.json"), key=lambda p: p.stat().st_mtime)
    if reports:
        newest = reports[-1].with_suffix("")
        print(f"report: {newest}.json, per-frame {newest}.csv, plot {newest}.png")
    return client_status or server_status


def setup() -> None:
    ensure_system_packages(RUNTIME_PACKAGES + TEST_PACKAGES + python_headers_package())
    ensure_venv(ROOT / "requirements-test.txt")


def test(pytest_args: Sequence[str]) -> int:
    setup()
    pytest = [str(PYTHON), "-m", "pytest", *pytest_args]
    if os.geteuid() != 0:
        pytest = [*user_namespace_prefix(), *pytest]
    return subprocess.call(pytest, cwd=ROOT)


def user_namespace_prefix() -> list[str]:
    """Run a command as root of a user namespace with its own network.

    The network tests build namespaces, veth pairs, nftables and tc rules. A
    non-root user gets all of them, for this run only, inside a user
    namespace where it is root; ``lab/in_user_namespace.sh`` sets it up.
    """
    unshare = ["unshare", "--user", "--map-root-user", "--net", "--mount"]
    probe = subprocess.run([*unshare, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        reason = probe.stderr.strip().splitlines()[-1:] or ["failed"]
        sys.exit(
            "error: the network tests need root or unprivileged user namespaces, "
            f"and `unshare --user --net` says: {reason[0]} (run as root)"
        )
    return [*unshare, "sh", str(ROOT / "tests" / "in_user_namespace.sh")]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run server and client locally")
    demo_parser.add_argument("--seconds", type=float, default=10.0)
    demo_parser.add_argument("--port", type=int, default=1234, help="signaling port")
    commands.add_parser("test", help="run the whole test suite; other arguments go to pytest")
    commands.add_parser("setup", help="create .venv with everything the tests need")
    # parse_known_args: `dev.py test -x -k name` hands -x and -k to pytest.
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "test":
        parser.error("unrecognized arguments: " + " ".join(rest))
    if sys.version_info < (3, 10):
        sys.exit("error: Python 3.10 or newer is needed")
    if args.command == "demo":
        return demo(args.seconds, args.port)
    if args.command == "test":
        return test(rest)
    setup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
