"""Hostile peers against one real server process: garbage on signaling and on
the data channel, oversized lines, silent and idle connections.

Each abuse must cost the attacker only its own connection or messages: the
server stays up, its memory stays bounded, and real sessions keep working.
After every test an in-test aiortc peer (``run_peer``) must still be served;
the idle-connection test ends with a session of the real client.
"""

from __future__ import annotations

import json
import math
import select
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
from aiortc import RTCIceCandidate, RTCSessionDescription
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from lab.process_stats import open_fds, rss_bytes
from lab.programs import (
    Program,
    free_port,
    read_reports,
    start_client,
    start_server,
    wait_for_plots,
    wait_for_reports,
)
from protocol.coordinates import InvalidReport, decode_report
from protocol.signaling import MAX_LINE_BYTES, Bye, SignalingError, decode_message
from tests.test_end_to_end import assert_tracked
from tests.test_faults import Message, PeerScript, run_peers, wait_until

pytestmark = pytest.mark.e2e

HANDSHAKE_TIMEOUT_S = 2.0
MAX_SESSIONS = 4
#: The handshake timeout of the server that bad signaling is sent to: far
#: longer than a drop may take, so a server that ignored bad lines and only
#: timed the client out would fail, not pass late.
PATIENT_HANDSHAKE_TIMEOUT_S = 30.0
#: How soon bad signaling must cost the connection. Measured: tens of
#: milliseconds (up to about 0.5 s when the server first loads aiortc's SDP
#: code); a loaded 2-core machine gets a few times that.
DROP_WITHIN_S = 3.0

#: Hypothesis runs every example against the live server: no shrinking (a
#: failure would rerun dozens of real sessions past the test's timeout) and
#: no deadline (a session takes a good fraction of a second by design).
LIVE_SETTINGS = settings(
    deadline=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=(
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # the per-test liveness check, see below
    ),
)


class Server:
    """The module's server process and where its reports go."""

    def __init__(self, program: Program, port: int, report_dir: Path) -> None:
        self.program = program
        self.port = port
        self.report_dir = report_dir
        self._claimed: set[str] = set()  # sessions whose report a test has read

    def report_of(self, peer: str) -> dict[str, Any]:
        """The report of the (one) new session with the client at ``peer``.

        New: dozens of connections in a module can reuse an ephemeral port,
        so a report read before for the same address does not count.
        """

        def fresh() -> list[dict[str, Any]]:
            return [
                r
                for r in read_reports(self.report_dir)
                if r["peer"] == peer and r["session"] not in self._claimed
            ]

        wait_until(lambda: bool(fresh()), 10)
        [report] = fresh()
        self._claimed.add(report["session"])
        return report

    def summary_of(self, peer: str) -> dict[str, Any]:
        """The summary the server printed for the (one) new session with ``peer``.

        Every session prints one, streamed or not; only a session that sent
        a frame writes report files.
        """

        def fresh() -> list[dict[str, Any]]:
            return [
                s
                for s in self.program.json_documents()
                if s.get("peer") == peer and s["session"] not in self._claimed
            ]

        wait_until(lambda: bool(fresh()), 10)
        [summary] = fresh()
        self._claimed.add(summary["session"])
        return summary


def _start(tmp_path_factory: pytest.TempPathFactory, handshake_timeout: float) -> Server:
    report_dir = tmp_path_factory.mktemp("hostile") / "reports"
    port = free_port()
    program = start_server(
        port,
        "--report-dir",
        str(report_dir),
        "--max-sessions",
        str(MAX_SESSIONS),
        "--handshake-timeout",
        f"{handshake_timeout:g}",
    )
    return Server(program, port, report_dir)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a short handshake timeout, for the tests that wait it out."""
    started = _start(tmp_path_factory, HANDSHAKE_TIMEOUT_S)
    try:
        yield started
    finally:
        started.program.close()


@pytest.fixture(scope="module")
def patient_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a long handshake timeout: bad input must end a session by itself."""
    started = _start(tmp_path_factory, PATIENT_HANDSHAKE_TIMEOUT_S)
    try:
        yield started
    finally:
        started.program.close()


