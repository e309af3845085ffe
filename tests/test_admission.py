"""Admission one peer cannot exhaust (server.sessions.admission), and the
attacks of issue 19 against the real server.

The unit tests pin the counting: a global cap, a cap per source address that
counts sessions and connections still waiting for their token, and a
refusal that says whether retrying makes sense.

The end-to-end tests run one attack (``lab.attacks``, a process of its own
whose sockets all bind 127.0.0.2) against the real server while the real
``client/client.py`` connects from 127.0.0.1. They assert the real client's
success, not only the attacker's refusal: it is served at once (it streams
for all but ``SERVED_WITHIN_S`` of its ``--duration``, with no "server busy"
retry), it answers at least 99 % of its frames, and ``/livez`` answers
within a second throughout.
"""

from __future__ import annotations

import json
import socket
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

from lab.attacks import ATTACKER_ADDRESS, ProbeWatch, start_attacker, stop_attacker
from lab.programs import PYTHON, Program, close_all, free_port, start_client, start_server
from protocol.signaling import ACCESS_DENIED, SERVER_BUSY, SERVER_SHUTTING_DOWN, Bye
from server.reports.plot import read_frames
from server.sessions.admission import Admission
from tests.test_faults import wait_until

pytestmark = pytest.mark.e2e

# ---------------------------------------------------------------- the counting


def test_one_address_is_capped_below_the_global_cap() -> None:
    admission = Admission(max_sessions=4, max_per_peer=2)
    held = [admission.admit("10.0.0.2") for _ in range(2)]
    refusal = admission.refusal("10.0.0.2")
    assert refusal is not None and "10.0.0.2" in refusal and "per-address" in refusal
    assert Bye(refusal).worth_retrying  # its own sessions ending frees room
    assert admission.refusal("10.0.0.1") is None  # everyone else is still served
    assert admission.room_for_anyone()
    held[0].release()
    held[0].release()  # a second release changes nothing
    assert admission.held_by("10.0.0.2") == 1
    assert admission.refusal("10.0.0.2") is None


def test_the_global_cap_is_named_first_and_shutdown_refuses_everyone() -> None:
    admission = Admission(max_sessions=2, max_per_peer=2)
    admission.admit("a")
    admission.admit("b")
    assert admission.refusal("c") == f"{SERVER_BUSY}: 2 sessions active"
    assert admission.refusal("a") == f"{SERVER_BUSY}: 2 sessions active"
    assert not admission.room_for_anyone()
    admission.stopping = True
    assert admission.refusal("c") == SERVER_SHUTTING_DOWN


def test_connections_waiting_for_their_token_count_against_their_address_only() -> None:
    admission = Admission(max_sessions=1, max_per_peer=3, max_waiting=4)
    waiting = [admission.admit("10.0.0.2", session=False) for _ in range(3)]
    # They hold no session slot, but their address is at its cap.
    assert admission.sessions == 0 and admission.room_for_anyone()
    assert admission.refusal("10.0.0.2", session=False) is not None
    assert admission.refusal("10.0.0.1", session=False) is None
    # The first to prove its token takes the one slot; the next finds it full.
    assert admission.start_session(waiting[0]) is None
    assert admission.start_session(waiting[1]) == f"{SERVER_BUSY}: 1 sessions active"
    waiting[1].release()
    waiting[2].release()
    admission.admit("x", session=False)
    assert admission.refusal("y", session=False) is None
    waiting[0].release()
    assert admission.sessions == 0


def test_waiting_connections_are_capped_over_all_addresses() -> None:
    admission = Admission(max_sessions=8, max_per_peer=8, max_waiting=2)
    admission.admit("a", session=False)
    admission.admit("b", session=False)
    refusal = admission.refusal("c", session=False)
    assert refusal is not None and refusal.startswith(SERVER_BUSY)


def test_an_access_refusal_is_not_worth_retrying() -> None:
    assert not Bye(f"{ACCESS_DENIED}: wrong access token").worth_retrying


# ---------------------------------------------------------------- against the server

