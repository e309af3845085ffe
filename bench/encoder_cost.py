"""What one VP8 encode of our frames costs, by speed setting and by what the
thread does between frames.

``.venv/bin/python bench/encoder_cost.py``            (640x480 and 1920x1080)
``.venv/bin/python bench/encoder_cost.py --frames 30 --sizes 640x480``

Each row encodes ``--frames`` classic-scene frames with libvpx, aiortc's
options with ``cpu-used`` as given and the denoiser off (what the server
uses, ``server/media/codec_options.py``), and prints the median wall and CPU
time per encode, three ways:

- **loop**: frame after frame, as a micro-benchmark does;
- **sleep**: ``time.sleep`` for a frame interval between encodes, as a server
  with one session does (its thread idles until the next frame is due);
- **spin**: a busy-wait for the same interval instead.

On the 2-vCPU VM of docs/capacity.md the sleep rows cost up to twice the
loop rows: an encode after the core idled is slow, which is why the server's
stage table shows more per encode than a micro-benchmark.

A second table encodes in a loop at the server's ``cpu-used``, two ways:

- **what is encoded**: the ball moving, or one black frame over and over
  (nothing changes: no macroblock has anything to code);
- **how many encoders take turns** (``--encoders``), one frame each, as the
  sessions of one server do, each with its own reference frames (does a
  busy server's encode cost more because the others' frames evict its own
  from the caches?).
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):
    import common  # noqa: F401  # bench/common.py: puts the repository root on sys.path

import argparse
import shlex
import statistics
import time
from fractions import Fraction
from typing import Optional, Sequence

import av
import numpy as np

from bench.common import number
from bench.latency import machine_description
from server.core.renderer import yuv420p_frame
from server.core.scene import BallScene
from server.core.scenes.classic import ClassicScene
from server.media.codec_options import VP8_OPTION_OVERRIDES

FRAME_INTERVAL_S = 1 / 30
WAYS = ("loop", "sleep", "spin")
#: aiortc 1.16's Vp8Encoder options at 500 kbit/s (aiortc/codecs/vpx.py).
AIORTC_OPTIONS = {
    "bufsize": "500000",
    "deadline": "realtime",
    "lag-in-frames": "0",
    "minrate": "500000",
    "maxrate": "500000",
    "overshoot-pct": "15",
    "partitions": "0",
    "static-thresh": "1",
    "undershoot-pct": "100",
}


def vp8_context(width: int, height: int, cpu_used: str) -> av.codec.context.CodecContext:
    context = av.CodecContext.create("libvpx", "w")
    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    context.bit_rate, context.gop_size, context.qmin, context.qmax = 500_000, 3000, 2, 56
    context.time_base = Fraction(1, 90000)
    context.options = {**AIORTC_OPTIONS, **VP8_OPTION_OVERRIDES, "cpu-used": cpu_used}
    context.thread_count = 1
    return context


def wait(way: str, seconds: float) -> None:
    if way == "sleep":
        time.sleep(seconds)
    elif way == "spin":
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass


def measure(width: int, height: int, cpu_used: str, way: str, frames: int) -> tuple[float, float]:
    """Median (wall ms, CPU ms) of one encode, the first five frames left out."""
    scene = ClassicScene(BallScene.from_seed(width, height, 20.0, 300.0, 1), 30, 1)
    context = vp8_context(width, height, cpu_used)
    walls, cpus = [], []
    for index in range(frames + 5):
        frame = yuv420p_frame(*scene.render(index))
        frame.pts, frame.time_base = index * 3000, Fraction(1, 90000)
        wall, cpu = time.perf_counter(), time.thread_time()
        for packet in context.encode(frame):
            bytes(packet)
        walls.append(1000 * (time.perf_counter() - wall))
        cpus.append(1000 * (time.thread_time() - cpu))
        wait(way, FRAME_INTERVAL_S)
    return statistics.median(walls[5:]), statistics.median(cpus[5:])


def measure_shared(width: int, height: int, content: str, encoders: int, frames: int) -> float:
    """Median wall ms of one encode when ``encoders`` encoders take turns, in a loop."""
    scene = ClassicScene(BallScene.from_seed(width, height, 20.0, 300.0, 1), 30, 1)
    contexts = [
        vp8_context(width, height, VP8_OPTION_OVERRIDES["cpu-used"]) for _ in range(encoders)
    ]
    chroma = np.full((height // 2, width // 2), 128, dtype=np.uint8)
    black = np.zeros((height, width), dtype=np.uint8)
    walls = []
    for index in range(frames + 5):
        for context in contexts:
            planes = scene.render(index) if content == "ball" else (black, chroma, chroma)
            frame = yuv420p_frame(*planes)
            frame.pts, frame.time_base = index * 3000, Fraction(1, 90000)
            wall = time.perf_counter()
            for packet in context.encode(frame):
                bytes(packet)
            if index >= 5:
                walls.append(1000 * (time.perf_counter() - wall))
    return statistics.median(walls)


def frame_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not WIDTHxHEIGHT: {text!r}") from None
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise argparse.ArgumentTypeError(f"needs an even, positive width and height: {text!r}")
    return width, height


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=lambda text: [frame_size(item) for item in text.split(",") if item],
        default=[(640, 480), (1920, 1080)],
        metavar="WxH,...",
        help="frame sizes (default: 640x480,1920x1080)",
    )
    parser.add_argument("--frames", type=int, default=60, help="encodes per row (default: 60)")
    parser.add_argument(
        "--encoders",
        type=lambda text: [int(item) for item in text.split(",") if item],
        default=[1, 6, 12, 18],
        metavar="N,...",
        help="encoders taking turns, second table (default: 1,6,12,18)",
    )
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames must be positive")
    if not args.encoders or min(args.encoders) < 1:
        parser.error("--encoders needs positive counts")
    print(
        f"command: {shlex.join(sys.orig_argv if argv is None else ['bench/encoder_cost.py', *argv])}"
    )
    print(f"machine: {machine_description()}")
    print()
    print("| frame | cpu-used | between encodes | wall ms (median) | CPU ms (median) |")
    print("| --- | --- | --- | --- | --- |")
    for width, height in args.sizes:
        for cpu_used in ("-6", VP8_OPTION_OVERRIDES["cpu-used"]):
            for way in WAYS:
                wall, cpu = measure(width, height, cpu_used, way, args.frames)
                print(
                    f"| {width}x{height} | {cpu_used} | {way} | {number(wall, 2)} | {number(cpu, 2)} |",
                    flush=True,
                )
    print()
    print("| frame | what is encoded | encoders taking turns | wall ms (median) |")
    print("| --- | --- | --- | --- |")
    for width, height in args.sizes:
        for content in ("ball", "black"):
            for encoders in args.encoders:
                wall = measure_shared(width, height, content, encoders, args.frames)
                print(
                    f"| {width}x{height} | {content} | {encoders} | {number(wall, 2)} |", flush=True
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
