"""protocol.recording: the kept stream's IVF container and the truth CSV, read back."""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import pytest

from protocol.recording import (
    IvfWriter,
    RecordingError,
    frame_error,
    read_ivf,
    read_truth,
    stream_path,
    summarise,
    video_path,
)


def write_ivf(path: Path, frames: list[tuple[int, bytes]], codec: str = "vp8") -> None:
    writer = IvfWriter(open(path, "wb"), codec, 640, 480)
    for timestamp, data in frames:
        writer.write(timestamp, data)
    writer.close()


FRAMES = [(4_000_000_000 + n * 3000, bytes([n]) * (100 + n)) for n in range(10)]


def test_frames_and_their_timestamps_read_back_exactly(tmp_path: Path) -> None:
    path = tmp_path / "s.ivf"
    # Past 2**32: the timestamps are kept unwrapped, the wire's modulo 2**32.
    write_ivf(path, FRAMES)
    header, frames = read_ivf(path)
    assert (header.codec, header.width, header.height) == ("vp8", 640, 480)
    assert (header.numerator, header.denominator) == (1, 90000)
    assert list(frames) == FRAMES
    assert int.from_bytes(path.read_bytes()[24:28], "little") == len(FRAMES)


def test_ffmpeg_reads_the_file_as_vp8_ivf(tmp_path: Path) -> None:
    # A real VP8 stream, so FFmpeg's demuxer and decoder have something to chew.
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 64, 48, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 90000)
    encoder.framerate = 30
    encoded = []
    for n in range(5):
        frame = av.VideoFrame(64, 48, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([n * 40]) * plane.buffer_size)
        frame.pts = n * 3000
        encoded += [(n * 3000, bytes(p)) for p in encoder.encode(frame)]
    encoded += [(int(p.pts), bytes(p)) for p in encoder.encode(None)]
    path = tmp_path / "s.ivf"
    write_ivf(path, encoded)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "vp8"
        assert len(list(container.decode(stream))) == len(encoded)


def test_a_file_cut_mid_frame_reads_up_to_its_last_whole_frame(tmp_path: Path) -> None:
    path = tmp_path / "s.ivf"
    write_ivf(path, FRAMES)
    whole = path.read_bytes()
    # A killed writer: no frame count in the header, the last frame cut short.
    cut = whole[:24] + b"\0\0\0\0" + whole[28:-50]
    path.write_bytes(cut)
    _, frames = read_ivf(path)
    assert list(frames) == FRAMES[:-1]
    path.write_bytes(whole[:32])  # the header alone
    _, frames = read_ivf(path)
    assert list(frames) == []


def test_missing_foreign_and_unknown_codec_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="cannot read"):
        read_ivf(tmp_path / "absent.ivf")
    foreign = tmp_path / "picture.ivf"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(RecordingError, match="not an IVF"):
        read_ivf(foreign)
    vp9 = tmp_path / "vp9.ivf"
    write_ivf(vp9, FRAMES)
    data = bytearray(vp9.read_bytes())
    data[8:12] = b"VP90"
    vp9.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match="not a VP8 or H.264"):
        read_ivf(vp9)


def test_truth_rows_by_pts_and_a_cut_last_row(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text(
        "pts,true_x,true_y,reported_x,reported_y,error_px,latency_ms\n"
        "0,100.0000,50.0000,100.0100,50.0000,0.0100,12.5000\n"
        "3000,110.0000,55.0000,,,,\n"
        "6000,120.0000\n"
    )
    truth = read_truth(path)
    assert sorted(truth) == [0, 3000]
    assert truth[0].live_error_px == pytest.approx(0.01) and truth[0].live_answered
    assert truth[3000].live_error_px is None and not truth[3000].live_answered
    assert frame_error(truth[0], 103.0, 54.0) == pytest.approx(5.0)
    not_csv = tmp_path / "other.csv"
    not_csv.write_text("a,b\n1,2\n")
    with pytest.raises(RecordingError, match="not a session's per-frame CSV"):
        read_truth(not_csv)
    with pytest.raises(RecordingError, match="cannot read"):
        read_truth(tmp_path / "absent.csv")


def test_summary_shape_matches_the_reports() -> None:
    summary = summarise([1.0, 2.0, 3.0, 4.0], (0.5, 0.95))
    assert summary == {"mean": 2.5, "max": 4.0, "p50": 2.5, "p95": pytest.approx(3.85)}
    empty = summarise([], (0.5,))
    assert empty == {"mean": None, "max": None, "p50": None}


def test_recording_files_share_the_sessions_prefix(tmp_path: Path) -> None:
    name = "session-20261203T190717-0001"
    assert video_path(tmp_path, name).name == f"{name}.mp4"
    assert stream_path(tmp_path, name).name == f"{name}.ivf"
