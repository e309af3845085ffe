"""server.reports.recorder: the real server with --record, a real client, and what it leaves.

The annotated MP4 must open, hold one frame per frame sent (none dropped on
an idle enough machine, and every drop counted), last as long as the
session and show the live view's marks on the ball; a recorder that cannot
write must leave the session and its report complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

import av
import cv2
import numpy as np
import pytest

from lab.programs import free_port, read_reports, start_client, start_server, wait_for_reports
from server.core.ledger import FrameRecord
from server.core.scene import BallScene
from server.core.scenes import Scene, make_scene
from server.core.scenes.occlusion import OcclusionScene
from server.reports.recorder import DISK_RESERVE_BYTES, RecordingStats, SessionRecorder

pytestmark = [pytest.mark.timeout(180), pytest.mark.e2e]

STREAM_S = 4.0


def recorded_session(report_dir: Path, *flags: str) -> dict:
    port = free_port()
    server = start_server(
        port,
        "--once",
        "--duration",
        str(STREAM_S),
        "--report-dir",
        str(report_dir),
        "--record",
        *flags,
    )
    client = start_client(port)
    try:
        assert client.wait(timeout=60) == 0, client.describe()
        assert server.wait(timeout=60) == 0, server.describe()
        [report] = read_reports(report_dir)
        return report
    finally:
        client.close()
        server.close()


def csv_pts(report_dir: Path, session: str) -> list[int]:
    with open(report_dir / f"{session}.csv", newline="") as file:
        return [int(row["pts"]) for row in csv.DictReader(file)]


def ball_marks(picture: np.ndarray, radius: float) -> tuple[int, int]:
    """Green and red pixels within the ball's reach of the white ball's centre."""
    blue, green, red = (picture[..., n].astype(int) for n in range(3))
    white = ((blue > 200) & (green > 200) & (red > 200)).astype(np.uint8)
    # The ball is the largest white blob; the caption's letters are white too.
    count, _, stats, centroids = cv2.connectedComponentsWithStats(white)
    assert count > 1, "nothing white in the picture"
    ball = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    assert stats[ball, cv2.CC_STAT_AREA] > radius * radius, "no ball in the picture"
    cx, cy = centroids[ball]
    yy, xx = np.mgrid[: picture.shape[0], : picture.shape[1]]
    near = (xx - cx) ** 2 + (yy - cy) ** 2 <= (radius + 3) ** 2
    greenish = (green > 150) & (red < 110) & (blue < 110)
    reddish = (red > 150) & (green < 110) & (blue < 110)
    return int((greenish & near).sum()), int((reddish & near).sum())


def test_a_recorded_session_leaves_an_mp4_that_matches_its_report(tmp_path: Path) -> None:
    report_dir = tmp_path / "reports"
    report = recorded_session(report_dir)
    session = report["session"]
    recording = report["recording"]
    assert recording["errors"] == [], recording
    assert recording["video"] == f"{session}.mp4"
    assert recording["stream"] == f"{session}.ivf"
    assert report["frames_answered"] >= 0.9 * report["frames_sent"], report
    # Every frame sent is either in the video or counted as dropped.
    assert recording["frames_recorded"] + recording["frames_dropped"] == report["frames_sent"]
    assert recording["stream_frames"] + recording["stream_frames_dropped"] == report["frames_sent"]

    path = report_dir / f"{session}.mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (report["width"], report["height"])
        frames = list(container.decode(stream))
        duration_s = float(stream.duration * stream.time_base)
    assert len(frames) == recording["frames_recorded"]
    # Frame timing: each picture at the pts of a frame the session sent, in order.
    sent = csv_pts(report_dir, session)
    pts = [round(frame.time * 90000) for frame in frames]
    assert pts == sorted(pts) and set(pts) <= set(sent)
    if recording["frames_dropped"] == 0:
        assert pts == sent
    # Length: the session streamed duration_s; the video spans the same frames.
    assert abs(duration_s - report["duration_s"]) < 0.25, (duration_s, report["duration_s"])
    # faststart: the index (moov) comes before the media (mdat).
    head = path.read_bytes()[:4096]
    assert 0 <= head.find(b"moov") < head.find(b"mdat") or b"mdat" not in head

    # The live view's marks on the ball: the true centre (green), the answer (red).
    for frame in frames[len(frames) // 3 :: max(1, len(frames) // 6)]:
        green, red = ball_marks(frame.to_ndarray(format="bgr24"), 20.0)
        assert green >= 20 and red >= 5, (frame.pts, green, red)


def test_h264_sessions_are_recorded_too(tmp_path: Path) -> None:
    report_dir = tmp_path / "reports"
    report = recorded_session(report_dir, "--codec", "h264")
    recording = report["recording"]
    assert recording["errors"] == [] and recording["frames_recorded"] > 0, recording
    with av.open(str(report_dir / recording["stream"])) as container:
        # FFmpeg's IVF demuxer reads the H264 fourcc.
        assert container.streams.video[0].codec_context.name == "h264"
        assert len(list(container.decode(video=0))) == recording["stream_frames"]


@contextlib.contextmanager
def small_disk(size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (mount's syntax), mounted for the test."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    directory = Path(tempfile.mkdtemp(prefix="balltracker-full-"))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True
    )
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)
        directory.rmdir()


def test_a_nearly_full_disk_stops_the_recording_not_the_session() -> None:
    with small_disk("20m") as disk:
        report_dir = disk / "reports"
        port = free_port()
        server = start_server(
            port, "--once", "--duration", "6", "--report-dir", str(report_dir), "--record"
        )
        client = start_client(port)
        try:
            # Once the recorder is writing, something else fills the disk up
            # to 64 KiB short of the recorder's reserve.
            server.wait_for_output("streaming to", timeout=30)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(
                p.suffix == ".ivf" and p.stat().st_size > 16384 for p in report_dir.iterdir()
            ):
                time.sleep(0.1)
            time.sleep(1.0)
            usage = os.statvfs(disk)
            filler = usage.f_bavail * usage.f_frsize - DISK_RESERVE_BYTES + (64 << 10)
            with open(disk / "filler", "wb") as file:
                file.write(bytes(filler))
            assert client.wait(timeout=60) == 0, client.describe()
            assert server.wait(timeout=60) == 0, server.describe()
            [report] = wait_for_reports(report_dir, 1)
            assert report["end_reason"] == "duration reached"
            assert report["frames_answered"] >= 0.9 * report["frames_sent"], report
            recording = report["recording"]
            assert any("stopped: less than 16 MiB free" in e for e in recording["errors"]), (
                recording
            )
            # One clear line in the log, no traceback.
            lines = [line for line in server.stderr.splitlines() if "recording incomplete" in line]
            assert len(lines) == 1, server.stderr
            assert "Traceback" not in server.stderr
            # The reports are whole: one CSV row per frame sent.
            assert len(csv_pts(report_dir, report["session"])) == report["frames_sent"]
            # What was recorded before the stop is finished, and plays.
            assert 0 < recording["frames_recorded"] < report["frames_sent"], recording
            with av.open(str(report_dir / recording["video"])) as container:
                assert len(list(container.decode(video=0))) == recording["frames_recorded"]
        finally:
            client.close()
            server.close()


def scene(width: int, height: int, radius: float, name: str = "classic") -> Scene:
    return make_scene(name, BallScene.from_seed(width, height, radius, 300.0, 1), 30.0, 1)


def run_recorder(
    recorder: SessionRecorder, frames: Sequence[tuple[Optional[bytes], Sequence[FrameRecord]]]
) -> RecordingStats:
    """Start ``recorder``, hand it ``frames`` (encoded bytes, answers) at once, finish it."""

    async def feed() -> RecordingStats:
        await recorder.start()
        for n, (data, answers) in enumerate(frames):
            if data is not None:
                recorder.frame_encoded(n * 3000, data)
            recorder.frame_sent(n, n * 3000, answers, 0.1)
        return await recorder.finish()

    try:
        return asyncio.run(feed())
    finally:
        recorder.close()


def test_a_disk_that_fills_up_is_one_log_line_and_no_broken_video(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Something else filled the disk: the recorder's writes fail (ENOSPC).
    with small_disk("64k") as disk:
        recorder = SessionRecorder(disk, "session-z", scene(1920, 1080, 40.0), "vp8", 0)
        noise = np.random.default_rng(0)
        with caplog.at_level(logging.WARNING, "server.reports.recorder"):
            stats = run_recorder(recorder, [(noise.bytes(4000), []) for _ in range(60)])
        assert any("No space left on device" in e for e in stats.errors), stats
        [record] = caplog.records
        assert "session-z: recording incomplete" in record.getMessage()
        # No MP4 without its index; the IVF up to the failure stays readable.
        assert stats.video is None and not (disk / "session-z.mp4").exists()


def test_an_unwritable_directory_is_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The recorder itself, with its real worker process, in a directory that
    # is a file: nothing can be created there.
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    recorder = SessionRecorder(blocked, "session-x", scene(64, 48, 5.0), "vp8")
    with caplog.at_level(logging.WARNING, "server.reports.recorder"):
        stats = run_recorder(recorder, [(b"frame", [])])
    assert stats.video is None and stats.stream is None
    assert len(stats.errors) == 2 and all("Not a directory" in e for e in stats.errors), stats
    [record] = caplog.records
    assert "session-x: recording incomplete" in record.getMessage()


def test_a_recorder_that_falls_behind_drops_and_counts(tmp_path: Path) -> None:
    recorder = SessionRecorder(tmp_path, "session-y", scene(1920, 1080, 40.0), "vp8")
    answer = FrameRecord(0, 0, 100.0, 100.0, 0.0, True, 100.0, 100.0, 0.0, 5.0)
    # Four hundred 1080p frames at once: far more than the worker's 5 s backlog.
    stats = run_recorder(recorder, [(None, [answer])] * 400)
    assert stats.errors == []
    assert stats.frames_dropped > 0
    assert stats.frames_recorded + stats.frames_dropped == 400
    with av.open(str(tmp_path / "session-y.mp4")) as container:
        assert len(list(container.decode(video=0))) == stats.frames_recorded
    assert json.dumps(stats.as_dict())  # the report's section is plain JSON


def test_the_video_shows_the_session_s_own_scene(tmp_path: Path) -> None:
    # Not a white ball on black: the occluder the client saw is in every picture.
    occlusion = scene(320, 240, 20.0, "occlusion")
    assert isinstance(occlusion, OcclusionScene)
    recorder = SessionRecorder(tmp_path, "session-o", occlusion, "vp8")
    stats = run_recorder(recorder, [(None, [])] * 5)
    assert stats.errors == [] and stats.frames_recorded == 5
    with av.open(str(tmp_path / "session-o.mp4")) as container:
        last = list(container.decode(video=0))[-1].to_ndarray(format="gray")
    below_caption = last[80:]
    bar = below_caption[:, occlusion.left + 2 : occlusion.right - 2]
    # The bar's stripes (luma 60 and 80) against black around it.
    assert 40 < float(bar.mean()) < 90, float(bar.mean())
    assert float(below_caption[:, : max(occlusion.left - 25, 1)].mean()) < 40


def test_record_without_a_report_directory_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "server/server.py", "--record", "--http-port", "0"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--record needs --report-dir" in result.stderr
    assert "Traceback" not in result.stderr
