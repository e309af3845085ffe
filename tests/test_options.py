import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lab.programs import load_program
from protocol.options import (
    EnvironmentArgumentParser,
    environment_name,
    port_number,
    positive_float,
    positive_int,
)


def parser(environ: dict[str, str]) -> EnvironmentArgumentParser:
    p = EnvironmentArgumentParser(prog="t", environ=environ)
    p.add_argument("--signaling-port", type=port_number, default=1234)
    p.add_argument("--codec", choices=("vp8", "h264"), default="vp8")
    p.add_argument("--duration", type=positive_float, default=None)
    p.add_argument("--once", action="store_true")
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


def test_environment_name() -> None:
    assert environment_name("--signaling-host") == "BALLTRACKER_SIGNALING_HOST"


def test_defaults_without_environment() -> None:
    args = parser({}).parse_args([])
    assert (args.signaling_port, args.codec, args.once, args.verbose) == (1234, "vp8", False, 0)


def test_environment_sets_defaults() -> None:
    environ = {
        "BALLTRACKER_SIGNALING_PORT": "4321",
        "BALLTRACKER_CODEC": "h264",
        "BALLTRACKER_ONCE": "true",
        "BALLTRACKER_VERBOSE": "2",
    }
    args = parser(environ).parse_args([])
    assert (args.signaling_port, args.codec, args.once, args.verbose) == (4321, "h264", True, 2)


def test_unprefixed_variables_are_ignored() -> None:
    environ = {"SIGNALING_PORT": "4321", "VERBOSE": "2", "DURATION": "10"}
    args = parser(environ).parse_args([])
    assert (args.signaling_port, args.verbose, args.duration) == (1234, 0, None)


@pytest.mark.parametrize(
    "argv", [["--signaling-port", "99"], ["--signaling-port=99"], ["--sig", "99"], ["--sig=99"]]
)
def test_command_line_wins_over_environment(argv: list[str]) -> None:
    args = parser({"BALLTRACKER_SIGNALING_PORT": "4321"}).parse_args(argv)
    assert args.signaling_port == 99


@pytest.mark.parametrize("argv", [["--dur", "5"], ["--dur=5"], ["--duration", "5"]])
def test_abbreviated_duration_beats_the_environment(argv: list[str]) -> None:
    assert parser({"BALLTRACKER_DURATION": "10"}).parse_args(argv).duration == 5


@pytest.mark.parametrize("argv,count", [(["-vv"], 2), (["-v"], 1), (["-v", "-v"], 2)])
def test_short_verbose_beats_the_environment(argv: list[str], count: int) -> None:
    assert parser({"BALLTRACKER_VERBOSE": "0"}).parse_args(argv).verbose == count
    # The environment's count is a default, not a starting point for -v.
    assert parser({"BALLTRACKER_VERBOSE": "2"}).parse_args(argv).verbose == count


def test_parsing_twice_does_not_leak_the_environment_into_the_defaults() -> None:
    p = parser({"BALLTRACKER_VERBOSE": "2", "BALLTRACKER_DURATION": "10"})
    p.parse_args([])
    verbose = next(a for a in p._actions if a.dest == "verbose")
    duration = next(a for a in p._actions if a.dest == "duration")
    assert (verbose.default, duration.default) == (0, None)


def test_false_values_for_switches() -> None:
    assert parser({"BALLTRACKER_ONCE": "0"}).parse_args([]).once is False


@pytest.mark.parametrize(
    "environ",
    [
        {"BALLTRACKER_SIGNALING_PORT": "abc"},
        {"BALLTRACKER_SIGNALING_PORT": "70000"},
        {"BALLTRACKER_CODEC": "av1"},
        {"BALLTRACKER_ONCE": "maybe"},
        {"BALLTRACKER_DURATION": "-1"},
    ],
)
def test_bad_environment_is_a_usage_error(
    environ: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parser(environ).parse_args([])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert next(iter(environ)) in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("t: error")]) == 1