@pytest.fixture(autouse=True)
def still_serving(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test: each server it used is alive and a real WebRTC peer is served."""
    yield
    for name in ("server", "patient_server"):
        if name not in request.fixturenames:
            continue
        used: Server = request.getfixturevalue(name)
        assert used.program.process.poll() is None, used.program.describe()
        [outcome] = run_peers(used.port, 1)
        assert outcome.refused is None and outcome.valid_sent == 5, outcome
        # Wait for its report too, so the next test starts with every report written.
        assert used.report_of(outcome.local)["frames_answered"] == 5


# ---------------------------------------------------------------- raw signaling


class RawConnection:
    """A plain TCP client of the signaling port that can misbehave at will."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        # How the server names this client in its report.
        self.peer = "%s:%d" % self.sock.getsockname()
        self._buffer = b""

    def read_line(self) -> Optional[dict[str, Any]]:
        """The server's next message, or None once it closed the connection."""
        while b"\n" not in self._buffer:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server hung up on us mid-send: what we are testing for

    def messages_until_closed(self) -> list[dict[str, Any]]:
        """Everything the server still says before it closes the connection.

        Raises ``socket.timeout`` if the server keeps it open.
        """
        messages = []
        while (message := self.read_line()) is not None:
            messages.append(message)
        return messages

    def close(self) -> None:
        self.sock.close()


#: A line the server must reject, sent after a payload the server may
#: legitimately accept (a well-formed candidate before the answer).
SENTINEL = b'{"type": "sentinel"}\n'
SENTINEL_REASON = "signaling error: unknown message type 'sentinel'"


def _dropped_after(
    server: Server, payload: bytes, within: float, sentinel: bool = False
) -> dict[str, Any]:
    """Send ``payload`` where the answer belongs; return the server's BYE.

    The server must hang up within ``within`` seconds, saying why, and write
    a report whose end reason says the same. With ``sentinel``, SENTINEL
    follows the payload if the server has not reacted within half a second.
    """
    connection = RawConnection(server.port)
    try:
        offer = connection.read_line()
        assert offer is not None and offer["type"] == "offer", offer
        started = time.monotonic()
        connection.send(payload)
        if sentinel and not select.select([connection.sock], [], [], 0.5)[0]:
            connection.send(SENTINEL)
        try:
            messages = connection.messages_until_closed()
        except socket.timeout:
            raise AssertionError(
                f"connection still open {time.monotonic() - started:.0f} s on"
            ) from None
        elapsed = time.monotonic() - started
    finally:
        connection.close()
    assert messages and messages[-1]["type"] == "bye", messages
    bye = messages[-1]
    assert bye.get("reason"), f"BYE without a reason: {bye}"
    assert elapsed < within, f"dropped after {elapsed:.1f} s ({bye['reason']})"
    summary = server.summary_of(connection.peer)
    assert summary["end_reason"] == bye["reason"], summary
    assert summary["frames_sent"] == 0, summary
    # Nothing streamed, so nothing on disk: no files, no plot queued.
    assert not list(server.report_dir.glob(f"{summary['session']}.*")), summary
    return bye


def _reasons_for(payload: bytes) -> tuple[set[str], bool]:
    """The end reasons the server may give for ``payload`` followed by SENTINEL.

    It reads line by line: the first line that is not signaling, or not an
    answer, ends the session with its own reason. A well-formed candidate
    may be accepted (the server then reads on) or refused by aiortc
    ("negotiation failed: ..."); so may an answer with a broken SDP. Returns
    the exact reasons and whether "negotiation failed: ..." is allowed.
    """
    negotiation_may_fail = False
    for line in (payload + SENTINEL).split(b"\n")[:-1]:
        try:
            message = decode_message(line + b"\n")
        except SignalingError as exc:
            return {f"signaling error: {exc}"}, negotiation_may_fail
        if isinstance(message, RTCIceCandidate):
            if message.sdpMid is None and message.sdpMLineIndex is None:
                reason = "negotiation failed: Candidate must have either sdpMid or sdpMLineIndex"
                return {reason}, False
            negotiation_may_fail = True
            continue
        if isinstance(message, Bye):
            return {"signaling error: client left before answering"}, negotiation_may_fail
        assert isinstance(message, RTCSessionDescription)
        if message.type != "answer":
            return {f"signaling error: expected an answer, got {message.type}"}, (
                negotiation_may_fail
            )
        return set(), True
    raise AssertionError("SENTINEL always decides")


def _json_line(value: Any) -> bytes:
    return json.dumps(value).encode() + b"\n"


#: Any JSON document, nested a little.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)

candidate_tokens = st.sampled_from(["1", "udp", "tcp", "x", "9", "-1", "typ", "host", "relay"])

GOOD_CANDIDATE = "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"

#: What a confused or malicious peer might send instead of its answer.
signaling_garbage = st.one_of(
    st.binary(min_size=1, max_size=2000).map(lambda b: b + b"\n"),
    st.text(max_size=200).map(lambda t: t.encode("utf8", "surrogatepass") + b"\n"),
    json_values.map(_json_line),
    # Well-formed messages of the wrong kind or with a broken SDP.
    st.builds(
        lambda kind, body: _json_line({"type": kind, "sdp": "v=0\r\n" + body}),
        st.sampled_from(["offer", "answer", "pranswer", "rollback"]),
        st.text(max_size=300),
    ),
    st.builds(
        lambda lines: _json_line({"type": "answer", "sdp": "v=0\r\n" + "\r\n".join(lines)}),
        st.lists(
            st.sampled_from(
                [
                    "m=video 9 UDP/TLS/RTP/SAVPF 96",
                    "m=video x",
                    "m=application 9 x",
                    "a=ice-ufrag:abcd",
                    "a=ice-pwd:abcdefghijabcdefghij12",
                    "a=mid:0",
                    "a=setup:active",
                    "a=fingerprint:sha-256 00:11",
                    "c=IN IP4 0.0.0.0",
                ]
            ),
            max_size=10,
        ),
    ),
    # Candidates with fuzzed fields around a fixed host 127.0.0.1, so that even
    # a candidate the server accepted could never send traffic off this machine.
    st.builds(
        lambda head, tail, mid, label: _json_line(
            {
                "type": "candidate",
                "candidate": f"candidate:{' '.join(head)} 127.0.0.1 {' '.join(tail)}",
                "id": mid,
                "label": label,
            }
        ),
        st.lists(candidate_tokens, max_size=4),
        st.lists(candidate_tokens, max_size=4),
        json_values,
        json_values,
    ),
)


@pytest.mark.timeout(120)
@settings(LIVE_SETTINGS, max_examples=40)
@example(payload=_json_line({"type": "offer", "sdp": "v=0\r\n"}))
@example(payload=_json_line({"type": "answer", "sdp": "v=0\r\nm=video x\r\n"}))
@example(payload=b"{not json\n")
@example(payload=b"\xff\xfe\x00\n")
@example(payload=b"[1, 2, 3]\n")
@example(payload=_json_line({"type": "bogus"}))
# Well-formed candidates: one the server takes (then the sentinel ends the
# session), one aiortc refuses (no mid and no m-line index).
@example(
    payload=_json_line({"type": "candidate", "candidate": GOOD_CANDIDATE, "id": "0", "label": 0})
)
@example(payload=_json_line({"type": "candidate", "candidate": GOOD_CANDIDATE, "id": None}))
@given(payload=signaling_garbage)
def test_signaling_garbage_drops_only_that_connection(
    patient_server: Server, payload: bytes
) -> None:
    # The BYE must name this payload's fault (or, after a candidate the
    # server may take, the sentinel's), and come long before the timeout.
    bye = _dropped_after(patient_server, payload, DROP_WITHIN_S, sentinel=True)
    exact, negotiation_may_fail = _reasons_for(payload)
    allowed = bye["reason"] in exact or (
        negotiation_may_fail and bye["reason"].startswith("negotiation failed: ")
    )
    assert allowed, f"{bye['reason']!r} for {payload[:200]!r}; expected one of {exact}"


#: An answer with ICE credentials but no DTLS setup or fingerprint: aiortc's
#: setRemoteDescription raises AttributeError ('NoneType' object has no
#: attribute 'role'), which server/sessions/session.py does not catch.
ANSWER_WITHOUT_DTLS = _json_line(
    {
        "type": "answer",
        "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n"
        "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijabcdefghij12\r\n",
    }
)


@pytest.mark.timeout(60)
def test_answer_without_dtls_parameters_is_dropped_naming_it(patient_server: Server) -> None:
    bye = _dropped_after(patient_server, ANSWER_WITHOUT_DTLS, DROP_WITHIN_S)
    assert bye["reason"].startswith("negotiation failed: "), bye


@pytest.mark.timeout(60)
def test_client_that_never_answers_is_timed_out(server: Server) -> None:
    started = time.monotonic()
    bye = _dropped_after(server, b"", HANDSHAKE_TIMEOUT_S + 3)
    assert bye["reason"] == f"no answer within {HANDSHAKE_TIMEOUT_S:g} s"
    assert HANDSHAKE_TIMEOUT_S - 0.5 < time.monotonic() - started < HANDSHAKE_TIMEOUT_S + 3


#: What an over-long line may cost the server: it reads at most a couple of
#: line limits (64 KiB) before giving up, so anything near the size sent
#: (16 MiB, or twice that once decoded) means it buffered the line.
LINE_MEMORY_LIMIT = 10 << 20
HUGE_LINE = 16 << 20


@pytest.mark.timeout(60)
def test_lines_of_many_megabytes_are_cut_off(patient_server: Server) -> None:
    run_peers(patient_server.port, 1)  # a warm server, so RSS measures only the lines
    baseline = rss_bytes(patient_server.program.pid)
    for terminated in (False, True, False):
        payload = b"x" * HUGE_LINE + (b"\n" if terminated else b"")
        bye = _dropped_after(patient_server, payload, DROP_WITHIN_S)
        assert bye["reason"] == f"signaling error: line longer than {MAX_LINE_BYTES} bytes"
    growth = rss_bytes(patient_server.program.pid) - baseline
    print(f"\nRSS growth after 3 x {HUGE_LINE >> 20} MiB lines: {growth / 2**20:.1f} MiB")
    assert growth < LINE_MEMORY_LIMIT


# ---------------------------------------------------------------- data channel


def _rejected(message: Message) -> bool:
    try:
        decode_report(message)
    except InvalidReport:
        return True
    return False


def _report_json(pts: Any, x: Any, y: Any, **extra: Any) -> str:
    # json.dumps writes NaN and Infinity as bare literals, as a sloppy peer would.
    return json.dumps({"pts": pts, "x": x, "y": y, **extra})


valid_pts = st.integers(min_value=0, max_value=10**6)
coordinate = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
bad_coordinate = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, "1.5", True, [1.0], {}]),
    st.floats(min_value=1e6, exclude_min=True, allow_infinity=False),
    st.integers(min_value=10**7) | st.integers(max_value=-(10**7)),
)
bad_pts = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=2**63),
    st.floats(allow_nan=True),
    st.sampled_from(["0", True, False, None, [0]]),
)

