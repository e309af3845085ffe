"""Faults around real server and client processes: kills, restarts, overload.

Everything here runs the real programs over real WebRTC on loopback. Where a
test needs many sessions, the peer is ``run_peer``: a minimal aiortc answerer
inside the test process that speaks the same signaling and data channel
protocol as the client but skips the detector process, so a session costs a
fraction of a second instead of several.

The helpers (``run_peer``, ``PeerScript``, the /proc readers) are shared with
``test_hostile_input.py``, ``test_impaired_network.py`` and ``bench/soak.py``.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import pytest
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)

from client.detection.detector import CentroidDetector
from client.detection.frame_exchange import luma_view
from lab.programs import (
    Program,
    close_all,
    free_port,
    read_reports,
    start_client,
    start_server,
    wait_for_plots,
    wait_for_reports,
)
from protocol.coordinates import CHANNEL_LABEL, CoordinateReport, encode_report
from protocol.signaling import MAX_LINE_BYTES, Bye, SignalingChannel
from tests.test_end_to_end import assert_tracked

#: Clock ticks per second for the utime/stime fields of /proc/PID/stat.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Message = Union[str, bytes]


# ---------------------------------------------------------------- /proc readers


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


def thread_count(pid: int) -> int:
    return _status_field(pid, "Threads")


def rss_bytes(pid: int) -> int:
    return _status_field(pid, "VmRSS") * 1024


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    # The command name in field 2 may contain spaces: split after its ')'.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (the client spawns a detector process)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited while we looked
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def tree_rss_bytes(pid: int) -> int:
    total = 0
    for member in process_tree(pid):
        try:
            total += rss_bytes(member)
        except (OSError, KeyError):
            pass  # a zombie has no VmRSS; an exited one no /proc entry
    return total


def idle_cpu_fraction(pid: int, seconds: float = 2.0) -> float:
    """Share of one core the process burns over ``seconds`` of wall time."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


# ---------------------------------------------------------------- waiting


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


# ---------------------------------------------------------------- in-test peer


@dataclass
class PeerScript:
    """What ``run_peer`` does once the session streams.

    It answers ``answer_frames`` frames with the detector's real estimate and,
    after each valid answer, sends its share of ``hostile`` messages, so the
    bad ones land between good ones while the session is live.
    """

    answer_frames: int = 5
    hostile: Sequence[Message] = ()
    #: Valid answers sent a second time at the end, which must count as duplicates.
    repeat_answers: int = 0
    say_bye: bool = True
    #: Time for the last data channel messages to arrive before BYE: they
    #: travel over SCTP/UDP, BYE over TCP, and BYE must not overtake them.
    settle_s: float = 0.3
    timeout_s: float = 15.0


@dataclass
class PeerOutcome:
    local: str = ""  # our signaling address, which the server's report names as "peer"
    refused: Optional[str] = None  # the server's BYE reason instead of an offer
    frames_received: int = 0
    valid_sent: int = 0
    found_sent: int = 0
    hostile_sent: int = 0
    answers: list[str] = field(default_factory=list)


async def run_peer(host: str, port: int, script: Optional[PeerScript] = None) -> PeerOutcome:
    """One session as a minimal aiortc answerer; see ``PeerScript``."""
    script = script or PeerScript()
    outcome = PeerOutcome()
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, limit=MAX_LINE_BYTES), script.timeout_s
    )
    signaling = SignalingChannel(reader, writer)
    outcome.local = "%s:%d" % writer.get_extra_info("sockname")[:2]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    loop = asyncio.get_running_loop()
    channel_ready: asyncio.Future[RTCDataChannel] = loop.create_future()
    track_ready: asyncio.Future[MediaStreamTrack] = loop.create_future()

    @pc.on("datachannel")
    def on_datachannel(channel: RTCDataChannel) -> None:
        if channel.label == CHANNEL_LABEL and not channel_ready.done():
            channel_ready.set_result(channel)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "video" and not track_ready.done():
            track_ready.set_result(track)

    try:
        offer = await signaling.receive(script.timeout_s)
        if isinstance(offer, Bye):
            outcome.refused = offer.reason or ""
            return outcome
        assert isinstance(offer, RTCSessionDescription) and offer.type == "offer", offer
        await pc.setRemoteDescription(offer)
        await pc.setLocalDescription(await pc.createAnswer())
        await signaling.send(pc.localDescription)
        channel = await asyncio.wait_for(channel_ready, script.timeout_s)
        track = await asyncio.wait_for(track_ready, script.timeout_s)
        await _answer_frames(channel, track, script, outcome)
        await _settle(channel, script.settle_s)
        if script.say_bye:
            await signaling.send(Bye())
    finally:
        await pc.close()
        await signaling.close()
    return outcome