CLIENT_S = 6.0
#: The real client must be streaming within this long of connecting.
SERVED_WITHIN_S = 2.0
TOKEN = "s3cret-token"
#: The share of its frames the real client must answer under attack...
ANSWERED = 0.99
#: ... or, when the machine itself costs frames, what it may lose beyond that.
NOISE = 0.01
#: Frames still on their way when the client says bye cannot be answered; on
#: a loaded machine the last one or two frames are (measured: under two busy
#: loops, 4 runs in 6 lost exactly the last frame, and nothing else). So the
#: answered share is of the frames before an unanswered tail this long.
IN_FLIGHT_AT_BYE = 3
#: How a session ends when the attacker process is stopped under it.
STOPPED = (
    "connection closed",
    "client disconnected",
    "client said bye",
    "signaling error: client left before answering",
)


def _status(url: str, timeout: float = 5.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _tally(attacker: Program) -> dict[str, Any]:
    tally = stop_attacker(attacker)
    assert tally is not None, attacker.describe()
    return tally


@dataclass
class Run:
    """What one attack left behind: the real client's summary and everyone's output."""

    report: dict[str, Any]
    tally: dict[str, Any]
    summaries: list[dict[str, Any]]  # every session's, from the server's stdout
    server_log: str
    client_log: str

    def attackers_sessions(self) -> list[dict[str, Any]]:
        return [d for d in self.summaries if d.get("peer", "").startswith(ATTACKER_ADDRESS)]

    def attackers_ended_by(self, reason: str) -> list[dict[str, Any]]:
        """The attacker's sessions that ended for ``reason``; every other one
        must be the one its stopping cut short."""
        sessions = self.attackers_sessions()
        ended = [d for d in sessions if d["end_reason"] == reason]
        cut_short = [d for d in sessions if d["end_reason"] != reason]
        assert len(cut_short) <= 1, sessions
        assert all(d["end_reason"] in STOPPED for d in cut_short), cut_short
        return ended


def _client_report(server: Program) -> dict[str, Any]:
    """The summary of the real client's session (peer 127.0.0.1), from the server's stdout."""
    assert wait_until(
        lambda: any(d.get("peer", "").startswith("127.0.0.1:") for d in server.json_documents()),
        10,
    ), server.describe()
    [report] = [d for d in server.json_documents() if d.get("peer", "").startswith("127.0.0.1:")]
    return report


def _answerable_ratio(report: dict[str, Any], report_dir: Path) -> float:
    """The share of its frames the real client answered, leaving out an
    unanswered tail of at most IN_FLIGHT_AT_BYE frames (from the session's
    per-frame CSV, one row a frame sent, in order)."""
    frames = read_frames(report_dir / f"{report['session']}.csv")
    answered = [not np.isnan(latency) for latency in frames.latency_ms]
    count = sum(answered)
    assert len(answered) == report["frames_sent"] and count == report["frames_answered"]
    tail = 0
    while tail < min(IN_FLIGHT_AT_BYE, len(answered)) and not answered[-1 - tail]:
        tail += 1
    considered = len(answered) - tail
    return count / considered if considered else 0.0


def _served_under(
    kind: str,
    *server_flags: str,
    attack_flags: tuple[str, ...] = (),
    client_flags: tuple[str, ...] = (),
    warm_up_s: float = 2.0,
) -> Run:
    """Run ``kind`` against a fresh server while the real client tracks for CLIENT_S,
    and assert the real client was served."""
    port, http_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="admission-") as report_dir:
        server = start_server(port, *server_flags, "--report-dir", report_dir, http_port=http_port)
        attacker = client = None
        probe = ProbeWatch(f"http://127.0.0.1:{http_port}/livez")
        try:
            server.wait_for_output("console on", timeout=30)
            attacker = start_attacker(kind, port, http_port, *attack_flags)
            time.sleep(warm_up_s)  # the attack is in force before the client comes
            probe.start()
            client = start_client(port, "--duration", f"{CLIENT_S:g}", *client_flags)
            assert client.wait(timeout=60) == 0, client.describe()
            probe.stop()
            tally = _tally(attacker)
            report = _client_report(server)
            server.stop()
            run = Run(report, tally, server.json_documents(), server.stderr, client.stderr)
            answered = _answerable_ratio(report, Path(report_dir))
        finally:
            probe.stop()
            close_all(client, attacker, server)
    print(f"\n{kind}: attacker saw {tally}; /livez slowest {probe.slowest_s * 1000:.0f} ms")
    assert "trying again" not in run.client_log, run.client_log
    assert report["end_reason"] == "client said bye", report
    assert report["duration_s"] >= CLIENT_S - SERVED_WITHIN_S, report
    assert probe.failures == 0 and probe.slowest_s < 1.0, probe.latencies
    if answered < ANSWERED:
        # On a loaded machine an unattacked client can fall short too
        # (measured 0.96 at load 9 on 2 cores): then the attack may cost at
        # most NOISE beyond what the same server and client lose without it.
        baseline = _unattacked_ratio(server_flags, client_flags)
        print(f"answered {answered:.3f}; without the attack {baseline:.3f}")
        assert answered >= min(ANSWERED, baseline - NOISE), report
    return run


