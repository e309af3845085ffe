"""Encode each frame on the event loop rather than in aiortc's executor thread.

aiortc's ``RTCRtpSender._next_encoded_frame`` encodes with
``loop.run_in_executor(None, encoder.encode, ...)``: the loop wakes a pool
thread, the thread encodes, and wakes the loop again to packetise and send.
Two wake-ups of sleeping threads per frame, on the critical path; in the
loop both hand-offs shrink to a fraction (docs/latency.md has the stage
times).

What it costs: the loop is busy while a frame encodes (about a millisecond
at 640x480, several at 1080p). A session has nothing else to do meanwhile, its next frame
is a frame interval away; other sessions' packets and answers wait that
long. A server given one core, as deployed (one core per pod), gains nothing
from the thread either: the encode takes that core whichever thread runs it.
On a many-core machine serving many sessions, aiortc's thread lets encodes
of different sessions run at once (PyAV releases the GIL); ``--encoder-thread``
keeps it.

``encode_in_loop(sender)`` swaps one sender's private event loop reference
for a stand-in whose ``run_in_executor`` runs the function at once and
returns a finished future; everything else goes to the real loop. Like the
other hooks into aiortc it refuses any version but the supported one.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

from aiortc import RTCRtpSender

from protocol.aiortc_internals import (
    IncompatibleAiortcError,
    SenderPrivate,
    check_aiortc_version,
    code_names,
)


def check_inline_encoding_hook() -> None:
    """Raise ``IncompatibleAiortcError`` unless the sender encodes as the docstring says."""
    check_aiortc_version()
    names = code_names(getattr(RTCRtpSender, SenderPrivate.NEXT_ENCODED_FRAME, None))
    if SenderPrivate.LOOP not in names or "run_in_executor" not in names:
        raise IncompatibleAiortcError(
            "aiortc's RTCRtpSender._next_encoded_frame no longer encodes through "
            f"{SenderPrivate.LOOP}.run_in_executor"
        )


class InlineExecutorLoop:
    """An event loop whose ``run_in_executor`` runs the function right away, in the caller."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def run_in_executor(
        self, executor: Optional[Any], function: Callable[..., Any], *args: Any
    ) -> "asyncio.Future[Any]":
        future = self._loop.create_future()
        try:
            future.set_result(function(*args))
        except BaseException as exc:  # noqa: BLE001  the caller's await raises it, as before
            future.set_exception(exc)
        return future

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)


def encode_in_loop(sender: RTCRtpSender) -> None:
    """Make ``sender`` encode on its event loop; before it sends, idempotent.

    :raises IncompatibleAiortcError: aiortc is not the supported version, or
        the sender no longer encodes through its loop's ``run_in_executor``.
    """
    check_inline_encoding_hook()
    loop = getattr(sender, SenderPrivate.LOOP, None)
    if isinstance(loop, InlineExecutorLoop):
        return
    if not isinstance(loop, asyncio.AbstractEventLoop):
        raise IncompatibleAiortcError(
            f"{type(sender).__name__} keeps no event loop in {SenderPrivate.LOOP}"
        )
    setattr(sender, SenderPrivate.LOOP, InlineExecutorLoop(loop))