async def _answer_frames(
    channel: RTCDataChannel, track: MediaStreamTrack, script: PeerScript, outcome: PeerOutcome
) -> None:
    detector = CentroidDetector()
    hostile = list(script.hostile)
    share = math.ceil(len(hostile) / script.answer_frames) if script.answer_frames else 0
    while outcome.valid_sent < script.answer_frames:
        frame = await asyncio.wait_for(track.recv(), script.timeout_s)
        outcome.frames_received += 1
        centre = detector.detect(luma_view(frame))
        x, y = centre if centre is not None else (None, None)
        # Received pts equal sent pts when the first frame received is frame 0,
        # which the server guarantees by holding frames until the channel opens.
        message = encode_report(CoordinateReport(int(frame.pts), x, y))
        channel.send(message)
        outcome.answers.append(message)
        outcome.valid_sent += 1
        outcome.found_sent += centre is not None
        for bad in hostile[:share]:
            channel.send(bad)
            outcome.hostile_sent += 1
        del hostile[:share]
    for answer in outcome.answers[: script.repeat_answers]:
        channel.send(answer)
        outcome.hostile_sent += 1


async def _settle(channel: RTCDataChannel, seconds: float) -> None:
    deadline = time.monotonic() + 5.0
    while channel.bufferedAmount and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(seconds)


def run_peers(
    port: int, count: int, script: Optional[PeerScript] = None, host: str = "127.0.0.1"
) -> list[PeerOutcome]:
    """``count`` peers at once, each in its own session; their outcomes."""

    async def together() -> list[PeerOutcome]:
        return list(await asyncio.gather(*(run_peer(host, port, script) for _ in range(count))))

    return asyncio.run(together())


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def report_dir(tmp_path: Path) -> Path:
    return tmp_path / "reports"


def _kill(program: Program) -> None:
    program.signal(signal.SIGKILL)
    program.wait(timeout=10)


# ---------------------------------------------------------------- tests


#: How soon the server must end a session whose client was killed. The
#: kernel closes the dead client's TCP socket, so the server reads EOF on
#: signaling at once; measured: the report (written once the peer connection
#: is closed) is there 0.4 s after the SIGKILL, in four runs of four.
KILLED_CLIENT_NOTICED_S = 2.0
#: CPU the server may burn, idle, once the session is gone (a share of one core).
IDLE_CPU_LIMIT = 0.05


@pytest.mark.timeout(90)
def test_killed_client_frees_every_server_resource(report_dir: Path) -> None:
    port = free_port()
    server = start_server(port, "--report-dir", str(report_dir))
    try:
        # Thread pools inside asyncio and aiortc, and the plotting worker,
        # start lazily with the first session and then stay for reuse. A
        # warm-up session makes the baseline what an idle server that has
        # served someone looks like.
        [warm_up] = run_peers(port, 1)
        assert warm_up.valid_sent == 5
        assert len(wait_for_reports(report_dir, 1)) == 1
        assert wait_for_plots(report_dir, 1) == 1
        fds, threads = open_fds(server.pid), thread_count(server.pid)
        victim = start_client(port)
        try:
            server.wait_for_output("answered", timeout=30, count=2)
            assert open_fds(server.pid) > fds  # the session holds sockets
            _kill(victim)
            killed_at = time.monotonic()
            reports = wait_for_reports(report_dir, 2, timeout=10)
            noticed_after = time.monotonic() - killed_at
            assert len(reports) == 2, "no report within 10 s of the kill"
            killed = reports[1]
            # The session does not spin on the dead socket meanwhile, nor after.
            spinning = idle_cpu_fraction(server.pid)
        finally:
            victim.close()
        print(f"\nsession ended {noticed_after:.2f} s after SIGKILL; then {spinning:.1%} CPU")
        assert noticed_after < KILLED_CLIENT_NOTICED_S, f"noticed after {noticed_after:.1f} s"
        # EOF on signaling, not a WebRTC failure many seconds later.
        assert killed["end_reason"] == "client disconnected", killed
        assert killed["frames_answered"] > 0
        assert spinning < IDLE_CPU_LIMIT, f"server uses {spinning:.1%} of a core after the kill"
        # Everything the session held is released: sockets, timers, threads.
        assert wait_until(lambda: open_fds(server.pid) <= fds + 1, timeout=5), (
            f"fds {open_fds(server.pid)} vs baseline {fds}"
        )
        assert wait_until(lambda: thread_count(server.pid) <= threads + 1, timeout=5), (
            f"threads {thread_count(server.pid)} vs baseline {threads}"
        )
        cpu = idle_cpu_fraction(server.pid)
        assert cpu < IDLE_CPU_LIMIT, f"idle server uses {cpu:.1%} of a core"
        assert server.process.poll() is None
    finally:
        server.close()


