import argparse

import pytest

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
    p.add_argument("--once", action="store_true")
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


def test_environment_name() -> None:
    assert environment_name("--signaling-host") == "SIGNALING_HOST"


def test_defaults_without_environment() -> None:
    args = parser({}).parse_args([])
    assert (args.signaling_port, args.codec, args.once, args.verbose) == (1234, "vp8", False, 0)


def test_environment_sets_defaults() -> None:
    environ = {"SIGNALING_PORT": "4321", "CODEC": "h264", "ONCE": "true", "VERBOSE": "2"}
    args = parser(environ).parse_args([])
    assert (args.signaling_port, args.codec, args.once, args.verbose) == (4321, "h264", True, 2)


def test_command_line_wins_over_environment() -> None:
    args = parser({"SIGNALING_PORT": "4321"}).parse_args(["--signaling-port", "99"])
    assert args.signaling_port == 99
    args = parser({"SIGNALING_PORT": "4321"}).parse_args(["--signaling-port=98"])
    assert args.signaling_port == 98


def test_false_values_for_switches() -> None:
    assert parser({"ONCE": "0"}).parse_args([]).once is False


@pytest.mark.parametrize(
    "environ",
    [{"SIGNALING_PORT": "abc"}, {"SIGNALING_PORT": "70000"}, {"CODEC": "av1"}, {"ONCE": "maybe"}],
)
def test_bad_environment_is_a_usage_error(
    environ: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parser(environ).parse_args([])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert next(iter(environ)) in err and "Traceback" not in err


def test_help_names_the_variable() -> None:
    assert "SIGNALING_PORT" in parser({}).format_help()


def test_mapping_of_flags_to_variables() -> None:
    assert parser({}).environment_variables()["signaling_port"] == "SIGNALING_PORT"


@pytest.mark.parametrize(
    "convert,text",
    [(port_number, "-1"), (positive_float, "0"), (positive_float, "nan"), (positive_int, "0")],
)
def test_converters_reject(convert: object, text: str) -> None:
    with pytest.raises((argparse.ArgumentTypeError, ValueError)):
        convert(text)  # type: ignore[operator]


def test_variable_name_can_be_overridden() -> None:
    p = EnvironmentArgumentParser(prog="t", environ={"DISPLAY": ":0", "SHOW_WINDOW": "1"})
    p.add_argument("--display", action="store_true", environment_variable="SHOW_WINDOW")
    assert p.parse_args([]).display is True
    assert p.environment_variables() == {"display": "SHOW_WINDOW"}