#: Messages the decoder must reject ("malformed").
malformed_messages: st.SearchStrategy[Message] = st.one_of(
    st.text(max_size=300).filter(_rejected),
    st.binary(max_size=300).filter(_rejected),
    st.builds(_report_json, bad_pts, coordinate, coordinate),
    st.builds(_report_json, valid_pts, bad_coordinate, coordinate),
    st.builds(_report_json, valid_pts, coordinate, bad_coordinate),
    st.builds(_report_json, valid_pts, coordinate, st.none()),  # half a position
    st.builds(lambda pts: _report_json(pts, None, None, extra=1), valid_pts),
    st.builds(lambda pts: json.dumps({"pts": pts, "x": None}), valid_pts),
    json_values.map(json.dumps).filter(_rejected),
    # Oversized: a valid report padded past the 256-byte limit.
    st.integers(min_value=257, max_value=20000).map(
        lambda size: _report_json(0, 1.0, 1.0).ljust(size)
    ),
)

#: Well-formed reports naming a frame never sent ("unknown_frame").
unknown_frame_messages: st.SearchStrategy[Message] = st.builds(
    lambda pts, x, y: _report_json(pts, x, y),
    st.integers(min_value=10**10, max_value=2**63 - 1),
    coordinate,
    coordinate,
)

