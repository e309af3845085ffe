"""The real server and client across an impaired network.

The server runs in one network namespace of a ``NetworkLab``, listening on
0.0.0.0; the client runs in the other and finds it by the host name
``ball-server``, as in a deployment: nothing here goes over loopback (each
report's peer must be the client's lab address).

One server serves every condition in turn; each condition is a fresh client
session of about 10 s of streaming. The per-frame CSV (rows in frame order)
gives the latency of the first and second half of a session, which shows a
growing backlog. ``pytest -s`` prints a table of all conditions at the end.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

from lab.network_lab import NetworkLab
from lab.programs import Program, read_reports, start_client, start_server, wait_for_reports

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

SIGNALING_PORT = 1234
#: The client's --duration includes its start (detector spawn, about 2-3 s),
#: so this leaves about 10 s of streaming per condition.
CLIENT_DURATION_S = 13


@dataclass(frozen=True)
class Measured:
    """One condition's session, from its report and per-frame CSV."""

    name: str
    frames_sent: int
    answered: float
    error_mean: float
    error_p95: float
    error_max: float
    latency_mean: float
    latency_p50: float
    latency_p95: float
    latency_max: float
    first_half_p50: float
    second_half_p50: float
    #: Packets the loss rule dropped, by sending side (0 without loss).
    dropped: dict[str, int]
    #: RTP packets drop_first_rtp's rule dropped, by sending side (0 without it).
    first_rtp_dropped: dict[str, int]
    #: Unanswered frames at the very end: those in flight when the client left.
    unanswered_tail: int
    #: Answered share of the frames before that tail.
    answered_before_tail: float
    #: Times the link adaptation lowered the sender's rate (server.core.congestion).
    rate_decreases: int

    def row(self) -> str:
        return (
            f"{self.name:<16} {self.frames_sent:>6} {self.answered:>8.1%} "
            f"{self.error_mean:>8.3f} {self.error_p95:>8.3f} {self.error_max:>8.3f} "
            f"{self.latency_p50:>7.1f} {self.latency_p95:>7.1f} "
            f"{self.first_half_p50:>7.1f} {self.second_half_p50:>7.1f} "
            f"{self.dropped['server']:>6} {self.dropped['client']:>6} "
            f"{self.first_rtp_dropped['server']:>7}"
        )


TABLE_HEADER = (
    f"{'condition':<16} {'frames':>6} {'answered':>8} {'err mean':>8} {'err p95':>8} "
    f"{'err max':>8} {'lat p50':>7} {'lat p95':>7} {'1st p50':>7} {'2nd p50':>7} "
    f"{'drop s':>6} {'drop c':>6} {'1st rtp':>7}"
)

#: Every condition measured in this module, printed as one table at the end.
RESULTS: dict[str, Measured] = {}


def _half_medians(csv_path: Path) -> tuple[float, float]:
    """Median latency of the answered frames in each half of the session."""
    with open(csv_path, newline="") as rows:
        latencies = [row["latency_ms"] for row in csv.DictReader(rows)]
    middle = len(latencies) // 2
    first, second = (
        statistics.median(float(v) for v in half if v)
        for half in (latencies[:middle], latencies[middle:])
    )
    return first, second


def _unanswered_tail(csv_path: Path) -> int:
    """How many frames at the end of the session went unanswered, in a row."""
    with open(csv_path, newline="") as rows:
        latencies = [row["latency_ms"] for row in csv.DictReader(rows)]
    answered = [i for i, v in enumerate(latencies) if v]
    return len(latencies) - (answered[-1] + 1 if answered else 0)


def _measured(
    name: str,
    report: dict[str, Any],
    csv_path: Path,
    dropped: dict[str, int],
    first_rtp_dropped: dict[str, int],
) -> Measured:
    first, second = _half_medians(csv_path)
    tail = _unanswered_tail(csv_path)
    return Measured(
        name=name,
        frames_sent=report["frames_sent"],
        answered=report["answered_ratio"],
        error_mean=report["error_px"]["mean"],
        error_p95=report["error_px"]["p95"],
        error_max=report["error_px"]["max"],
        latency_mean=report["latency_ms"]["mean"],
        latency_p50=report["latency_ms"]["p50"],
        latency_p95=report["latency_ms"]["p95"],
        latency_max=report["latency_ms"]["max"],
        first_half_p50=first,
        second_half_p50=second,
        dropped=dropped,
        first_rtp_dropped=first_rtp_dropped,
        unanswered_tail=tail,
        answered_before_tail=report["frames_answered"] / (report["frames_sent"] - tail),
        rate_decreases=report["rate_control"]["decreases"],
    )


