"""Entry point: ``python client/client.py --help``.

Connects to the server's signaling port, receives the ball video, finds the
ball (in a separate detector process, or with ``--detect-in inline`` on the
event loop) and sends each centre back over the ``coordinates`` data channel.
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

from typing import Optional, Sequence

from client.detection.choice import CENTROID, PLACEMENTS, DetectorChoice, detector_name
from client.detection.plugin import PluginError
from protocol.event_loop import EVENT_LOOPS, run
from protocol.ice_options import add_ice_arguments, ice_settings
from protocol.options import (
    EnvironmentArgumentParser,
    configure_logging,
    port_number,
    positive_float,
)


def build_parser() -> EnvironmentArgumentParser:
    parser = EnvironmentArgumentParser(
        prog="client.py",
        description="Track the server's bouncing ball and report its centre over WebRTC.",
    )
    parser.add_argument("--signaling-host", default="127.0.0.1", help="server host name or IP")
    parser.add_argument("--signaling-port", type=port_number, default=1234, help="TCP port")
    parser.add_argument(
        "--access-token",
        default=None,
        environment_variable="BALLTRACKER_ACCESS_TOKEN",
        help="the server's access token, presented before it offers (when the server has one)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=30.0,
        help="keep retrying an unreachable or full server for this many seconds",
    )
    parser.add_argument(
        "--duration",
        type=positive_float,
        default=None,
        help="stream this many seconds, then say bye and exit 0",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=positive_float,
        default=10.0,
        environment_variable="BALLTRACKER_HANDSHAKE_TIMEOUT",
        help="seconds the server has to offer, and ICE and DTLS to connect after the answer",
    )
    add_ice_arguments(parser)
    parser.add_argument(
        "--jitter-buffer",
        choices=("fast", "stock"),
        default="fast",
        help="fast releases each frame once complete; stock is aiortc's own",
    )
    parser.add_argument(
        "--reconnect", action="store_true", help="reconnect when the server goes away"
    )
    parser.add_argument(
        "--detector",
        type=detector_name,
        default=CENTROID,
        help="what finds the ball: centroid (ours), hough, kalman (a predictive tracker), "
        "or your own locator as module:Class (docs/scenes.md); process and inline, from "
        "before --detect-in, mean the centroid detector there",
    )
    parser.add_argument(
        "--detect-in",
        choices=PLACEMENTS,
        # None, not "process": a place --detector process|inline already names
        # must not be contradicted silently (DetectorChoice.from_flags).
        default=None,
        help="where the detector runs: process, a detector process fed through shared "
        "memory (when unset: a slow frame never stalls the networking); inline, on the "
        "event loop (two process hand-offs fewer per frame)",
    )
    parser.add_argument(
        "--decoder-thread",
        action="store_true",
        help="decode in aiortc's decoder thread, as stock aiortc does, "
        "instead of on the event loop (two thread hand-offs more per frame)",
    )
    parser.add_argument(
        "--trace-stages",
        type=Path,
        default=None,
        metavar="FILE",
        help="write each frame's stage times (JSON lines, time.monotonic) here; "
        "meaningful next to the server's only on one host",
    )
    parser.add_argument(
        "--display",
        action="store_true",
        help="show the video and detection",
    )
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="uvloop",
        help="the asyncio event loop to run on (uvloop: less overhead per packet)",
    )
    parser.add_argument(
        "--replay",
        type=Path,
        default=None,
        metavar="SESSION",
        environment_variable="BALLTRACKER_REPLAY",
        help="connect to nothing: decode a session the server recorded (--record), "
        "detect the ball in every frame and score it against the session's CSV "
        "(SESSION: report-dir/session-..., or any of its files)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.access_token is not None and not args.access_token.strip():
        parser.error("--access-token must not be empty (leave it unset for no token)")
    args.ice = ice_settings(args, args.ice_server)
    problem = args.ice.problem()
    if problem is not None:
        parser.error(problem)
    try:
        args.detection = DetectorChoice.from_flags(args.detector, args.detect_in)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        # Here, once, so a missing or broken class is one line and exit 2.
        args.detection.check()
    except PluginError as exc:
        print(f"error: --detector {exc}", file=sys.stderr)
        return 2
    configure_logging(args.verbose)
    if args.replay is not None:
        from client.replay import main as replay

        return replay(args.replay, args.detection)
    # Imported here, not at the top: the detector process is spawned, and a
    # spawned child re-imports this module; aiortc and PyAV at the top would
    # make every detector load them for nothing.
    from client.media.hooks import check_hooks
    from client.tracking_client import TrackingClient
    from protocol.aiortc_internals import IncompatibleAiortcError

    try:
        # Refuse to start, rather than fail the first session, on another aiortc.
        check_hooks()
    except IncompatibleAiortcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return run(TrackingClient(args).run(), args.event_loop)


if __name__ == "__main__":
    sys.exit(main())
