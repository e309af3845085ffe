"""The guard for code that reaches into aiortc's private parts.

The client's jitter buffer and NACK generator, its reading of the receiver's
RTP timestamp origin and the server's reading of its sender's all depend on
names aiortc does not promise to keep. Each checks them with these helpers
and refuses to run against any aiortc but the one it was written for, rather
than misbehave quietly.
"""

from __future__ import annotations

import aiortc

#: The aiortc release whose private parts this project was written against.
#: Keep equal to the pin in requirements.txt.
SUPPORTED_AIORTC_VERSION = "1.16.0"


class IncompatibleAiortcError(RuntimeError):
    """The installed aiortc is not the one our hooks into it were written for."""


def check_aiortc_version() -> None:
    version = getattr(aiortc, "__version__", None)
    if version != SUPPORTED_AIORTC_VERSION:
        raise IncompatibleAiortcError(
            f"this project's hooks into aiortc were written for aiortc "
            f"{SUPPORTED_AIORTC_VERSION}, found {version}. Re-read the aiortc "
            f"modules they name, then update them and the pin together."
        )


def code_names(function: object) -> tuple[str, ...]:
    """Return the attribute and global names `function`'s bytecode uses."""
    code = getattr(function, "__code__", None)
    return code.co_names if code is not None else ()