def test_help_names_the_variable() -> None:
    assert "BALLTRACKER_SIGNALING_PORT" in parser({}).format_help()


def test_mapping_of_flags_to_variables() -> None:
    variables = parser({}).environment_variables()
    assert variables["signaling_port"] == "BALLTRACKER_SIGNALING_PORT"
    assert all(name.startswith("BALLTRACKER_") for name in variables.values())


@pytest.mark.parametrize(
    "convert,text",
    [(port_number, "-1"), (positive_float, "0"), (positive_float, "nan"), (positive_int, "0")],
)
def test_converters_reject(convert: object, text: str) -> None:
    with pytest.raises((argparse.ArgumentTypeError, ValueError)):
        convert(text)  # type: ignore[operator]


def test_display_does_not_read_x11s_variable() -> None:
    p = EnvironmentArgumentParser(prog="t", environ={"DISPLAY": ":0"})
    p.add_argument("--display", action="store_true")
    assert p.parse_args([]).display is False
    assert p.environment_variables() == {"display": "BALLTRACKER_DISPLAY"}


def test_variable_name_can_be_overridden() -> None:
    p = EnvironmentArgumentParser(prog="t", environ={"BALLTRACKER_WINDOW": "1"})
    p.add_argument("--display", action="store_true", environment_variable="BALLTRACKER_WINDOW")
    assert p.parse_args([]).display is True
    assert p.environment_variables() == {"display": "BALLTRACKER_WINDOW"}


# The promises on the real programs: the parsers they build, and one run.

ROOT = Path(__file__).resolve().parent.parent


def real_parser(path: str, environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return load_program(path).build_parser()


@pytest.mark.parametrize("path", ["server/server.py", "client/client.py"])
def test_programs_dur_5_beats_duration_10(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    p = real_parser(path, {"BALLTRACKER_DURATION": "10"}, monkeypatch)
    assert p.parse_args([]).duration == 10
    assert p.parse_args(["--dur", "5"]).duration == 5


@pytest.mark.parametrize("path", ["server/server.py", "client/client.py"])
def test_programs_vv_beats_verbose_0(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    p = real_parser(path, {"BALLTRACKER_VERBOSE": "0"}, monkeypatch)
    assert p.parse_args(["-vv"]).verbose == 2


@pytest.mark.e2e
def test_client_run_follows_the_command_line_not_the_environment() -> None:
    """``-vv`` logs debug lines although the environment says 0, and
    ``--conn 1`` gives up after about a second although it says 60."""
    environ = {
        **os.environ,
        "BALLTRACKER_VERBOSE": "0",
        "BALLTRACKER_CONNECT_TIMEOUT": "60",
    }
    started = time.monotonic()
    program = subprocess.run(
        [sys.executable, "client/client.py", "-vv", "--conn", "1", "--signaling-port", "1"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=40,
    )
    assert time.monotonic() - started < 30
    assert program.returncode == 1, program.stderr
    assert " DEBUG client.signaling: " in program.stderr


def test_client_detector_flags_read_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    p = real_parser(
        "client/client.py",
        {"BALLTRACKER_DETECTOR": "hough", "BALLTRACKER_DETECT_IN": "inline"},
        monkeypatch,
    )
    args = p.parse_args([])
    assert (args.detector, args.detect_in) == ("hough", "inline")
    args = p.parse_args(["--detector", "kalman", "--detect-in", "process"])
    assert (args.detector, args.detect_in) == ("kalman", "process")
    monkeypatch.delenv("BALLTRACKER_DETECTOR")
    monkeypatch.delenv("BALLTRACKER_DETECT_IN")
    # Unset: ours, and no place named (the detector process, DetectorChoice.from_flags).
    args = load_program("client/client.py").build_parser().parse_args([])
    assert (args.detector, args.detect_in) == ("centroid", None)
