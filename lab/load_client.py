"""A light load client: N tracking sessions to one server from one process and one loop.

``python lab/load_client.py --sessions 24 --duration 20`` (or ``python -m lab.load_client``)

Like LiveKit's load tester, it stands in for N real clients where running N
real ones would measure the clients: each real client decodes every frame
and runs a detector process, and on a 2-core machine 18 of them need more
than the one core the capacity benchmark gives them. The server cannot tell
the difference. Each session (``lab.load_session``) negotiates over the same
signaling, receives every frame through the same receiver hooks and answers
every frame on the ``coordinates`` channel, named by its RTP timestamp and
pts as the real client names it; it only skips decoding and detection, and
answers the frame's true centre (``lab.true_answers``).

**Which scene is whose.** The server gives its k-th session the scene of
seed ``--seed + k``, counting from 1 in the order it starts sessions. The
load client opens its sessions one at a time, each only once the previous
one's offer is in, so its i-th session (from 0) is the server's session
``--first-session + i``. That holds when the load client is the server's
only client since ``--first-session - 1`` sessions ago (a fresh server:
1, the default) and the scene settings match the server's flags. If they
do not, the answers are of the wrong scene and the server's error says so
at once (tens to hundreds of px), while its answered % and latency -- what
capacity is measured by -- are unaffected.

**Starting together.** Each session holds its answer until every offer is
in, then all answer at once (``LoadSession.answer``): the server's sessions
begin streaming within moments of each other, not one by one as their
offers came, and none of the offers is made by a server already busy
streaming the others.

Prints one line of JSON on stdout at the end: sessions started and how they
ended, frames received and answered, and this process's CPU over the
streaming. Exit status: 0 when every session streamed until the server or
``--duration`` ended it, 1 when the server was unreachable or a session was
lost, 3 when the server refused one, 2 for a usage error (one line).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: the repository root, not lab/, is what imports are relative to.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import json
import logging
import resource
import signal
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from client.media.hooks import check_hooks
from client.signaling_client import ServerUnreachable, connect_with_retry
from lab.load_session import LoadEnd, LoadOutcome, LoadSession
from lab.true_answers import SceneSettings, TrueAnswers
from protocol.aiortc_internals import IncompatibleAiortcError
from protocol.event_loop import EVENT_LOOPS, run
from protocol.options import configure_logging, port_number, positive_float, positive_int

logger = logging.getLogger("lab.load_client")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3

#: After a stop, how long the sessions get to say BYE and close before they
#: are cancelled (each bounds its own steps; this bounds them all).
SHUTDOWN_GRACE_S = 10.0


@dataclass(frozen=True)
class LoadSettings:
    host: str
    port: int
    sessions: int
    scene: SceneSettings
    first_session: int = 1
    duration: Optional[float] = None
    connect_timeout: float = 30.0
    handshake_timeout: float = 10.0
    access_token: Optional[str] = None


class LoadClient:
    """Lifecycle: ``run()`` once; ``stop()`` (signals, ``--duration``) ends every session."""

    def __init__(self, settings: LoadSettings) -> None:
        self._settings = settings
        self._sessions: list[LoadSession] = []
        self._tasks: list[asyncio.Task[LoadOutcome]] = []
        self._stop_reason: Optional[str] = None
        self._unreachable: Optional[str] = None
        #: (CPU seconds, wall time) when the sessions answered, and when they ended.
        self._streaming_from: Optional[tuple[float, float]] = None
        self._streaming_until: Optional[tuple[float, float]] = None

    def stop(self, reason: str) -> None:
        self._stop_reason = self._stop_reason or reason
        for session in self._sessions:
            session.stop(reason)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop, signal.Signals(signum).name)
        try:
            await self._open_sessions()
            if self._tasks:
                await self._wait_sessions()
            self._streaming_until = (_cpu_seconds(), time.monotonic())
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        outcomes = [task.result() for task in self._tasks if not task.cancelled()]
        print(json.dumps(self.summary(outcomes)), flush=True)
        return self._exit_status(outcomes)

    async def _open_sessions(self) -> None:
        """One at a time: each connects once the previous one's offer is in (see above)."""
        settings = self._settings
        connect_until = time.monotonic() + settings.connect_timeout
        for index in range(settings.sessions):
            if self._stop_reason:
                return
            try:
                signaling = await connect_with_retry(
                    settings.host,
                    settings.port,
                    # Rounded: the error line quotes it.
                    max(round(connect_until - time.monotonic(), 1), 0.1),
                    settings.access_token,
                )
            except ServerUnreachable as exc:
                self._unreachable = str(exc)
                self.stop("the server is unreachable")
                return
            number = settings.first_session + index
            session = LoadSession(
                signaling,
                TrueAnswers(settings.scene, number),
                settings.handshake_timeout,
                name=f"load-session-{number}",
            )
            self._sessions.append(session)
            if self._stop_reason:
                session.stop(self._stop_reason)
            self._tasks.append(asyncio.create_task(session.run()))
            try:
                # run() sets it on every path, its own waits bounded; this bounds ours.
                await asyncio.wait_for(session.offered.wait(), settings.handshake_timeout + 1.0)
            except asyncio.TimeoutError:
                pass
            if not session.offer_received:
                # Refused, or lost before its offer: the numbering of the
                # sessions after it would be a guess. The outcome says why.
                self.stop("a session failed to start")
                return
        # All offered: all answer at once, and begin streaming within
        # moments of each other, as N clients started together would.
        for session in self._sessions:
            session.answer()
        self._streaming_from = (_cpu_seconds(), time.monotonic())
        if settings.duration is not None:
            asyncio.get_running_loop().call_later(settings.duration, self.stop, "duration reached")
        logger.info("%d sessions offered, all answering", len(self._sessions))

    async def _wait_sessions(self) -> None:
        """Until every session ended; after a stop, at most SHUTDOWN_GRACE_S more."""
        waiting = set(self._tasks)
        while waiting:
            if self._stop_reason:
                _, waiting = await asyncio.wait(waiting, timeout=SHUTDOWN_GRACE_S)
                for task in waiting:
                    task.cancel()
                await asyncio.gather(*waiting, return_exceptions=True)
                return
            # Wake now and then to notice a stop: each session ends on its own.
            _, waiting = await asyncio.wait(waiting, timeout=0.5)

    def summary(self, outcomes: Sequence[LoadOutcome]) -> dict[str, Any]:
        cpu_pct = None
        if self._streaming_from is not None and self._streaming_until is not None:
            cpu = self._streaming_until[0] - self._streaming_from[0]
            wall = self._streaming_until[1] - self._streaming_from[1]
            cpu_pct = round(100.0 * cpu / wall, 1) if wall > 0 else None
        return {
            "sessions": self._settings.sessions,
            "sessions_started": len(self._sessions),
            "ends": dict(Counter(outcome.end.value for outcome in outcomes)),
            "frames_received": sum(s.frames_received for s in self._sessions),
            "answers_sent": sum(s.answers_sent for s in self._sessions),
            "frames_unanswered": sum(s.frames_unanswered for s in self._sessions),
            # This process, all threads, from the first offer to the last session's end.
            "cpu_pct": cpu_pct,
        }

    def _exit_status(self, outcomes: Sequence[LoadOutcome]) -> int:
        if self._unreachable is not None:
            print(f"error: {self._unreachable}", file=sys.stderr)
            return EXIT_FAILED
        refused = [o for o in outcomes if o.end is LoadEnd.REFUSED]
        if refused:
            print(f"error: the server refused a session: {refused[0].reason}", file=sys.stderr)
            return EXIT_REFUSED
        lost = [o for o in outcomes if o.end is LoadEnd.LOST]
        if lost or len(outcomes) < len(self._tasks):
            reason = lost[0].reason if lost else "a session did not close in time"
            print(f"error: {len(lost) or 1} session(s) failed: {reason}", file=sys.stderr)
            return EXIT_FAILED
        return EXIT_OK


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- command line ------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    defaults = SceneSettings()
    parser = argparse.ArgumentParser(
        prog="load_client.py",
        description="Open N tracking sessions to one server from one process; answer every "
        "frame with its true centre, without decoding.",
    )
    parser.add_argument("--signaling-host", default="127.0.0.1", help="server host name or IP")
    parser.add_argument("--signaling-port", type=port_number, default=1234, help="TCP port")
    parser.add_argument("--access-token", default=None, help="the server's access token, if any")
    parser.add_argument(
        "--sessions", type=positive_int, default=1, help="concurrent sessions (default: 1)"
    )
    parser.add_argument(
        "--duration",
        type=positive_float,
        default=None,
        help="end every session this many seconds after the first one began "
        "(default: when the server ends them)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=30.0,
        help="keep retrying an unreachable server this long (default: 30)",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=positive_float,
        default=10.0,
        help="seconds for each offer and each data channel (default: 10)",
    )
    parser.add_argument(
        "--first-session",
        type=positive_int,
        default=1,
        help="the server's number for our first session: 1 for a fresh server, "
        "1 + the sessions it served before otherwise (default: 1)",
    )
    scene = parser.add_argument_group("the server's scene flags (must match the server's)")
    scene.add_argument("--seed", type=int, default=defaults.seed)
    scene.add_argument("--width", type=positive_int, default=defaults.width)
    scene.add_argument("--height", type=positive_int, default=defaults.height)
    scene.add_argument("--radius", type=positive_float, default=defaults.radius)
    scene.add_argument("--speed", type=float, default=defaults.speed)
    scene.add_argument("--fps", type=positive_float, default=defaults.fps)
    parser.add_argument("--event-loop", choices=EVENT_LOOPS, default="uvloop")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    return parser


def settings_from(args: argparse.Namespace) -> LoadSettings:
    return LoadSettings(
        host=args.signaling_host,
        port=args.signaling_port,
        sessions=args.sessions,
        scene=SceneSettings(args.width, args.height, args.radius, args.speed, args.fps, args.seed),
        first_session=args.first_session,
        duration=args.duration,
        connect_timeout=args.connect_timeout,
        handshake_timeout=args.handshake_timeout,
        access_token=args.access_token,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.access_token is not None and not args.access_token.strip():
        parser.error("--access-token must not be empty (leave it unset for no token)")
    configure_logging(args.verbose)
    try:
        check_hooks()  # on another aiortc: one line now, not a failure per session
    except IncompatibleAiortcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return run(LoadClient(settings_from(args)).run(), args.event_loop)


if __name__ == "__main__":
    sys.exit(main())
