"""Record a short session and turn it into the README's animated demo.

    python -m lab.demo                     # writes docs/demo.webp
    python -m lab.demo --output demo.webp --seconds 6 --width 480

Starts the real server (``--record``) and the real client on loopback for
a few seconds, then re-encodes the session's annotated recording
(``<session>.mp4``, see docs/recording.md) as an animated WebP that loops:
scaled down to 480 px wide, so that it stays a few hundred kB. The picture is
the recording's, which is the console's live view: the ball, its true
centre (green), the client's answer (red cross), their trails, and the
frame's error and latency.
"""

from __future__ import annotations

import argparse
import fractions
import json
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import av
import cv2

from lab.programs import ROOT, free_port, read_reports, start_client, start_server

DEFAULT_OUTPUT = ROOT / "docs" / "demo.webp"


def record(report_dir: Path, seconds: float, seed: int) -> dict:
    """Run one recorded session; its report."""
    port = free_port()
    server = start_server(
        port,
        "--once",
        "--duration",
        str(seconds),
        "--report-dir",
        str(report_dir),
        "--record",
        "--seed",
        str(seed),
    )
    client = start_client(port)
    try:
        if client.wait(timeout=60 + seconds) != 0 or server.wait(timeout=60) != 0:
            raise RuntimeError(f"the session failed:\n{server.describe()}\n{client.describe()}")
    finally:
        client.close()
        server.close()
    [report] = read_reports(report_dir)
    return report


def to_webp(mp4: Path, output: Path, width: int, step: int, quality: int) -> int:
    """Re-encode every ``step``-th frame of ``mp4`` as an animated WebP; frames written."""
    written = 0
    with (
        av.open(str(mp4)) as source,
        av.open(str(output), "w", format="webp", options={"loop": "0"}) as target,
    ):
        video = source.streams.video[0]
        height = round(video.height * width / video.width / 2) * 2
        stream = target.add_stream("libwebp_anim", options={"quality": str(quality)})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = fractions.Fraction(1, 1000)
        for n, frame in enumerate(source.decode(video)):
            if n % step:
                continue
            picture = cv2.resize(
                frame.to_ndarray(format="bgr24"), (width, height), interpolation=cv2.INTER_AREA
            )
            scaled = av.VideoFrame.from_ndarray(picture, format="bgr24").reformat(format="yuv420p")
            scaled.pts = round(frame.time * 1000)
            scaled.time_base = stream.time_base
            for packet in stream.encode(scaled):
                target.mux(packet)
            written += 1
        for packet in stream.encode(None):
            target.mux(packet)
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the session")
    parser.add_argument("--seed", type=int, default=3, help="the server's --seed")
    parser.add_argument("--width", type=int, default=480, help="width of the demo, px")
    parser.add_argument("--step", type=int, default=1, help="keep every n-th frame")
    parser.add_argument("--quality", type=int, default=80, help="WebP quality, 0-100")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="balltracker-demo-") as directory:
        report = record(Path(directory), args.seconds, args.seed)
        recording = report["recording"]
        if not recording["video"]:
            print(f"error: no recording: {recording['errors']}", file=sys.stderr)
            return 1
        frames = to_webp(
            Path(directory) / recording["video"], args.output, args.width, args.step, args.quality
        )
    summary = {
        "output": str(args.output),
        "bytes": args.output.stat().st_size,
        "frames": frames,
        "session": {k: report[k] for k in ("session", "frames_sent", "frames_answered")},
        "error_mean_px": report["error_px"]["mean"],
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
