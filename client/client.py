"""Entry point: ``python client/client.py --help``.

Connects to the server's signaling port, receives the ball video, finds the
ball in a separate detector process and sends each centre back over the
``coordinates`` data channel.
"""

from __future__ import annotations

# cv2 before anything that loads PyAV: both wheels bundle libxcb, and if av's
# copy loads first an OpenCV window hangs at 100% CPU (--display).
import cv2  # noqa: F401  isort:skip

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repository root importable instead of client/,
    # whose client.py would otherwise shadow the client package.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
from typing import Any, Optional, Sequence

from client.detector_process import DetectorProcess
from client.display import ClientDisplay
from client.session import ClientSession, SessionEnd, SessionOutcome
from client.signaling_client import ServerUnreachable, connect_with_retry
from protocol.options import EnvironmentArgumentParser, port_number, positive_float

logger = logging.getLogger("client")

EXIT_OK = 0
EXIT_FAILED = 1  # unreachable, lost the server, detector died
EXIT_REFUSED = 3  # the server is full

DETECTOR_START_TIMEOUT_S = 30.0


def build_parser() -> EnvironmentArgumentParser:
    parser = EnvironmentArgumentParser(
        prog="client.py",
        description="Track the server's bouncing ball and report its centre over WebRTC.",
    )
    parser.add_argument("--signaling-host", default="127.0.0.1", help="server host name or IP")
    parser.add_argument("--signaling-port", type=port_number, default=1234, help="TCP port")
    parser.add_argument(
        "--connect-timeout", type=positive_float, default=30.0,
        help="keep retrying the server for this many seconds",
    )
    parser.add_argument(
        "--duration", type=positive_float, default=None,
        help="stream this many seconds, then say bye and exit 0",
    )
    parser.add_argument(
        "--jitter-buffer", choices=("fast", "stock"), default="fast",
        help="fast releases each frame once complete; stock is aiortc's own",
    )
    parser.add_argument(
        "--reconnect", action="store_true", help="reconnect when the server goes away"
    )
    parser.add_argument("--display", action="store_true",
        # Not DISPLAY: that is X11's, set in every desktop session.
        environment_variable="SHOW_WINDOW", help="show the video and detection")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    return parser


def configure_logging(verbosity: int) -> None:
    level = logging.INFO if verbosity == 0 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbosity < 2:
        for name in ("aiortc", "aioice"):
            logging.getLogger(name).setLevel(logging.WARNING)


class TrackingClient:
    """Connects, runs sessions (again after a loss with ``reconnect``), and exits."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        self._detector = DetectorProcess()
        self._display = ClientDisplay() if args.display else None
        self._session: Optional[ClientSession] = None
        self._stop_reason: Optional[str] = None
        self._sessions = 0
        self._frames_received = 0
        self._results_sent = 0

    def stop(self, reason: str) -> None:
        self._stop_reason = self._stop_reason or reason
        if self._session is not None:
            self._session.stop(reason)

    async def run(self) -> int:
        args = self._args
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop, signal.Signals(signum).name)
        if args.duration is not None:
            loop.call_later(args.duration, self.stop, "duration reached")
        try:
            self._detector.start()
            # Spawning imports numpy and cv2 afresh (about a second); frames
            # that arrive before it is ready would go unanswered.
            if not await asyncio.to_thread(self._detector.wait_ready, DETECTOR_START_TIMEOUT_S):
                print("error: the detector process did not start", file=sys.stderr)
                return EXIT_FAILED
            if self._display is not None:
                self._display.start()
            return await self._run_sessions()
        finally:
            self._detector.stop()
            self._detector.close()
            if self._display is not None:
                self._display.close()
            print(json.dumps(self.summary(), indent=2), flush=True)

    async def _run_sessions(self) -> int:
        args = self._args
        while True:
            try:
                signaling = await self._connect()
            except ServerUnreachable as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_FAILED
            if signaling is None:  # stopped while connecting
                return EXIT_OK
            logger.info("connected to %s", signaling.peer)
            self._session = ClientSession(
                signaling, self._detector, args.jitter_buffer, self._display
            )
            if self._stop_reason:
                self._session.stop(self._stop_reason)
            outcome = await self._session.run()
            self._sessions += 1
            self._frames_received += self._session.frames_received
            self._results_sent += self._session.results_sent
            self._session = None
            logger.info("session ended: %s", outcome.reason)
            if outcome.end is SessionEnd.LOST and args.reconnect and not self._stop_reason:
                logger.warning("%s; reconnecting", outcome.reason)
                continue
            return self._exit_status(outcome)

    async def _connect(self) -> Any:
        args = self._args
        connecting = asyncio.create_task(
            connect_with_retry(args.signaling_host, args.signaling_port, args.connect_timeout)
        )
        while not connecting.done():
            await asyncio.wait({connecting}, timeout=0.1)
            if self._stop_reason and not connecting.done():
                connecting.cancel()
                return None
        return connecting.result()

    def _exit_status(self, outcome: SessionOutcome) -> int:
        if outcome.end is SessionEnd.REFUSED:
            print(f"error: the server refused the session: {outcome.reason}", file=sys.stderr)
            return EXIT_REFUSED
        if outcome.end is SessionEnd.LOST:
            print(f"error: {outcome.reason}", file=sys.stderr)
            return EXIT_FAILED
        return EXIT_OK

    def summary(self) -> dict[str, Any]:
        return {
            "sessions": self._sessions,
            "frames_received": self._frames_received,
            "results_sent": self._results_sent,
            "detector": dataclasses.asdict(self._detector.stats()),
        }


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    return asyncio.run(TrackingClient(args).run())


if __name__ == "__main__":
    sys.exit(main())
