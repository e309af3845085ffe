"""dev.py's set-up: packages are asked of dpkg, never guessed from PATH."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import dev

ABSENT = "balltracker-no-such-package"
ROOT = Path(dev.__file__).resolve().parent


def _impostor(directory: Path, name: str) -> None:
    program = directory / name
    program.write_text("#!/bin/sh\nexit 1\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)


def test_a_program_on_path_does_not_count_as_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (ABSENT, "convert", "Xvfb", "chromium"):
        _impostor(tmp_path, name)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert dev.missing_packages([ABSENT]) == [ABSENT]
    installed = dev.installed_packages(["imagemagick", "xvfb", "chromium"])
    assert installed is not None
    for package in ("imagemagick", "xvfb", "chromium"):
        listed = subprocess.run(
            ["dpkg-query", "--show", "--showformat=${db:Status-Abbrev}", package],
            capture_output=True,
            text=True,
        ).stdout
        assert (package in installed) == listed.startswith("ii"), package


def test_installed_packages_are_found_whatever_their_architecture() -> None:
    # libc6 is listed as libc6:amd64 (or :arm64): Multi-Arch: same.
    assert dev.missing_packages(["dpkg", "libc6", ABSENT]) == [ABSENT]


def test_an_entry_with_alternatives_is_met_by_either_package() -> None:
    assert dev.missing_packages([f"{ABSENT}|dpkg", f"dpkg|{ABSENT}"]) == []
    # Neither installed: the first one is what to install.
    assert dev.missing_packages([f"{ABSENT}|{ABSENT}-2", "dpkg"]) == [ABSENT]


def test_alternatives_name_the_first_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = [f"{ABSENT}|{ABSENT}-2", "dpkg"]
    monkeypatch.setattr(dev.os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit) as refused:
        dev.ensure_system_packages(wanted)
    assert str(refused.value).endswith(f"(install them: sudo apt-get install {ABSENT})")
    commands: list[list[str]] = []
    monkeypatch.setattr(dev.os, "geteuid", lambda: 0)
    monkeypatch.setattr(dev.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(dev, "run", lambda argv, **kwargs: commands.append(list(argv)))
    dev.ensure_system_packages(wanted)
    assert commands[-1][:2] == ["apt-get", "install"] and commands[-1][-1] == ABSENT
    assert not any("|" in word for command in commands for word in command)


def test_kubectl_comes_from_a_debian_package() -> None:
    """The kubectl tests (tests/test_deployment.py) fail without kubectl.

    Debian 12's kubernetes-client (1.20) is installed unless a `kubectl`
    package already owns /usr/bin/kubectl: the two cannot be installed together.
    """
    assert dev.KUBECTL in dev.TEST_PACKAGES
    assert dev.KUBECTL.split("|") == ["kubernetes-client", "kubectl"]
    owner = subprocess.run(
        ["dpkg-query", "--search", "/usr/bin/kubectl"], capture_output=True, text=True
    )
    assert owner.returncode == 0, "no package owns /usr/bin/kubectl: run python3 dev.py setup"
    assert owner.stdout.split(":")[0] in dev.KUBECTL.split("|")


def test_every_package_the_tests_need_is_installed_after_setup() -> None:
    packages = dev.RUNTIME_PACKAGES + dev.TEST_PACKAGES + dev.python_headers_package()
    assert dev.missing_packages(packages) == []


def test_pytest_options_pass_through_and_bad_flags_are_one_line(tmp_path: Path) -> None:
    script = Path(dev.__file__)
    listed = subprocess.run(
        [sys.executable, str(script), "test", "--collect-only", "-q", "tests/test_dev.py"],
        cwd=tmp_path,  # from another directory
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert listed.returncode == 0, listed.stderr
    assert "test_pytest_options_pass_through_and_bad_flags_are_one_line" in listed.stdout
    refused = subprocess.run(
        [sys.executable, str(script), "setup", "--bogus"], capture_output=True, text=True
    )
    assert refused.returncode == 2
    assert "unrecognized arguments: --bogus" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_fast_leaves_out_the_marked_tests_and_passes_the_rest_on() -> None:
    script = Path(dev.__file__)
    files = ["tests/test_cli_errors.py", "tests/test_markers.py"]
    marked = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", files[0]],
        cwd=script.parent,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout.count("tests/test_cli_errors.py::")
    fast = subprocess.run(
        [sys.executable, str(script), "test", "--fast", "-n", "0", "--co", "-q", *files],
        cwd=script.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert fast.returncode == 0, fast.stderr
    assert marked > 0 and f"({marked} deselected)" in fast.stdout  # e2e, all of them
    assert "tests/test_markers.py::test_the_fast_loop_leaves_out" in fast.stdout
    assert "tests/test_cli_errors.py::" not in fast.stdout


def test_fast_runs_on_every_core_with_the_markers_of_pytest_ini() -> None:
    assert dev.FAST_ARGS[:2] == ("-m", dev.FAST_MARKERS)
    assert (
        "-n" in dev.FAST_ARGS and "pytest-xdist==" in (ROOT / "requirements-test.txt").read_text()
    )


def test_an_older_python_gets_one_line_and_no_traceback() -> None:
    """dev.py checks the version before it imports or defines anything."""
    fake_310 = (
        "import runpy, sys; sys.version_info = (3, 10, 14, 'final', 0); "
        f"runpy.run_path({str(Path(dev.__file__))!r}, run_name='__main__')"
    )
    program = subprocess.run(
        [sys.executable, "-c", fake_310, "demo"], capture_output=True, text=True, timeout=30
    )
    assert program.returncode == 1
    assert program.stderr.strip().splitlines() == [
        f"error: Python 3.11 or newer is needed; this is {sys.version.split()[0]}"
    ]


def test_the_documented_subcommands_are_the_ones_it_has() -> None:
    usage = subprocess.run(
        [sys.executable, str(Path(dev.__file__)), "--help"], capture_output=True, text=True
    ).stdout
    documented = {
        line.split()[2]
        for line in (dev.__doc__ or "").splitlines()
        if line.strip().startswith("python3 dev.py ")
    }
    offered = set(usage.split("{", 1)[1].split("}", 1)[0].split(","))
    assert documented == offered == {"demo", "test", "setup"}


def test_demo_takes_another_console_port_when_its_own_is_taken() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = dev.free_port(port)
    assert other != port and 0 < other < 65536
    assert dev.free_port(other) == other


def test_the_user_namespace_script_exists() -> None:
    assert (Path(dev.__file__).parent / "lab" / "in_user_namespace.sh").is_file()
