"""``--detector`` (ours, shipped, ``module:Class``) in either ``--detect-in`` placement,
with the real client and server over WebRTC on loopback."""

from __future__ import annotations

import csv
import statistics
import textwrap
from pathlib import Path

import pytest

from lab.programs import close_all, free_port, read_reports, start_client, start_server

pytestmark = [pytest.mark.timeout(180), pytest.mark.e2e]

STREAM_S = 5.0

USER_MODULE = textwrap.dedent(
    """
    from client.detection.detector import CentroidDetector

    class SometimesFails:
        '''The centroid detector, except that every fifth frame raises.'''

        used_window = False

        def __init__(self):
            self._inner = CentroidDetector()
            self._calls = 0

        def detect(self, luma):
            self._calls += 1
            if self._calls % 5 == 0:
                raise RuntimeError("this frame is too hard")
            return self._inner.detect(luma)

    class Broken:
        def __init__(self):
            raise OSError("model.onnx not found")

        def detect(self, luma):
            return None
    """
)


@pytest.fixture
def user_path(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "user_detectors_h23.py").write_text(USER_MODULE)
    return {"PYTHONPATH": str(tmp_path)}


@pytest.mark.parametrize(
    "flags,message",
    [
        (["no_such_module_h23:Thing"], "cannot import no_such_module_h23"),
        (["user_detectors_h23:Missing"], "user_detectors_h23 has no Missing"),
        (["user_detectors_h23:Broken"], "Broken() failed: OSError: model.onnx not found"),
        (
            ["user_detectors_h23:Broken", "--detect-in", "inline"],
            "Broken() failed: OSError: model.onnx not found",
        ),
        (["centroids"], "expected centroid, hough, kalman, process, inline or module:Class"),
        (["inline", "--detect-in", "process"], "say --detector centroid --detect-in process"),
    ],
)
def test_a_missing_or_broken_detector_is_one_line_and_exit_2(
    user_path: dict[str, str], flags: list[str], message: str
) -> None:
    client = start_client(free_port(), "--detector", *flags, env=user_path)
    try:
        assert client.wait(timeout=60) == 2, client.describe()
        lines = client.stderr.strip().splitlines()
        assert message in lines[-1], client.describe()
        assert "Traceback" not in client.stderr
        if ":" in flags[0]:
            assert len(lines) == 1, client.describe()
    finally:
        client.close()


def run_session(
    tmp_path: Path, *client_flags: str, env: dict[str, str] | None = None
) -> tuple[dict, dict]:
    """The server's report of one session and the client's summary of it."""
    port = free_port()
    server = client = None
    try:
        server = start_server(
            port,
            "--once",
            "--duration",
            str(STREAM_S),
            "--speed",
            "600",
            "--report-dir",
            str(tmp_path),
        )
        client = start_client(port, *client_flags, env=env)
        assert client.wait(timeout=60) == 0, client.describe()
        assert server.wait(timeout=30) == 0, server.describe()
        [report] = read_reports(tmp_path)
        return report, client.json_documents()[-1]
    finally:
        close_all(client, server)


@pytest.mark.parametrize("placement", ["process", "inline"])
def test_a_detector_that_raises_on_some_frames_is_counted_not_fatal(
    tmp_path: Path, user_path: dict[str, str], placement: str
) -> None:
    report, summary = run_session(
        tmp_path,
        "--detector",
        "user_detectors_h23:SometimesFails",
        "--detect-in",
        placement,
        env=user_path,
    )
    answered, found = report["frames_answered"], report["frames_found"]
    # Every frame detected is answered; about a fifth of them without a ball.
    assert answered > 0 and 0.6 * answered <= found <= 0.9 * answered, report
    # And the client says how many frames its detector failed on.
    detector = summary["detector"]
    assert detector["failed"] == detector["detected"] - detector["found"] > 0, summary


#: The server sends the first latency figure after a second of answers; the
#: predictor aims at nothing before it, so the comparison starts after this.
LEAD_KNOWN_AFTER_S = 1.5


def arrival_errors_once_the_lead_is_known(directory: Path, report: dict) -> list[float]:
    rows = csv.DictReader((directory / f"{report['session']}.csv").read_text().splitlines())
    return [
        float(row["error_at_arrival_px"])
        for row in rows
        if row["error_at_arrival_px"] and int(row["pts"]) / 90000 >= LEAD_KNOWN_AFTER_S
    ]


def test_the_predictor_beats_the_centroid_detector_on_error_at_arrival(tmp_path: Path) -> None:
    """In both placements: it aims ahead only if the server's latency reaches it."""
    centroid, _ = run_session(tmp_path / "centroid")
    plain = arrival_errors_once_the_lead_is_known(tmp_path / "centroid", centroid)
    assert len(plain) > 10, centroid
    for placement, spec in (
        ("process", "client.detection.kalman:ConstantVelocityPredictor"),  # the long name too
        ("inline", "kalman"),
    ):
        directory = tmp_path / f"kalman-{placement}"
        predicted, _ = run_session(directory, "--detector", spec, "--detect-in", placement)
        aimed = arrival_errors_once_the_lead_is_known(directory, predicted)
        assert len(aimed) > 10, (placement, predicted)
        assert statistics.median(aimed) < statistics.median(plain), (placement, predicted, centroid)
        # And it pays for it at frame time: it answers where the ball will be.
        assert predicted["error_px"]["p50"] > centroid["error_px"]["p50"], placement