class LabServer:
    """The server inside the lab, and how to run one client session against it."""

    def __init__(self, lab: NetworkLab, report_dir: Path) -> None:
        self.lab = lab
        self.report_dir = report_dir
        self.program = start_server(
            SIGNALING_PORT,
            "--report-dir",
            str(report_dir),
            prefix=lab.exec_argv("server", []),
            host="0.0.0.0",
        )

    def measure(
        self,
        name: str,
        impair: Callable[[NetworkLab], None],
        duration_s: float = CLIENT_DURATION_S,
    ) -> Measured:
        """One client session under ``impair``, from its first packet; the lab
        is cleared afterwards."""
        reports_before = len(read_reports(self.report_dir))
        impair(self.lab)
        client: Optional[Program] = None
        dropped = {"server": 0, "client": 0}
        first_rtp_dropped = {"server": 0, "client": 0}
        try:
            client = start_client(
                SIGNALING_PORT,
                "--duration",
                f"{duration_s:g}",
                prefix=self.lab.exec_argv("client", []),
                host="ball-server",
            )
            assert client.wait(timeout=duration_s + 30) == 0, client.describe()
            # Read before clear(), which removes the drop rules and their counters.
            dropped = {side: self.lab.loss_counter(side) for side in ("server", "client")}
            first_rtp_dropped = {
                side: self.lab.first_rtp_dropped(side) for side in ("server", "client")
            }
        finally:
            if client is not None:
                client.close()
            self.lab.clear()
        report = wait_for_reports(self.report_dir, reports_before + 1)[-1]
        # The client's BYE goes over TCP, and its closing DTLS alert over UDP: a
        # lost BYE segment waits for TCP's retransmission, so under loss the
        # server may see the peer connection close first.
        assert report["end_reason"] in ("client said bye", "connection closed"), report
        assert report["peer"].split(":")[0] == self.lab.address("client"), report
        measured = _measured(
            name,
            report,
            self.report_dir / f"{report['session']}.csv",
            dropped,
            first_rtp_dropped,
        )
        RESULTS[name] = measured
        print(f"\n{TABLE_HEADER}\n{measured.row()}")
        return measured

    def close(self) -> None:
        self.program.close()


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    available, why = NetworkLab.available()
    if not available:
        # As in test_network_lab.py: the project's setup installs these, so
        # their absence is a setup bug to see, not a reason to skip.
        pytest.fail(f"NetworkLab prerequisites missing: {why}", pytrace=False)
    with NetworkLab() as lab:
        server = LabServer(lab, tmp_path_factory.mktemp("impaired") / "reports")
        try:
            yield server
        finally:
            server.close()
            if RESULTS:
                print(f"\n\n{TABLE_HEADER}")
                for measured in RESULTS.values():
                    print(measured.row())


@pytest.fixture(scope="module")
def baseline(lab_server: LabServer) -> Measured:
    return lab_server.measure("baseline", lambda lab: None)


@pytest.mark.timeout(90)
def test_baseline_tracks_across_the_lab(baseline: Measured) -> None:
    assert baseline.answered >= 0.95, baseline
    assert baseline.error_p95 <= 1.0, baseline
    assert baseline.latency_p50 < 50, baseline


#: Under loss the session itself takes longer to set up: a lost SCTP INIT or
#: DCEP message is resent only after SCTP's 3 s initial RTO. Longer runs keep
#: about 10 s of streaming even then.
LOSSY_CLIENT_DURATION_S = 20


@pytest.mark.timeout(90)
def test_five_percent_loss(lab_server: LabServer) -> None:
    # 5 % of the packets each way, from the session's first packet on: video
    # (recovered by NACK/RTX), answers (retransmitted while fresh) and
    # signaling. A lost first frame is never recovered (NACKs start at the
    # first packet received); answers name their frames by RTP timestamp, so
    # it costs that frame only (test_first_rtp_packets_lost).
    measured = lab_server.measure("5% loss", lambda lab: lab.set_loss(5), LOSSY_CLIENT_DURATION_S)
    print(
        f"answered before the tail {measured.answered_before_tail:.2%}, tail "
        f"{measured.unanswered_tail}; latency mean {measured.latency_mean:.1f} ms, "
        f"max {measured.latency_max:.1f} ms"
    )
    # The loss rule really dropped packets, both ways (about 5 % of ~1000
    # server packets and ~600 client packets: measured 47-69 and 24-41).
    assert measured.dropped["server"] >= 10 and measured.dropped["client"] >= 5, measured
    assert measured.frames_sent >= 5 * 30, measured
    # The burst hand-off answers the frames a retransmission releases at once:
    # measured 99.8-100 % of the frames before the tail (4 runs); without it
    # 95.6-97.6 % (2 runs). The tail is the frames in flight when the client
    # left (0-1 measured); a lost BYE costs them a TCP retransmission, < 1 s.
    assert measured.answered_before_tail >= 0.99, measured
    assert measured.unanswered_tail <= 30, measured
    assert measured.answered >= 0.95, measured
    # Every answer is still scored against its own frame (a pts one frame
    # off would cost about 10 px). Measured: mean 0.006 px, max 0.058-0.084 px.
    assert measured.error_mean < 0.05, measured
    assert measured.error_max < 0.5, measured
    assert measured.error_p95 <= 0.1, measured
    # Losses must cost a retransmission's delay now and then, not build up:
    # a frame's latency may not carry the delays of every earlier loss.
    assert measured.second_half_p50 <= measured.first_half_p50 + 15, measured
    # A frame behind a hole waits for its retransmission; the client repeats
    # its NACK every 100 ms while the packet is missing. Measured with the
    # repeats (10 runs, 2 of them with both cores busy): p95 43-113 ms, mean
    # 12-22 ms, max 175-405 ms. Without them (5 runs): p95 236-1444 ms, mean
    # 49-164 ms, max 1.1-2.4 s; each run failed at least one of these bounds.
    assert measured.latency_p95 < 250, measured
    assert measured.latency_mean < 40, measured
    assert measured.latency_max < 800, measured


