#!/usr/bin/env python3
"""Set up and run the project with nothing but Python 3.11+ on Linux.

    python3 dev.py demo    # venv + deps, then server and client for ~10 s, console open
    python3 dev.py test    # venv + deps + system packages, then the whole suite
    python3 dev.py test --fast  # only the tests that start no program,
                                # namespace, browser or display, on every
                                # core (docs/testing.md)
    python3 dev.py setup   # just the environment the tests need

Everything lands in ./.venv. System packages (the OpenCV wheel's libGL and
GLib; for the tests Xvfb, nftables, Chromium, ...) are installed with apt-get
when running as root on Debian/Ubuntu; otherwise the missing ones are named
on one line and the run stops. Whether a package is installed is asked of
dpkg, never guessed from a program's name on PATH: a look-alike ``convert``
or ``ip`` proves nothing. An entry ``a|b`` is satisfied by either package;
``a`` is the one installed.
"""

import sys

# Before anything else, so an older Python gets one line, not a traceback
# (asyncio.Runner and the pinned numpy and matplotlib need 3.11).
if sys.version_info < (3, 11):
    sys.exit(f"error: Python 3.11 or newer is needed; this is {sys.version.split()[0]}")

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sysconfig
import time
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
    "coturn",  # turnserver, the TURN relay of tests/test_turn_relay.py (run per test)
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


#: The fast loop's pytest -m expression: the slow markers of pytest.ini
#: (lab/markers.py holds the same list; tests/test_markers.py compares them).
FAST_MARKERS = "not e2e and not netns and not browser and not display and not docker"
#: The fast loop's pytest arguments. What is left is mostly CPU-bound, so it
#: runs on every core (pytest-xdist; 4 at most: each worker imports aiortc),
#: a test file per worker at a time: the CPU-heavy property tests of one file
#: then never compete with each other.
FAST_ARGS = ("-m", FAST_MARKERS, "-n", "auto", "--maxprocesses", "4", "--dist", "loadfile")
#: Rough sizes (Linux x86-64 wheels, measured on a fresh .venv), so nobody
#: wonders for minutes what is happening.
INSTALL_SIZES = {
    "requirements.txt": " (about 150 MB to download, 500 MB on disk, 1-3 minutes)",
    "requirements-test.txt": " (about 400 MB to download, 1 GB on disk, 2-5 minutes)",
}


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
    print(
        f"installing {len(missing)} system package(s) with apt-get: {' '.join(missing)} "
        "(apt-get prints the download size first)",
        flush=True,
    )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env)
    # -q, not -qq: keeps "Need to get N MB" and one line per package unpacked.
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)


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
    size = INSTALL_SIZES.get(requirements.name, "")
    print(
        f"installing the Python packages of {requirements.name} into {VENV}{size}; "
        "pip lists each one as it goes",
        flush=True,
    )
    run([str(PYTHON), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    run([str(PYTHON), "-m", "pip", "install", "--progress-bar", "on", "-r", str(requirements)])
    stamp.write_text(digest.hexdigest())


def free_port(preferred: int) -> int:
    """``preferred`` if nothing listens there on 127.0.0.1, else any free port."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise OSError("no free TCP port on 127.0.0.1")


def demo(seconds: float, port: int, http_port: int) -> int:
    """Server and client side by side, the console open; print both summaries."""
    ensure_system_packages(RUNTIME_PACKAGES)
    ensure_venv(ROOT / "requirements.txt")
    # Other ports if these are taken: a demo must not fail on a busy machine.
    port, http_port = free_port(port), free_port(http_port)
    common = ["--signaling-port", str(port)]
    started = time.time()
    server = subprocess.Popen(
        [
            str(PYTHON),
            "server/server.py",
            *common,
            "--http-port",
            str(http_port),
            "--once",
            "--duration",
            str(seconds),
            "--report-dir",
            "reports",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    print(
        f"console: http://127.0.0.1:{http_port}/ (open it now: it serves while the "
        f"demo runs, {seconds:g} s; longer with --seconds)",
        flush=True,
    )
    client = subprocess.Popen(
        [str(PYTHON), "client/client.py", *common], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        client_out, _ = client.communicate(timeout=seconds + 60)
        server_out, _ = server.communicate(timeout=15)
    except (KeyboardInterrupt, subprocess.TimeoutExpired):
        for process in (client, server):
            process.terminate()
        for process in (client, server):
            process.wait()
        return 1
    # Both print one JSON line per summary (for log shippers); a person
    # reads the indented form better.
    for who, output in (("server", server_out), ("client", client_out)):
        for line in output.splitlines():
            try:
                print(f"{who} summary:", json.dumps(json.loads(line), indent=2))
            except ValueError:
                print(line)
    reports = sorted(
        (p for p in (ROOT / "reports").glob("session-*.json") if p.stat().st_mtime >= started),
        key=lambda p: p.stat().st_mtime,
    )
    if reports:
        newest = reports[-1].with_suffix("")
        print(f"report: {newest}.json, per-frame {newest}.csv, plot {newest}.png")
    return client.returncode or server.returncode


def setup() -> None:
    ensure_system_packages(RUNTIME_PACKAGES + TEST_PACKAGES + python_headers_package())
    ensure_venv(ROOT / "requirements-test.txt")


def test(pytest_args: Sequence[str], fast: bool = False) -> int:
    setup()
    selection = FAST_ARGS if fast else ()
    pytest = [str(PYTHON), "-m", "pytest", *selection, *pytest_args]
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
    return [*unshare, "sh", str(ROOT / "lab" / "in_user_namespace.sh")]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser(
        "demo", help="run server and client locally for a few seconds, with the console"
    )
    demo_parser.add_argument("--seconds", type=float, default=10.0, help="how long to stream")
    demo_parser.add_argument(
        "--port", type=int, default=1234, help="signaling port (another if taken)"
    )
    demo_parser.add_argument(
        "--http-port", type=int, default=8080, help="console port (another if taken)"
    )
    test_parser = commands.add_parser(
        "test", help="run the whole test suite; other arguments go to pytest"
    )
    test_parser.add_argument(
        "--fast",
        action="store_true",
        help="leave out the tests marked e2e, netns, browser, display or docker "
        "and run the rest on every core",
    )
    commands.add_parser("setup", help="create .venv with everything the tests need")
    # parse_known_args: `dev.py test -x -k name` hands -x and -k to pytest.
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "test":
        parser.error("unrecognized arguments: " + " ".join(rest))
    if args.command == "demo":
        return demo(args.seconds, args.port, args.http_port)
    if args.command == "test":
        return test(rest, fast=args.fast)
    setup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
