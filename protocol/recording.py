"""A session's recording files, and the kept stream's container (IVF).

With ``--record`` the server writes, beside the session's report
(``<session>.json``, ``.csv``, ...), two files with the same session-id
prefix, so whatever counts or prunes a session's files by that prefix (the
report directory's retention) counts these too:

- ``<session>.mp4``: the annotated video, H.264 in MP4 (``server.reports.recorder``);
- ``<session>.ivf``: the encoded frames exactly as they left the server's
  encoder, in IVF (``server.media.stream_recorder``).

IVF (libvpx's container: a 32-byte file header, then a 12-byte header per
frame with its size and a 64-bit timestamp) holds VP8 (fourcc ``VP80``) as
every tool expects; the H.264 access units (Annex B, as RTP depayloads them)
go in with fourcc ``H264``, which FFmpeg's IVF demuxer reads too. Unlike
Annex B alone it keeps each frame's timestamp, and unlike Matroska (whole
milliseconds) it keeps the 90 kHz timestamp exactly. Timestamps are the RTP
timestamps the frames went out with: the sender's random origin plus the
frame's pts, not reduced modulo 2**32, so they stay monotonic and each one
modulo 2**32 is the wire's. The origin is in the report's ``recording``
section; a file without a report (a server killed mid-session) starts with
pts 0, the first frame a session sends.

A file ends where its writer stopped: the header's frame count is filled in
at close and ignored when reading, and a last frame cut short is dropped, so
a recording cut off by a killed server reads up to its last whole frame.

This module is in ``protocol`` because both images need it: the server
writes the stream, the client's replay (``client.replay``) reads it and
scores against the report's per-frame CSV.
"""

from __future__ import annotations

import csv
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

VIDEO_SUFFIX = ".mp4"
STREAM_SUFFIX = ".ivf"
VIDEO_CLOCK_RATE = 90000

IVF_SIGNATURE = b"DKIF"
_FILE_HEADER = struct.Struct("<4sHHIHHIIII")
_FRAME_HEADER = struct.Struct("<IQ")
#: Far more than any frame of this stream (a 1080p keyframe is ~100 kB).
MAX_FRAME_BYTES = 16 << 20

FOURCC_BY_CODEC = {"vp8": b"VP80", "h264": b"H264"}
CODEC_BY_FOURCC = {fourcc: codec for codec, fourcc in FOURCC_BY_CODEC.items()}


class RecordingError(Exception):
    """A recording file is missing, foreign or unreadable; the message says which."""


def video_path(report_dir: Path, session: str) -> Path:
    return report_dir / f"{session}{VIDEO_SUFFIX}"


def stream_path(report_dir: Path, session: str) -> Path:
    return report_dir / f"{session}{STREAM_SUFFIX}"


class IvfWriter:
    """Writes one IVF file, frame by frame; ``close`` fills in the frame count."""

    def __init__(self, file: BinaryIO, codec: str, width: int, height: int) -> None:
        fourcc = FOURCC_BY_CODEC.get(codec.lower())
        if fourcc is None:
            raise ValueError(f"no IVF fourcc for codec {codec!r}")
        self._file = file
        self.frames = 0
        file.write(
            _FILE_HEADER.pack(
                IVF_SIGNATURE,
                0,
                _FILE_HEADER.size,
                int.from_bytes(fourcc, "little"),
                width,
                height,
                VIDEO_CLOCK_RATE,
                1,
                0,
                0,
            )
        )

    def write(self, timestamp: int, data: bytes) -> None:
        self._file.write(_FRAME_HEADER.pack(len(data), timestamp))
        self._file.write(data)
        self.frames += 1

    def close(self) -> None:
        """Fill in the frame count and close the file."""
        try:
            self._file.seek(24)
            self._file.write(struct.pack("<I", self.frames))
        finally:
            self._file.close()


@dataclass(frozen=True)
class IvfHeader:
    codec: str
    width: int
    height: int
    #: The time base, as a fraction numerator / denominator of a second.
    numerator: int
    denominator: int


