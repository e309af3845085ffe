"""Re-score a recorded session offline: ``python client/client.py --replay <session>``.

A session recorded with the server's ``--record`` left, beside its report,
``<session>.ivf``: the encoded frames exactly as they left the server's
encoder (``protocol.recording``). This decodes every one of them with the
client's own decoder (``client.media.inline_decoder.make_decoder``: FFmpeg's
VP8 decoder, aiortc's H.264 one), runs the client's detector on every
picture and scores each centre against the frame's truth in
``<session>.csv``, as the server scores a live answer. The detector is the one
``--detector`` names (the centroid detector by default, or any other locator,
``client.detection.choice``), always inline: offline there is no network to
protect from a slow frame, and every frame is detected, none dropped.

A predictive locator (one with ``set_lead``) aims ahead of each frame by the
latency the server reports live. A replay has no live latency; it hands the
locator the recorded session's median latency (the report's
``latency_ms.p50``) before the first frame, which is what the live locator
was told on average, or nothing when there is no report (a killed server),
so the locator aims at the frame itself. Either way it is scored at frame
time, as every replayed answer is: the error at arrival needs the network.

On a lossless link the live client decoded the very same bits, so where the
live session answered a frame the replayed error equals the live one (the
CSV keeps 4 decimals). What it cannot replay is the network: no latency,
no lost or late frames. It prints the live summary's figures that remain,
with the detector's time per frame, and the largest difference from a live
answer.

It lives in the client, not in ``bench/``, because it *is* the client's
decoding and detection, and the client image (which ships ``client/`` and
``protocol/``) should be able to re-score what it was sent; the file format
and the scoring are in ``protocol.recording`` for the same reason.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from client.detection.choice import DetectorChoice
from client.detection.interface import Detector
from protocol.recording import (
    STREAM_SUFFIX,
    RecordingError,
    Truth,
    frame_error,
    read_ivf,
    read_truth,
    summarise,
)

ERROR_QUANTILES = (0.5, 0.95)
DETECTOR_QUANTILES = (0.5, 0.95, 0.99)
#: The report's suffixes a user may name instead of the session's prefix.
_KNOWN_SUFFIXES = (".ivf", ".json", ".seconds.csv", ".csv", ".mp4", ".png")

EXIT_OK = 0
EXIT_BAD_INPUT = 1


def session_base(path: Path) -> Path:
    """``reports/session-X`` from ``reports/session-X`` or any of its files."""
    name = path.name
    for suffix in _KNOWN_SUFFIXES:
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)])
    return path


def _report(base: Path) -> dict[str, Any]:
    """The session's report, or {} when there is none."""
    try:
        report = json.loads(base.with_name(base.name + ".json").read_text(encoding="utf8"))
    except (OSError, ValueError):
        return {}  # a server killed mid-session writes no report: see replay()
    return report if isinstance(report, dict) else {}


def _section_number(report: dict[str, Any], section: str, key: str) -> Optional[float]:
    """``report[section][key]`` when it is a number, else None."""
    part = report.get(section)
    value = part.get(key) if isinstance(part, dict) else None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _origin(report: dict[str, Any]) -> Optional[int]:
    """The sender's RTP timestamp of pts 0, from the report if there is one."""
    origin = _section_number(report, "recording", "rtp_timestamp_origin")
    return origin if isinstance(origin, int) else None


def recorded_latency_ms(report: dict[str, Any]) -> Optional[float]:
    """The live session's median latency, what a predictive locator is told; None without."""
    return _section_number(report, "latency_ms", "p50")


def _codec_parameters(codec: str) -> Any:
    from aiortc import RTCRtpCodecParameters

    mime = {"vp8": "video/VP8", "h264": "video/H264"}[codec]
    return RTCRtpCodecParameters(mimeType=mime, clockRate=90000, payloadType=96)


