"""Command-line conventions both programs share.

Flags that can also be set from the environment, and what ``-v`` means.

Containers configure programs through environment variables, people through
flags. Every long flag ``--signaling-host`` reads ``BALLTRACKER_SIGNALING_HOST``
as its default, so both work with one parser. The environment only supplies
defaults: whatever is on the command line wins, in any spelling argparse
accepts (``--dur 5``, ``--duration=5``, ``-vv``).
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Mapping, Optional, Sequence

#: Every environment variable either program reads starts with this, so that
#: none collides with a CI shell's or a Kubernetes service link's
#: (``SERVER_PORT``, ``VERBOSE``, ``DISPLAY``).
ENVIRONMENT_PREFIX = "BALLTRACKER_"


def environment_name(flag: str) -> str:
    """``--signaling-host`` -> ``BALLTRACKER_SIGNALING_HOST``."""
    return ENVIRONMENT_PREFIX + flag.lstrip("-").replace("-", "_").upper()


class EnvironmentArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose long flags default to environment variables.

    Values from the environment go through the same ``type`` conversion and
    ``choices`` check as the command line, so a bad
    ``BALLTRACKER_SIGNALING_PORT=abc`` is reported like a bad
    ``--signaling-port abc``: one line, exit status 2.
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
            action.built_in_default = action.default  # type: ignore[attr-defined]
        return action

    def parse_known_args(  # type: ignore[override]
        self, args: Optional[Sequence[str]] = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        counters = self._apply_environment()
        try:
            parsed, extras = super().parse_known_args(args, namespace)
        finally:
            for action in self._actions:
                if hasattr(action, "built_in_default"):
                    action.default = action.built_in_default
        # A count flag starts from None here, so "-vv" counts from zero rather
        # than from the environment's value; only an absent flag takes it.
        for action, value in counters:
            if getattr(parsed, action.dest, None) is None:
                setattr(parsed, action.dest, value)
        return parsed, extras

    def environment_variables(self) -> dict[str, str]:
        """Map each flag's destination to its environment variable."""
        return {
            action.dest: action.environment_variable
            for action in self._actions
            if hasattr(action, "environment_variable")
        }

    def _apply_environment(self) -> list[tuple[argparse.Action, Any]]:
        """Make each variable that is set its flag's default; return the count flags."""
        counters: list[tuple[argparse.Action, Any]] = []
        for action in self._actions:
            variable = getattr(action, "environment_variable", None)
            if variable is None:
                continue
            default = action.built_in_default  # type: ignore[attr-defined]
            if variable in self._environ:
                default = self._from_environment(action, variable)
            if isinstance(action, argparse._CountAction):
                counters.append((action, default))
                action.default = None
            else:
                action.default = default
        return counters

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
            return bool(action.const) if truthy else bool(action.built_in_default)  # type: ignore[attr-defined]
        try:
            value = action.type(raw) if callable(action.type) else raw
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            self.error(f"{variable}={raw!r}: {exc}")
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(str, action.choices))
            self.error(f"{variable}={raw!r}: choose from {choices}")
        return value


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


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
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