def read_ivf(path: Path) -> tuple[IvfHeader, Iterator[tuple[int, bytes]]]:
    """The header and the (timestamp, frame) pairs of ``path``.

    :raises RecordingError: missing, not IVF, or a codec this project does not send.
    """
    try:
        file = open(path, "rb")
    except OSError as exc:
        raise RecordingError(f"cannot read {path}: {exc.strerror or exc}") from None
    head = file.read(_FILE_HEADER.size)
    if len(head) < _FILE_HEADER.size or not head.startswith(IVF_SIGNATURE):
        file.close()
        raise RecordingError(f"{path} is not an IVF stream recording")
    _, _, header_size, fourcc, width, height, rate, scale, _, _ = _FILE_HEADER.unpack(head)
    codec = CODEC_BY_FOURCC.get(fourcc.to_bytes(4, "little"))
    if codec is None or header_size < _FILE_HEADER.size or rate <= 0 or scale <= 0:
        file.close()
        raise RecordingError(f"{path}: not a VP8 or H.264 IVF stream this project wrote")
    file.seek(header_size)
    return IvfHeader(codec, width, height, scale, rate), _frames(file)


def _frames(file: BinaryIO) -> Iterator[tuple[int, bytes]]:
    with file:
        while True:
            head = file.read(_FRAME_HEADER.size)
            if len(head) < _FRAME_HEADER.size:
                return  # the end, or a frame header cut off
            size, timestamp = _FRAME_HEADER.unpack(head)
            if size > MAX_FRAME_BYTES:
                return  # not a frame header: garbage after a cut
            data = file.read(size)
            if len(data) < size:
                return  # a frame cut off
            yield timestamp, data


@dataclass(frozen=True)
class Truth:
    """One frame the server sent, from the report's per-frame CSV."""

    pts: int
    true_x: float
    true_y: float
    #: The live session's error, or None where the frame went unanswered or no ball was found.
    live_error_px: Optional[float]
    live_answered: bool


def read_truth(csv_path: Path) -> dict[int, Truth]:
    """The report's per-frame rows by pts (``server.reports.report.CSV_COLUMNS``).

    :raises RecordingError: missing, or not a session's per-frame CSV.
    """
    try:
        with open(csv_path, newline="", encoding="utf8") as file:
            rows = list(csv.reader(file))
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordingError(f"cannot read {csv_path}: {exc}") from None
    if not rows:
        return {}  # a server killed before its first rows left the write buffer
    if rows[0][:3] != ["pts", "true_x", "true_y"] or "error_px" not in rows[0]:
        raise RecordingError(f"{csv_path} is not a session's per-frame CSV")
    columns = {name: n for n, name in enumerate(rows[0])}
    truth: dict[int, Truth] = {}
    for row in rows[1:]:
        if len(row) != len(columns):
            continue  # a last row cut off by a killed server
        try:
            error = row[columns["error_px"]]
            pts = int(row[columns["pts"]])
            truth[pts] = Truth(
                pts,
                float(row[columns["true_x"]]),
                float(row[columns["true_y"]]),
                float(error) if error else None,
                bool(row[columns["latency_ms"]]),
            )
        except ValueError:
            raise RecordingError(f"{csv_path}: unreadable row {row!r}") from None
    return truth


def frame_error(truth: Truth, x: float, y: float) -> float:
    """The distance the server scores, in px."""
    return math.hypot(x - truth.true_x, y - truth.true_y)


def quantile(values: list[float], q: float) -> Optional[float]:
    """Linear-interpolated ``q``-quantile of ``values`` (sorted), None when empty."""
    if not values:
        return None
    rank = q * (len(values) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)


def summarise(values: list[float], quantiles: tuple[float, ...]) -> dict[str, Optional[float]]:
    """``{"mean", "max", "p50", ...}`` in the shape of the session report's."""
    ordered = sorted(values)
    result: dict[str, Optional[float]] = {
        "mean": sum(ordered) / len(ordered) if ordered else None,
        "max": ordered[-1] if ordered else None,
    }
    for q in quantiles:
        result[f"p{q * 100:g}"] = quantile(ordered, q)
    return result
