"""Entry point: ``python server/server.py --help``.

Streams a bouncing ball to each client that connects over signaling, scores
every answer against the frame it names, logs one progress line per second
per session, and serves the browser console on the HTTP port.
"""

from __future__ import annotations

# cv2 before anything that loads PyAV: both wheels bundle libxcb, and if av's
# copy loads first an OpenCV window hangs at 100% CPU (--display).
import cv2  # noqa: F401  isort:skip

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repository root importable instead of server/,
    # whose server.py would otherwise shadow the server package.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import signal
from typing import Awaitable, Optional, Sequence

from protocol.aiortc_internals import IncompatibleAiortcError
from protocol.event_loop import EVENT_LOOPS, run
from protocol.ice_options import add_ice_arguments, ice_settings, ice_urls
from protocol.ice_servers import IceSettings
from protocol.options import (
    EnvironmentArgumentParser,
    configure_logging,
    non_negative_float,
    port_number,
    positive_float,
    positive_int,
)
from protocol.stage_trace import StageTraceWriter
from server.console.display import ServerDisplay
from server.console.metrics import TrackingMetrics
from server.console.viewer import SessionViewers
from server.console.web_console import WebConsole, web_origin
from server.core.scenes import DEFAULT_SCENE, SCENES
from server.media.hooks import check_hooks
from server.reports.recorder import prepare_recorders
from server.sessions.session import SessionConfig
from server.sessions.tracking_server import TrackingServer


def build_parser() -> EnvironmentArgumentParser:
    parser = EnvironmentArgumentParser(
        prog="server.py",
        description="Stream a bouncing ball over WebRTC and score each client's tracking.",
    )
    parser.add_argument("--signaling-host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--signaling-port", type=port_number, default=1234, help="TCP port (0: any free port)"
    )
    parser.add_argument(
        "--http-port",
        type=port_number,
        default=8080,
        help="port of the console, its API, /readyz, /livez and /metrics; 0 turns it off "
        "(unlike --signaling-port, where 0 means any free port)",
    )
    parser.add_argument(
        "--access-token",
        default=None,
        help="token the console, its API and TCP signaling ask for "
        "(/readyz, /healthz, /livez and /metrics stay open)",
    )
    parser.add_argument(
        "--max-viewers",
        type=positive_int,
        default=4,
        help="console viewers (WHEP) allowed at once, over all sessions",
    )
    parser.add_argument("--width", type=positive_int, default=640, help="frame width (even)")
    parser.add_argument("--height", type=positive_int, default=480, help="frame height (even)")
    parser.add_argument("--radius", type=positive_float, default=20.0, help="ball radius, px")
    parser.add_argument("--speed", type=float, default=300.0, help="ball speed, px/s")
    parser.add_argument("--fps", type=positive_float, default=30.0, help="frames per second")
    parser.add_argument("--seed", type=int, default=0, help="seed of the start position")
    parser.add_argument("--codec", choices=("vp8", "h264"), default="vp8", help="video codec")
    parser.add_argument(
        "--scene",
        choices=tuple(SCENES),
        default=DEFAULT_SCENE,
        environment_variable="BALLTRACKER_SCENE",
        help="what the picture shows besides the ball (docs/scenes.md)",
    )
    parser.add_argument(
        "--duration",
        type=positive_float,
        default=None,
        help="end each session after this many seconds (default: when the client leaves)",
    )
    parser.add_argument("--once", action="store_true", help="exit after the first session")
    parser.add_argument(
        "--max-sessions",
        type=positive_int,
        # Sessions one core carries at >= 99 % answered and p99 <= 20 ms
        # (bench/capacity.py); k8s/ and docker-compose.yml use the same.
        default=10,
        help="concurrent sessions allowed",
    )
    parser.add_argument(
        "--max-sessions-per-peer",
        type=positive_int,
        default=4,
        environment_variable="BALLTRACKER_MAX_SESSIONS_PER_PEER",
        help="sessions and pending handshakes one source address may hold (behind SNAT "
        "every client shares one address: set it to --max-sessions there)",
    )
    parser.add_argument(
        "--silence-timeout",
        type=positive_float,
        default=10.0,
        environment_variable="BALLTRACKER_SILENCE_TIMEOUT",
        help="end a session whose client has not answered for this many seconds",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=positive_float,
        default=10.0,
        help="seconds a client has to answer the offer",
    )
    parser.add_argument(
        "--progress-interval",
        type=non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="log each session's progress at INFO this often (default 0: one line a "
        "second, at DEBUG only, i.e. with -v)",
    )
    parser.add_argument("--report-dir", type=Path, default=None, help="write reports here")
    parser.add_argument(
        "--report-max-mb",
        type=positive_float,
        default=200.0,
        environment_variable="BALLTRACKER_REPORT_MAX_MB",
        help="bound on --report-dir: old sessions' files go first, summaries last",
    )
    add_ice_arguments(parser, handed_to="the pages and WHEP players")
    parser.add_argument(
        "--own-ice-server",
        action="extend",
        type=ice_urls,
        default=None,
        metavar="URL",
        environment_variable="BALLTRACKER_OWN_ICE_SERVERS",
        help="STUN/TURN server of the server's own peer connections (default: none; "
        "a server whose host candidates the relay reaches needs none); repeatable",
    )
    parser.add_argument(
        "--stun",
        type=ice_urls,
        default=None,
        metavar="URL",
        help="kept for existing deployments: the same as --own-ice-server URL",
    )
    parser.add_argument(
        "--cors-origin",
        action="extend",
        type=cors_origins,
        default=None,
        metavar="ORIGIN",
        environment_variable="BALLTRACKER_CORS_ORIGINS",
        help="another origin (https://host[:port], or *) whose pages may use the WHEP "
        "endpoints (default: the console's own origin only); repeatable",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        environment_variable="BALLTRACKER_RECORD",
        help="write each session's annotated video (<session>.mp4) and its sent stream "
        "(<session>.ivf, for client.py --replay) beside its report; needs --report-dir",
    )
    parser.add_argument(
        "--encoder-thread",
        action="store_true",
        help="encode in aiortc's executor thread, as stock aiortc does, instead of on "
        "the event loop (two thread hand-offs more per frame; encodes of several "
        "sessions may then use several cores)",
    )
    parser.add_argument(
        "--trace-stages",
        type=Path,
        default=None,
        metavar="FILE",
        help="write each frame's stage times (JSON lines, time.monotonic) here; "
        "meaningful next to the client's only on one host",
    )
    parser.add_argument(
        "--display",
        action="store_true",
        help="show true and reported centres in a window",
    )
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="uvloop",
        help="the asyncio event loop to run on (uvloop: less overhead per packet)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    return parser