#: Sessions before memory is measured. Measured on this machine: RSS climbs
#: for the first 40-60 sessions (glibc keeps freed peer-connection memory in
#: its arenas for reuse) and is then flat for hundreds of sessions.
WARM_UP_SESSIONS = 40
SAMPLE_EVERY = 10
SESSIONS_IN_A_ROW = 100
PEERS_AT_ONCE = 2
#: A live session costs the server about 10 MB (VP8 encoder, frame buffers,
#: DTLS/SRTP contexts: 8 concurrent sessions measured +85 MB). An ended one
#: sits in reference cycles (aiortc's event callbacks) until the garbage
#: collector's next full pass, so any sample may carry two or three ended
#: sessions not yet collected: measured over 160 sessions, flat for tens of
#: sessions at a time with steps of up to +20 MB that later fall back, and
#: +24 and +37 MB at the last sample in two runs of ten. A leak of 700 KB a
#: session over the 60 measured ones still breaks this bound, as does any
#: leaked encoder (one left alive per session grew the server past 800 MB).
RSS_GROWTH_LIMIT = 40 << 20
#: Each session holds a TCP socket and UDP sockets per candidate; a leaked
#: one would add 60+ fds. ±3 covers a session that is still closing.
FD_SLACK = 3


@pytest.mark.timeout(150)
def test_hundred_sessions_in_a_row_keep_memory_and_fds_flat(report_dir: Path) -> None:
    port = free_port()
    server = start_server(port, "--report-dir", str(report_dir))
    samples: list[tuple[int, int, int]] = []  # (sessions done, rss, fds)

    def sample(done: int) -> None:
        # Let the last session's teardown finish before counting: its report,
        # then its plot (the worker that draws it shares the machine's cores).
        wait_for_reports(report_dir, done, timeout=5)
        assert wait_for_plots(report_dir, done, timeout=60) >= done
        samples.append((done, rss_bytes(server.pid), open_fds(server.pid)))

    try:
        started = time.monotonic()
        for batch in range(SESSIONS_IN_A_ROW // PEERS_AT_ONCE):
            outcomes = run_peers(port, PEERS_AT_ONCE)
            assert all(o.valid_sent == 5 and o.refused is None for o in outcomes), outcomes
            done = (batch + 1) * PEERS_AT_ONCE
            if done % SAMPLE_EVERY == 0:
                sample(done)
        elapsed = time.monotonic() - started
        print(f"\n{SESSIONS_IN_A_ROW} sessions in {elapsed:.1f} s")
        for done, rss, fds in samples:
            print(f"  after {done:3d} sessions: rss {rss / 2**20:6.1f} MB, fds {fds}")
        [(_, rss_warm, fds_warm)] = [s for s in samples if s[0] == WARM_UP_SESSIONS]
        _, rss_end, fds_end = samples[-1]
        assert rss_end - rss_warm < RSS_GROWTH_LIMIT, samples
        assert abs(fds_end - fds_warm) <= FD_SLACK, samples
        reports = read_reports(report_dir)
        assert len(reports) == SESSIONS_IN_A_ROW
        for report in reports:
            assert report["end_reason"] == "client said bye", report
            assert report["frames_answered"] == 5 and report["invalid_messages"] == 0, report
    finally:
        server.close()


def _start_tracked_server(port: int, report_dir: Path, *flags: str) -> Program:
    return start_server(port, "--report-dir", str(report_dir), *flags)


@pytest.mark.timeout(120)
def test_killed_server_fails_client_or_reconnects_it(report_dir: Path) -> None:
    port = free_port()
    first = start_server(port)
    plain = start_client(port)
    patient = start_client(port, "--reconnect")
    second: Optional[Program] = None
    try:
        first.wait_for_output("streaming to", timeout=30, count=2)
        first.wait_for_output("answered", timeout=30, count=2)
        _kill(first)
        # Without --reconnect: a non-zero exit and a message naming the cause.
        assert plain.wait(timeout=10) == 1, plain.describe()
        assert "error: lost the connection to the server" in plain.stderr, plain.describe()
        # With --reconnect: still running, then tracking with a new server on
        # the same port. That server ends its session after 3 s, which is a
        # normal end for the client (exit 0), not a loss to reconnect from.
        assert patient.process.poll() is None, patient.describe()
        second = _start_tracked_server(port, report_dir, "--once", "--duration", "3")
        assert patient.wait(timeout=40) == 0, patient.describe()
        assert "reconnecting" in patient.stderr
        [report] = wait_for_reports(report_dir, 1)
        assert report["end_reason"] == "duration reached"
        assert_tracked(report, min_answered=0.9)
        assert patient.json_documents()[-1]["sessions"] == 2
    finally:
        close_all(plain, patient, first, second)


@pytest.mark.timeout(120)
def test_a_reconnecting_client_follows_a_rolling_update_to_the_next_server(
    report_dir: Path,
) -> None:
    port = free_port()
    old = _start_tracked_server(port, report_dir)
    client = start_client(port, "--reconnect")
    new: Optional[Program] = None
    try:
        old.wait_for_output("answered", timeout=30, count=2)
        old.signal(signal.SIGTERM)  # what Kubernetes does to the old pod
        assert old.wait(timeout=15) == 0, old.describe()
        client.wait_for_output("server shutting down; reconnecting", timeout=10)
        assert client.process.poll() is None, client.describe()
        new = _start_tracked_server(port, report_dir, "--once", "--duration", "3")
        assert client.wait(timeout=40) == 0, client.describe()
        reports = wait_for_reports(report_dir, 2)
        assert [r["end_reason"] for r in reports] == ["server shutting down", "duration reached"]
        assert_tracked(reports[1], min_answered=0.9)
        assert client.json_documents()[-1]["sessions"] == 2
    finally:
        close_all(client, old, new)


@pytest.mark.timeout(90)
def test_client_started_before_server_connects_when_it_comes_up(report_dir: Path) -> None:
    port = free_port()
    client = start_client(port, "--connect-timeout", "30")
    server: Optional[Program] = None
    try:
        time.sleep(10)
        assert client.process.poll() is None, client.describe()
        server = _start_tracked_server(port, report_dir, "--once", "--duration", "3")
        assert client.wait(timeout=40) == 0, client.describe()
        [report] = wait_for_reports(report_dir, 1)
        assert_tracked(report)
    finally:
        close_all(client, server)


MAX_SESSIONS = 2
EXIT_REFUSED = 3


@pytest.mark.timeout(90)
def test_client_beyond_max_sessions_is_refused_others_unaffected(report_dir: Path) -> None:
    port = free_port()
    server = _start_tracked_server(
        port, report_dir, "--max-sessions", str(MAX_SESSIONS), "--duration", "6"
    )
    clients = [start_client(port) for _ in range(MAX_SESSIONS)]
    extra: Optional[Program] = None
    try:
        server.wait_for_output("streaming to", timeout=30, count=MAX_SESSIONS)
        # It retries "server busy" for 2 s, well before a slot frees up.
        extra = start_client(port, "--connect-timeout", "2")
        assert extra.wait(timeout=30) == EXIT_REFUSED, extra.describe()
        assert "refused" in extra.stderr and "server busy" in extra.stderr, extra.describe()
        for client in clients:
            assert client.wait(timeout=30) == 0, client.describe()
        reports = wait_for_reports(report_dir, MAX_SESSIONS)
        assert len(reports) == MAX_SESSIONS  # the refused one never had a session
        for report in reports:
            assert report["end_reason"] == "duration reached"
            assert_tracked(report, min_answered=0.9)
    finally:
        close_all(*clients, extra, server)


@pytest.mark.timeout(90)
def test_sigterm_ends_every_session_cleanly(report_dir: Path) -> None:
    port = free_port()
    server = _start_tracked_server(port, report_dir)
    clients = [start_client(port) for _ in range(2)]
    try:
        server.wait_for_output("streaming to", timeout=30, count=2)
        server.wait_for_output("answered", timeout=30, count=4)  # two progress lines each
        server.signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        assert server.wait(timeout=10) == 0, server.describe()
        assert time.monotonic() - stopped_at < 5, "shutdown took too long"
        reports = read_reports(report_dir)  # written before the server exited
        assert len(reports) == 2, server.describe()
        for report in reports:
            assert report["end_reason"] == "server shutting down"
            assert_tracked(report, min_answered=0.9)
        # The clients were told (BYE), so they end normally, not as a loss.
        for client in clients:
            assert client.wait(timeout=15) == 0, client.describe()
            assert "server ended the session" in client.stderr
    finally:
        close_all(*clients, server)