tagged_messages = st.one_of(
    malformed_messages.map(lambda m: ("malformed", m)),
    unknown_frame_messages.map(lambda m: ("unknown_frame", m)),
)

#: Each case the hypothesis strategies cover, written out once for sure.
HANDCRAFTED: list[tuple[str, Message]] = [
    ("malformed", '{"pts": 0, "x": NaN, "y": 1.0}'),
    ("malformed", '{"pts": 0, "x": Infinity, "y": -Infinity}'),
    ("malformed", '{"pts": 0, "x": 1e400, "y": 1.0}'),
    ("malformed", '{"pts": 0, "x": ' + "9" * 400 + ', "y": 1.0}'),
    ("malformed", '{"pts": 1.5, "x": 1.0, "y": 1.0}'),
    ("malformed", '{"pts": "0", "x": 1.0, "y": 1.0}'),
    ("malformed", '{"pts": true, "x": 1.0, "y": 1.0}'),
    ("malformed", '{"pts": -3000, "x": 1.0, "y": 1.0}'),
    ("malformed", '{"pts": 9223372036854775808, "x": 1.0, "y": 1.0}'),
    ("malformed", '{"pts": 0, "x": "1", "y": 1.0}'),
    ("malformed", '{"pts": 0, "x": 1.0}'),
    ("malformed", "[" * 10000),
    ("malformed", ""),
    ("malformed", b""),
    ("malformed", b"\xff\xfe\xfd"),
    ("malformed", b'{"pts": 0, "x": 1.0, "y": 1.0}' + b" " * 100_000),
    ("malformed", "x" * 60_000),
    ("unknown_frame", '{"pts": 9223372036854775807, "x": 1.0, "y": 1.0}'),
    ("unknown_frame", '{"pts": 1500, "x": 1.0, "y": 1.0}'),  # half-way between frames
]

