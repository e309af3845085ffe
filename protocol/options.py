"""Command-line conventions both programs share.

Flags that can also be set from the environment, and what ``-v`` means.

Containers configure programs through environment variables, people through
flags. Every long flag ``--signaling-host`` reads ``SIGNALING_HOST`` as its
default, so both work with one parser and the command line always wins.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Mapping, Optional, Sequence


def environment_name(flag: str) -> str:
    """``--signaling-host`` -> ``SIGNALING_HOST``."""
    return flag.lstrip("-").replace("-", "_").upper()


class EnvironmentArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose long flags default to environment variables.

    Values from the environment go through the same ``type`` conversion and
    ``choices`` check as the command line, so a bad ``SIGNALING_PORT=abc``
    is reported like a bad ``--signaling-port abc``: one line, exit status 2.
    """

    def __init__(
        self, *args: Any, environ: Optional[Mapping[str, str]] = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._environ: Mapping[str, str] = os.environ if environ is None else environ

    def add_argument(self, *names: Any, **kwargs: Any) -> argparse.Action:
        """As argparse's, plus ``environment_variable=NAME`` to override the derived name."""
        override = kwargs.pop("environment_variable", None)
        action = super().add_argument(*names, **kwargs)
        long_flags = [n for n in names if isinstance(n, str) and n.startswith("--")]
        if long_flags and action.dest != "help":
            variable = override or environment_name(long_flags[0])
            suffix = f" [env {variable}]"
            if action.help is not None and action.help is not argparse.SUPPRESS:
                action.help += suffix
            elif action.help is None:
                action.help = suffix.strip()
            action.environment_variable = variable  # type: ignore[attr-defined]
        return action

    def parse_args(  # type: ignore[override]
        self, args: Optional[Sequence[str]] = None, namespace: Any = None
    ) -> argparse.Namespace:
        parsed = super().parse_args(args, namespace)
        given = set(_flags_given(args))
        for action in self._actions:
            variable = getattr(action, "environment_variable", None)
            if variable is None or variable not in self._environ:
                continue
            if any(flag in given for flag in action.option_strings):
                continue
            setattr(parsed, action.dest, self._from_environment(action, variable))
        return parsed

    def environment_variables(self) -> dict[str, str]:
        """Map each flag's destination to its environment variable."""
        return {
            action.dest: action.environment_variable
            for action in self._actions
            if hasattr(action, "environment_variable")
        }

    def _from_environment(self, action: argparse.Action, variable: str) -> Any:
        raw = self._environ[variable]
        if isinstance(action, argparse._CountAction) and raw.strip().isdigit():
            return int(raw)
        if action.nargs == 0:  # store_true / store_false / count
            truthy = raw.strip().lower() in ("1", "true", "yes", "on")
            falsy = raw.strip().lower() in ("", "0", "false", "no", "off")
            if not (truthy or falsy):
                self.error(f"{variable}={raw!r}: expected true/false")
            if isinstance(action, argparse._CountAction):
                return int(truthy)
            return bool(action.const) if truthy else bool(action.default)
        try:
            value = action.type(raw) if callable(action.type) else raw
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            self.error(f"{variable}={raw!r}: {exc}")
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(str, action.choices))
            self.error(f"{variable}={raw!r}: choose from {choices}")
        return value


def _flags_given(args: Optional[Sequence[str]]) -> list[str]:
    argv = sys.argv[1:] if args is None else list(args)
    return [a.split("=", 1)[0] for a in argv if a.startswith("-")]


def port_number(text: str) -> int:
    """argparse ``type`` for a TCP port."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def configure_logging(verbosity: int) -> None:
    """INFO by default, DEBUG with ``-v``; aiortc's own DEBUG only with ``-vv``."""
    level = logging.INFO if verbosity == 0 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbosity < 2:
        for name in ("aiortc", "aioice"):
            logging.getLogger(name).setLevel(logging.WARNING)