def replay(path: Path, choice: DetectorChoice) -> dict[str, Any]:
    """Decode, detect with ``choice``'s locator (inline) and score ``path``'s
    kept stream; return the summary.

    :raises RecordingError: a file is missing, foreign or unreadable.
    """
    from client.media.inline_decoder import make_decoder

    base = session_base(path)
    stream = base.with_name(base.name + STREAM_SUFFIX)
    if not stream.exists():
        raise RecordingError(
            f"no recorded stream {stream} (was the session recorded with the server's --record?)"
        )
    header, frames = read_ivf(stream)
    truth_path = base.with_name(base.name + ".csv")
    truth = read_truth(truth_path) if truth_path.exists() else {}
    if not truth:
        print(f"warning: no per-frame truth in {truth_path}: nothing to score", file=sys.stderr)
    report = _report(base)
    origin = _origin(report)
    lead_ms = recorded_latency_ms(report)
    decoder = make_decoder(_codec_parameters(header.codec))
    detector = choice.build("inline")
    detector.start()
    try:
        if lead_ms is not None:
            detector.set_lead(lead_ms / 1000.0)
        summary = _replay_frames(frames, origin, decoder, detector, truth)
    finally:
        detector.close()
    if summary["frames_in_stream"] == 0:
        raise RecordingError(f"{stream} holds no frames")
    return {
        "session": base.name,
        "codec": header.codec,
        "width": header.width,
        "height": header.height,
        "detector": choice.name,
        "lead_ms": lead_ms,
        **summary,
    }


def _replay_frames(
    frames: Iterator[tuple[int, bytes]],
    origin: Optional[int],
    decoder: Any,
    detector: Detector,
    truth: dict[int, Truth],
) -> dict[str, Any]:
    """Decode, detect and score every frame; the summary's counts and figures."""
    import av
    from aiortc.jitterbuffer import JitterFrame

    from client.detection.frame_exchange import luma_view

    in_stream = decoded = decode_errors = 0
    errors: list[float] = []
    detect_ms: list[float] = []
    found = 0
    without_truth = 0
    compared = 0
    largest_difference: Optional[float] = None
    started = time.monotonic()
    for timestamp, data in frames:
        in_stream += 1
        if origin is None:
            origin = timestamp  # the first frame a session sends has pts 0
        try:
            pictures = decoder.decode(JitterFrame(data=data, timestamp=timestamp - origin))
        except av.FFmpegError:
            decode_errors += 1
            continue
        for picture in pictures:
            decoded += 1
            pts = int(picture.pts) if picture.pts is not None else timestamp - origin
            detector.submit(pts, luma_view(picture))
            (result,) = detector.collect()
            detect_ms.append(result.detect_ms)
            frame = _nearest(truth, pts)
            if frame is None:
                without_truth += 1
                continue
            if result.x is None or result.y is None:
                continue
            found += 1
            error = frame_error(frame, result.x, result.y)
            errors.append(error)
            if frame.live_error_px is not None:
                compared += 1
                difference = abs(error - frame.live_error_px)
                if largest_difference is None or difference > largest_difference:
                    largest_difference = difference
    scored = decoded - without_truth
    return {
        "frames_in_stream": in_stream,
        "frames_decoded": decoded,
        "decode_errors": decode_errors,
        "frames_scored": scored,
        "frames_without_truth": without_truth,
        "frames_found": found,
        "found_ratio": found / scored if scored else None,
        "error_px": summarise(errors, ERROR_QUANTILES),
        "detector_ms": summarise(detect_ms, DETECTOR_QUANTILES),
        "live_answers_compared": compared,
        "largest_difference_from_live_px": largest_difference,
        "replay_s": time.monotonic() - started,
    }


def _nearest(truth: dict[int, Truth], pts: int) -> Optional[Truth]:
    # VP8 can be a tick off after the receiver's mapping; the kept stream is
    # exact, but match as the server does.
    for candidate in (pts, pts - 1, pts + 1):
        frame = truth.get(candidate)
        if frame is not None:
            return frame
    return None


def one_line(summary: dict[str, Any]) -> str:
    """The live session's closing line, less what only the network gives."""

    def fmt(value: Optional[float], digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    error, detector = summary["error_px"], summary["detector_ms"]
    difference = summary["largest_difference_from_live_px"]
    return (
        f"{summary['session']} replayed with {summary['detector']}: {summary['frames_found']}/{summary['frames_scored']} "
        f"frames found, error mean {fmt(error['mean'], 3)} max {fmt(error['max'], 3)} px, "
        f"detector p50 {fmt(detector['p50'], 2)} p99 {fmt(detector['p99'], 2)} ms per frame, "
        f"{summary['decode_errors']} decode errors; "
        f"vs live on {summary['live_answers_compared']} answered frames: "
        f"largest difference {fmt(difference, 4)} px"
    )


def main(path: Path, choice: DetectorChoice) -> int:
    try:
        summary = replay(path, choice)
    except RecordingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(summary, indent=2), flush=True)
    print(one_line(summary), file=sys.stderr, flush=True)
    return EXIT_OK