def _unattacked_ratio(server_flags: tuple[str, ...], client_flags: tuple[str, ...]) -> float:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="admission-") as report_dir:
        server = start_server(port, *server_flags, "--report-dir", report_dir)
        client = None
        try:
            client = start_client(port, "--duration", f"{CLIENT_S:g}", *client_flags)
            assert client.wait(timeout=60) == 0, client.describe()
            report = _client_report(server)
            server.stop()
            return _answerable_ratio(report, Path(report_dir))
        finally:
            close_all(client, server)


@pytest.mark.timeout(120)
def test_idle_signaling_sockets_from_one_address_take_only_its_share() -> None:
    run = _served_under("idle-signaling", "--max-sessions", "4", "--max-sessions-per-peer", "2")
    # The attacker got offers for its two slots, and cheap BYEs for the rest.
    assert run.tally["offers"] >= 2, run.tally
    assert run.tally["byes"].get(SERVER_BUSY, 0) > 50, run.tally
    assert "per-address cap" not in run.server_log  # refusals are not logged one by one


@pytest.mark.timeout(120)
def test_with_a_token_idle_sockets_never_get_an_offer() -> None:
    run = _served_under(
        "idle-signaling",
        "--max-sessions",
        "4",
        "--access-token",
        TOKEN,
        attack_flags=("--token", "wrong"),
        client_flags=("--access-token", TOKEN),
    )
    assert run.tally["offers"] == 0, run.tally
    assert run.tally["byes"].get(ACCESS_DENIED, 0) > 50, run.tally


@pytest.mark.timeout(120)
def test_a_silent_webrtc_client_is_ended_and_frees_its_slot() -> None:
    run = _served_under(
        "silent-webrtc", "--max-sessions", "2", "--silence-timeout", "2", warm_up_s=3.0
    )
    assert len(run.attackers_ended_by("no answer for 2 s")) >= 2, run.attackers_sessions()
    assert run.tally["byes"].get("no answer for 2 s", 0) >= 2, run.tally


@pytest.mark.timeout(120)
def test_idle_http_connections_from_one_address_leave_the_probes_answering() -> None:
    run = _served_under("idle-http", "--max-sessions", "4")
    assert run.tally["connections"] > 64, run.tally  # the excess was closed and came back


@pytest.mark.timeout(120)
def test_slow_bodies_get_408() -> None:
    run = _served_under("slow-body", "--max-sessions", "4", warm_up_s=6.0)
    assert run.tally["http_status"].get("408", 0) >= 8, run.tally


@pytest.mark.timeout(120)
def test_ten_thousand_candidates_end_only_the_attackers_session() -> None:
    run = _served_under("candidates", "--max-sessions", "4")
    assert run.tally["byes"].get("signaling error", 0) >= 1, run.tally
    assert "more than 64 ICE candidates" in run.server_log, run.server_log


