"""Which asyncio event loop the programs run on: uvloop by default.

Every frame wakes each side's event loop several times (RTP in and out,
SRTP, the data channel, the detector's result), so the loop's own overhead
per wake-up is part of the latency budget. uvloop (libuv, a well-kept
drop-in loop that aiortc and aioice run on unchanged) spends less there than
the standard selector loop, both per network hop and in CPU per session
(docs/latency.md). ``--event-loop asyncio`` runs on the standard loop.
"""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")

EVENT_LOOPS = ("uvloop", "asyncio")


def run(main: Coroutine[Any, Any, T], event_loop: str = "uvloop") -> T:
    """``asyncio.run(main)`` on the named event loop."""
    if event_loop == "asyncio":
        return asyncio.run(main)
    if event_loop != "uvloop":
        raise ValueError(f"unknown event loop {event_loop!r}; choose from {EVENT_LOOPS}")
    import uvloop  # only the programs need it, not everything that imports protocol/

    # asyncio.run() takes no loop factory before Python 3.12; a Runner does.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