#: How many of the session's first RTP packets (server -> client) are lost.
#: Every frame of this stream fits one RTP packet (measured: the keyframe 855
#: bytes, the frames after it 170-1000), so 1 is exactly the keyframe, and 2
#: the keyframe and the first delta frame: the case issue 10 measured. Before
#: answers carried the RTP timestamp: 1 lost scored 10.0 px and latency p50
#: 41 ms, 2 lost 19.7 px and 73 ms, or 29.5 px when the encoder had skipped
#: the frame after the keyframe (measured 20-30 px, 41-73 ms; 5 ms unimpaired).
FIRST_RTP_LOST = (1, 2)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("lost", FIRST_RTP_LOST)
def test_first_rtp_packets_lost(lab_server: LabServer, lost: int) -> None:
    # aiortc's receiver takes the first RTP timestamp it sees as pts 0, so
    # without the first packets every pts it reports is early by the frames
    # lost, for the whole session. Answers carry the RTP timestamp as it was
    # on the wire, which the server maps through its own sender's origin: a
    # lost beginning must cost the frames lost (and those the decoder cannot
    # decode until the keyframe its PLI asks for), nothing more.
    measured = lab_server.measure(
        f"first {lost} RTP lost", lambda lab: lab.drop_first_rtp(lost, side="server")
    )
    print(
        f"latency mean {measured.latency_mean:.1f} ms, max {measured.latency_max:.1f} ms; "
        f"RTP dropped {measured.first_rtp_dropped}"
    )
    # Exactly the first packets, only server -> client: RTP, not STUN, DTLS or
    # RTCP (the session came up, so those went through).
    assert measured.first_rtp_dropped == {"server": lost, "client": 0}, measured
    assert measured.frames_sent >= 5 * 30, measured
    assert measured.answered >= 0.95, measured
    # Each answer scored against its own frame: one frame off costs ~10 px.
    assert measured.error_mean < 0.1, measured
    assert measured.error_p95 <= 1.0, measured
    # And no early pts inflating the latency (a frame early adds ~33 ms).
    assert measured.latency_p50 < 50, measured


DELAY_MS = 50


@pytest.mark.timeout(120)
def test_fifty_ms_delay_adds_its_latency_and_no_more(
    lab_server: LabServer, baseline: Measured
) -> None:
    # One way, on the video: the round trip frame -> answer grows by 50 ms.
    measured = lab_server.measure(
        f"{DELAY_MS} ms delay", lambda lab: lab.set_delay(DELAY_MS, side="server")
    )
    assert measured.answered >= 0.95, measured
    low, high = baseline.latency_p50 + DELAY_MS - 10, baseline.latency_p50 + DELAY_MS + 40
    assert low <= measured.latency_p50 <= high, measured
    # Flat over time: a constant delay, not a queue building up behind it.
    assert abs(measured.second_half_p50 - measured.first_half_p50) < 15, measured


RATE_MBIT = 1.0


@pytest.mark.timeout(90)
def test_a_cap_wider_than_the_stream_changes_nothing(
    lab_server: LabServer, baseline: Measured
) -> None:
    # The stream needs about 185 kbit/s: a 1 Mbit/s cap never binds, so the
    # link adaptation must leave the sender alone and the session must look
    # like the baseline. Caps that bind are tests/test_narrow_link.py's.
    measured = lab_server.measure(
        f"{RATE_MBIT:g} Mbit/s cap", lambda lab: lab.set_rate(RATE_MBIT, side="server")
    )
    assert measured.rate_decreases == 0, measured
    assert measured.answered_before_tail >= 0.99, measured
    assert measured.error_mean < 0.05, measured
    assert measured.latency_p50 <= baseline.latency_p50 + 5, (measured, baseline)
    assert measured.second_half_p50 <= measured.first_half_p50 + 15, measured