ANSWERED_FRAMES = 15
DUPLICATES = 3


@pytest.mark.timeout(120)
@settings(LIVE_SETTINGS, max_examples=4)
@example(messages=HANDCRAFTED)
@given(messages=st.lists(tagged_messages, min_size=10, max_size=40))
def test_hostile_data_channel_messages_are_counted_not_scored(
    server: Server, messages: list[tuple[str, Message]]
) -> None:
    script = PeerScript(
        answer_frames=ANSWERED_FRAMES,
        hostile=[message for _, message in messages],
        repeat_answers=DUPLICATES,
    )
    [outcome] = run_peers(server.port, 1, script)
    report = server.report_of(outcome.local)
    expected = Counter(reason for reason, _ in messages)
    expected["duplicate"] = DUPLICATES
    assert report["end_reason"] == "client said bye", report  # the session carried on
    assert report["invalid_messages"] == outcome.hostile_sent == len(messages) + DUPLICATES
    assert report["invalid_by_reason"] == dict(expected), report
    # Only the valid answers were scored, so the detector's sub-pixel accuracy
    # shows through: one NaN or 1e6 px counted as an error would wreck it.
    assert report["frames_answered"] == outcome.valid_sent == ANSWERED_FRAMES, report
    assert report["frames_found"] == outcome.found_sent, report
    assert report["error_px"]["max"] < 1.0, report
    assert report["error_px"]["mean"] < 0.1, report


# ---------------------------------------------------------------- idle connections

# Last in the module: it ends with a session of the real client, after all
# the abuse above.
IDLE_CONNECTIONS = 50


@pytest.mark.timeout(90)
def test_many_idle_connections_are_bounded_and_then_real_client_is_served(
    server: Server,
) -> None:
    # A warm server: its first report plot starts the plotting worker, whose
    # pipes stay open for reuse; that is no leak per connection.
    warm_reports = len(read_reports(server.report_dir)) + 1
    run_peers(server.port, 1)
    wait_for_reports(server.report_dir, warm_reports)
    assert wait_for_plots(server.report_dir, warm_reports) >= warm_reports
    baseline_fds = open_fds(server.program.pid)
    reports_before = len(read_reports(server.report_dir))
    idle = [RawConnection(server.port) for _ in range(IDLE_CONNECTIONS)]
    try:
        first = [connection.read_line() or {"type": "closed"} for connection in idle]
        offered = [c for c, m in zip(idle, first, strict=True) if m["type"] == "offer"]
        refused = [m for m in first if m["type"] == "bye"]
        # Only max-sessions connections get a session; every other one is told
        # why and dropped at once instead of holding a socket.
        assert len(offered) == MAX_SESSIONS, first
        assert len(refused) == IDLE_CONNECTIONS - MAX_SESSIONS, first
        assert all("server busy" in m["reason"] for m in refused), refused
        # ... and closed: the BYE arrives before the server's close does (on
        # uvloop often a loop iteration later), so count once they are gone.
        for connection, message in zip(idle, first, strict=True):
            if message["type"] == "bye":
                connection.messages_until_closed()
        held = open_fds(server.program.pid) - baseline_fds
        print(f"\n{IDLE_CONNECTIONS} idle connections hold {held} server fds")
        # Each session: its TCP and a few UDP sockets (no report files: it
        # sent no frame).
        assert held <= MAX_SESSIONS * 9, held
        for connection in offered:  # the sessions time out like a silent client
            messages = connection.messages_until_closed()
            assert messages[-1]["reason"].startswith("no answer within"), messages
    finally:
        for connection in idle:
            connection.close()
    assert wait_until(lambda: open_fds(server.program.pid) <= baseline_fds + 1, timeout=5)

    # Refused connections never become sessions, and sessions that never
    # streamed a frame leave no report files either.
    def timed_out() -> list[dict[str, Any]]:
        return [
            s
            for s in server.program.json_documents()
            if str(s.get("end_reason", "")).startswith("no answer within")
            and s["peer"] in {c.peer for c in offered}
        ]

    # The summary is printed just after the BYE is sent.
    assert wait_until(lambda: len(timed_out()) == MAX_SESSIONS, 10), (
        timed_out(),
        [c.peer for c in offered],
        server.program.stdout[-3000:],
    )
    assert len(read_reports(server.report_dir)) == reports_before
    client = start_client(server.port, "--duration", "3")
    try:
        assert client.wait(timeout=60) == 0, client.describe()
    finally:
        client.close()
    report = wait_for_reports(server.report_dir, reports_before + 1)[-1]
    assert report["end_reason"] == "client said bye", report
    assert_tracked(report, min_answered=0.9)