def cors_origins(text: str) -> list[str]:
    """argparse ``type``: origins separated by commas or spaces."""
    try:
        return [web_origin(part) for part in text.replace(",", " ").split()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def server_ice(args: argparse.Namespace) -> tuple[IceSettings, IceSettings]:
    """(handed to clients, the server's own): split horizon, one set of credentials."""
    handed = ice_settings(args, args.ice_server)
    own = ice_settings(args, [*(args.own_ice_server or ()), *(args.stun or ())])
    # The transport policy is the server's own; each browser picks its own (?relay=1).
    return IceSettings(handed.urls, handed.username, handed.credential, handed.turn_secret), own


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.width % 2 or args.height % 2:
        parser.error("--width and --height must be even (I420 frames)")
    if 2 * args.radius >= min(args.width, args.height):
        parser.error("--radius must leave the ball room to move")
    if args.speed < 0:
        parser.error("--speed must not be negative")
    if args.access_token is not None and not args.access_token.strip():
        # An empty token must not quietly mean "no authentication".
        parser.error("--access-token must not be empty (leave it unset for no token)")
    args.handed_ice, args.own_ice = server_ice(args)
    problem = args.handed_ice.problem("--ice-server") or args.own_ice.problem("--own-ice-server")
    if problem is not None:
        parser.error(problem)
    if args.record and args.report_dir is None:
        parser.error("--record needs --report-dir: the recordings go beside the reports")


async def serve(args: argparse.Namespace) -> int:
    try:
        # Refuse to start, rather than fail every session, on another aiortc.
        check_hooks()
    except IncompatibleAiortcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    config = SessionConfig(
        width=args.width,
        height=args.height,
        radius=args.radius,
        speed=args.speed,
        fps=args.fps,
        seed=args.seed,
        codec=args.codec,
        duration=args.duration,
        ice=args.own_ice,
        handshake_timeout=args.handshake_timeout,
        silence_timeout=args.silence_timeout,
        encoder_thread=args.encoder_thread,
        progress_interval=args.progress_interval,
        record=args.record,
        scene=args.scene,
    )
    try:
        stage_trace = (
            StageTraceWriter(args.trace_stages, "server") if args.trace_stages is not None else None
        )
    except OSError as exc:
        print(f"error: cannot write --trace-stages {args.trace_stages}: {exc}", file=sys.stderr)
        return 1
    if args.record:
        prepare_recorders()
    metrics = TrackingMetrics()
    viewers = SessionViewers(args.max_viewers, args.own_ice)
    metrics.count_viewers(lambda: viewers.count)
    server = TrackingServer(
        args.signaling_host,
        args.signaling_port,
        config,
        max_sessions=args.max_sessions,
        report_dir=args.report_dir,
        once=args.once,
        observer=metrics,
        watchers=viewers,
        stage_trace=stage_trace,
        max_sessions_per_peer=min(args.max_sessions_per_peer, args.max_sessions),
        access_token=args.access_token,
        report_max_bytes=int(args.report_max_mb * 1e6),
    )
    metrics.count_slots(args.max_sessions, lambda: server.free_slots)
    console = (
        WebConsole(
            args.signaling_host,
            args.http_port,
            server,
            metrics,
            viewers,
            access_token=args.access_token,
            ice=args.handed_ice,
            cors_origins=tuple(args.cors_origin or ()),
        )
        if args.http_port
        else None
    )
    display = (
        ServerDisplay(args.width, args.height, args.radius, server.latest_answer)
        if args.display
        else None
    )
    # Before listening: the first "signaling on" line tells supervisors (and
    # tests) that the server is up, and a SIGTERM from then on must be clean.
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, server.stop)
    try:
        await _listen(server.start(), args.signaling_host, args.signaling_port)
        if console is not None:
            await _listen(console.start(), args.signaling_host, args.http_port)
    except _CannotListen as exc:
        print(f"error: {exc}", file=sys.stderr)
        await server.stop_listening()
        if stage_trace is not None:
            stage_trace.close()
        return 1
    if display is not None:
        display.start()
    try:
        await server.run()
    finally:
        if display is not None:
            await display.stop()
        await viewers.stop()
        if console is not None:
            await console.stop()
        if stage_trace is not None:
            stage_trace.close()
    return 0


class _CannotListen(Exception):
    pass


async def _listen(starting: Awaitable[None], host: str, port: int) -> None:
    try:
        await starting
    except OSError as exc:
        raise _CannotListen(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    validate(parser, args)
    configure_logging(args.verbose)
    return run(serve(args), args.event_loop)


if __name__ == "__main__":
    sys.exit(main())