@pytest.mark.timeout(120)
def test_a_thousand_junk_messages_a_second_are_counted_not_read() -> None:
    run = _served_under(
        "junk-messages", "--max-sessions", "4", "--silence-timeout", "4", warm_up_s=3.0
    )
    flooded = run.attackers_sessions()
    # Junk is no answer: the flood ends by the silence timeout, not by itself.
    assert len(run.attackers_ended_by("no answer for 4 s")) >= 1, flooded
    assert sum(d["messages_over_rate"] for d in flooded) > 1000, flooded
    assert run.tally["messages_sent"] > 2000, run.tally


# ---------------------------------------------------------------- the token's door


def _raw_signaling(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _lines_until_closed(sock: socket.socket) -> list[dict[str, Any]]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return [json.loads(line) for line in data.splitlines() if line.strip()]


@pytest.mark.timeout(90)
def test_the_token_is_asked_on_signaling_and_compared() -> None:
    port, http_port = free_port(), free_port()
    server = start_server(port, "--access-token", TOKEN, http_port=http_port)
    clients: list[Optional[Program]] = []
    try:
        # Nothing presented: a BYE that says why within about a second, no offer.
        sock = _raw_signaling(port)
        started = time.monotonic()
        messages = _lines_until_closed(sock)
        assert time.monotonic() - started < 2.0
        assert [m["type"] for m in messages] == ["bye"], messages
        assert messages[0]["reason"].startswith(ACCESS_DENIED), messages
        # A wrong token: refused at once.
        sock = _raw_signaling(port)
        sock.sendall(b'{"type": "auth", "token": "nope"}\n')
        assert _lines_until_closed(sock)[0]["reason"] == f"{ACCESS_DENIED}: wrong access token"
        # The real client without the token is refused (exit 3, no retrying).
        refused = start_client(port, "--connect-timeout", "5")
        clients.append(refused)
        assert refused.wait(timeout=30) == 3, refused.describe()
        assert "access denied" in refused.stderr and "trying again" not in refused.stderr
        # ... and with it, from the environment, tracks.
        served = start_client(port, "--duration", "2", env={"BALLTRACKER_ACCESS_TOKEN": TOKEN})
        clients.append(served)
        assert served.wait(timeout=30) == 0, served.describe()
        # Every refusal is counted for the operator, by its kind.
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as reply:
            metrics = reply.read().decode()
        denied = 'balltracker_signaling_refused_total{reason="access denied"}'
        [line] = [m for m in metrics.splitlines() if m.startswith(denied)]
        assert float(line.split()[-1]) >= 3, line
        server.stop()
        summaries = server.json_documents()
    finally:
        close_all(*clients, server)
    # Refused connections never became sessions: one summary, the served client's.
    [report] = [d for d in summaries if "end_reason" in d]
    assert report["end_reason"] == "client said bye" and report["answered_ratio"] > 0.9


@pytest.mark.timeout(60)
def test_a_client_token_is_ignored_by_a_server_without_one() -> None:
    port = free_port()
    server = start_server(port)
    client = None
    try:
        client = start_client(port, "--duration", "2", "--access-token", TOKEN)
        assert client.wait(timeout=30) == 0, client.describe()
    finally:
        close_all(client, server)


@pytest.mark.parametrize("program", ["server/server.py", "client/client.py"])
def test_an_empty_token_is_a_usage_error(program: str) -> None:
    import subprocess

    for argv, env in (
        (["--access-token", ""], {}),
        ([], {"BALLTRACKER_ACCESS_TOKEN": " "}),
    ):
        result = subprocess.run(
            [PYTHON, program, *argv],
            capture_output=True,
            text=True,
            timeout=60,
            env={**__import__("os").environ, **env},
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert result.returncode == 2, result
        lines = result.stderr.strip().splitlines()
        assert "--access-token must not be empty" in lines[-1], result.stderr
        assert "Traceback" not in result.stderr
