"""Self-tests of lab/network_lab.py: connectivity, loss, delay, rate, teardown.

All traffic stays inside namespaces these tests create (192.0.2.0/24). Missing
prerequisites FAIL with NetworkLab.available()'s message instead of skipping: the
project's setup installs them, so their absence is a setup bug worth seeing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.network_lab import (
    NETNS_ETC_DIR,
    NetworkLab,
    Side,
    list_netns,
    pid_alive,
    wait_for_line,
)

pytestmark = pytest.mark.netns

UDP_PORT = 9000
TCP_PORT = 9001
SINK_PORT = 9100


@pytest.fixture(scope="module", autouse=True)
def _prerequisites() -> None:
    ok, why = NetworkLab.available()
    if not ok:
        pytest.fail(f"NetworkLab prerequisites missing: {why}", pytrace=False)


@pytest.fixture()
def lab() -> Iterator[NetworkLab]:
    with NetworkLab() as network_lab:
        yield network_lab


def _start_echo(
    lab: NetworkLab,
    side: Side,
    kind: str = "udp-echo",
    port: int = UDP_PORT,
    duration: float = 25.0,
) -> subprocess.Popen[str]:
    proc = lab.python_tool(side, kind, "--port", str(port), "--duration", str(duration))
    wait_for_line(proc, "ready", timeout=10)
    return proc


def _tool_json(
    lab: NetworkLab, side: Side, tool: str, *args: str, timeout: float = 20.0
) -> dict[str, Any]:
    proc = lab.python_tool(side, tool, *args)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{tool} failed: {err}"
    result: dict[str, Any] = json.loads(out)
    return result


def _udp_probe(
    lab: NetworkLab, side: Side, host: str, count: int = 20, interval: float = 0.005, size: int = 64
) -> dict[str, Any]:
    return _tool_json(
        lab,
        side,
        "udp-probe",
        "--host",
        host,
        "--port",
        str(UDP_PORT),
        "--count",
        str(count),
        "--interval",
        str(interval),
        "--size",
        str(size),
        "--timeout",
        "1.0",
    )


def _peer(side: Side) -> Side:
    return "client" if side == "server" else "server"


@pytest.mark.timeout(20)
def test_available_reports_ok() -> None:
    assert NetworkLab.available() == (True, "ok")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("listener", ["server", "client"])
def test_connectivity_by_ip_and_host_name(lab: NetworkLab, listener: Side) -> None:
    talker = _peer(listener)
    name = lab.server_hostname if listener == "server" else lab.client_hostname
    getent = lab.run(talker, ["getent", "hosts", name]).stdout.split()
    assert getent[:2] == [lab.address(listener), name]

    _start_echo(lab, listener, "udp-echo", UDP_PORT)
    _start_echo(lab, listener, "tcp-echo", TCP_PORT)
    for host in (lab.address(listener), name):
        udp = _udp_probe(lab, talker, host)
        assert udp["received"] == udp["sent"] == 20, udp
        tcp = _tool_json(lab, talker, "tcp-probe", "--host", host, "--port", str(TCP_PORT))
        assert tcp["ok"], tcp


@pytest.mark.timeout(30)
def test_add_hosts_entry(lab: NetworkLab) -> None:
    lab.add_hosts_entry("tracker.example", lab.server_address, side="client")
    out = lab.run("client", ["getent", "hosts", "tracker.example"]).stdout.split()
    assert out[0] == lab.server_address
    # Only the client namespace got it; the host's own /etc/hosts is untouched.
    assert lab.run("server", ["getent", "hosts", "tracker.example"], check=False).returncode != 0
    assert "tracker.example" not in Path("/etc/hosts").read_text()


@pytest.mark.timeout(30)
def test_loss_20_percent_one_direction(lab: NetworkLab) -> None:
    _start_echo(lab, "server")
    lab.set_loss(20, side="client")
    result = _udp_probe(lab, "client", lab.server_hostname, count=500, interval=0.002)
    lost = result["sent"] - result["received"]
    print(f"loss: {lost}/{result['sent']} = {lost / result['sent']:.1%}")
    assert 0.10 <= lost / result["sent"] <= 0.30, result
    # Every lost round trip was dropped by the client->server rule, none elsewhere.
    assert lab.loss_counter("client") == lost
    assert lab.loss_counter("server") == 0


#: Datagrams whose first bytes look like each protocol WebRTC bundles on one UDP
#: 5-tuple (RFC 7983, RFC 5761): (name, hex). The RTP ones cover the edges: both
#: ends of the first-byte range 128..191, marker bit set (second byte 0xe0 = 224,
#: just above RTCP's 192..223), an RTX-like payload type (97), payload type 0.
STUN_LIKE = [("stun binding request", "0001002c2112a442"), ("stun response", "0101")]
DTLS_LIKE = [
    ("dtls handshake", "16fefd0000"),
    ("dtls app data (sctp)", "17fefd0001"),
    ("dtls alert", "15fefd"),
]
RTCP_LIKE = [
    ("rtcp sr", "80c80006"),
    ("rtcp rr", "81c90007"),
    ("rtcp nack", "81cd0003"),
    ("rtcp pli", "81ce0002"),
    ("rtcp remb", "8fce0005"),
    ("rtcp pt 192", "80c00001"),
    ("rtcp pt 223", "80df0001"),
    ("rtcp app", "80cc0002"),
]
RTP_LIKE = [
    ("rtp vp8", "80600001"),
    ("rtp vp8 marker", "80e00002"),
    ("rtp rtx", "80610003"),
    ("rtp pt 0", "80000004"),
    ("rtp csrc count 15", "8f600005"),
    ("rtp padding+ext", "b0600006"),
    ("rtp first byte 191", "bf7f0007"),
    ("rtp pt 95 marker", "80bf0008"),
]
#: Not WebRTC at all: first bytes outside 128..191 (ZRTP-ish 16, TURN channel 64,
#: 127, 192, 255).
OTHER = [
    ("byte 16", "10"),
    ("byte 64", "4000"),
    ("byte 127", "7f60"),
    ("byte 192", "c060"),
    ("byte 255", "ff60"),
    ("one byte 0x80", "80"),
]


def _send_and_record(lab: NetworkLab, sender: Side, payloads: list[str]) -> list[str]:
    """Send ``payloads`` (hex, in order) from ``sender``; what reached the peer."""
    sink_args = ["--port", str(SINK_PORT), "--duration", "10", "--idle", "0.5", "--record"]
    sink = lab.python_tool(_peer(sender), "udp-sink", *sink_args)
    wait_for_line(sink, "ready", timeout=10)
    peer_address = lab.address(_peer(sender))
    args = ["--host", peer_address, "--port", str(SINK_PORT), "--interval", "0.002"]
    for payload in payloads:
        args += ["--payload", payload]
    assert _tool_json(lab, sender, "udp-send", *args)["sent"] == len(payloads)
    out, err = sink.communicate(timeout=15)
    assert sink.returncode == 0, err
    received: list[str] = json.loads(out)["payloads"]
    return received


@pytest.mark.timeout(40)
def test_drop_first_rtp_drops_exactly_the_first_n_rtp_packets(lab: NetworkLab) -> None:
    n = 3
    lab.drop_first_rtp(n)  # default: what the server sends
    # Interleaved as in a session: STUN and DTLS first, then RTP among RTCP.
    # The one-byte 0x80 is too short for the rule's second-byte match: not RTP.
    mixed = [*STUN_LIKE, *DTLS_LIKE, *OTHER]
    for rtp, rtcp in zip(RTP_LIKE, RTCP_LIKE, strict=True):
        mixed += [rtp, rtcp]
    # The sink records the payloads, so identical ones would be ambiguous.
    assert len({h for _, h in mixed}) == len(mixed)

    # The other direction is untouched, RTP included (and counts nothing).
    back = _send_and_record(lab, "client", [h for _, h in mixed])
    assert back == [h for _, h in mixed]
    assert lab.first_rtp_dropped("client") == 0
    assert lab.first_rtp_dropped("server") == 0

    got = _send_and_record(lab, "server", [h for _, h in mixed])
    rtp_names = [name for name, _ in RTP_LIKE]
    dropped = [name for name, h in mixed if h not in got]
    print(f"dropped: {dropped}")
    assert dropped == rtp_names[:n]
    # Order kept, nothing else touched.
    assert got == [h for name, h in mixed if name not in rtp_names[:n]]
    assert lab.first_rtp_dropped("server") == n
    assert lab.loss_counter("server") == 0  # its own counter, not the loss rule's

    # Spent: later RTP passes, the counter stays at n.
    again = [h for _, h in RTP_LIKE]
    assert _send_and_record(lab, "server", again) == again
    assert lab.first_rtp_dropped("server") == n

    # A new call starts a fresh count; clear() removes the rule.
    lab.drop_first_rtp(1)
    assert _send_and_record(lab, "server", again) == again[1:]
    assert lab.first_rtp_dropped("server") == 1
    lab.clear()
    assert _send_and_record(lab, "server", again) == again
    assert lab.first_rtp_dropped("server") == 0


@pytest.mark.timeout(30)
def test_drop_first_rtp_runs_before_loss(lab: NetworkLab) -> None:
    # With 100 % loss as well, the first-RTP rule still counts (and drops) the
    # first n RTP packets sent: it sees them before the loss rule does.
    lab.drop_first_rtp(2, side="client")
    lab.set_loss(100, side="client", udp_only=True)
    payloads = [h for _, h in RTP_LIKE]
    assert _send_and_record(lab, "client", payloads) == []
    assert lab.first_rtp_dropped("client") == 2
    assert lab.loss_counter("client") == len(payloads) - 2


@pytest.mark.timeout(30)
def test_delay_50ms_one_direction_keeps_order(lab: NetworkLab) -> None:
    _start_echo(lab, "server")
    base = _udp_probe(lab, "client", lab.server_address)["rtt_ms_median"]
    lab.set_delay(50, side="client")
    # ~1.9 Mbit/s of 1200-byte datagrams: the delayer must keep up with video rates.
    result = _udp_probe(lab, "client", lab.server_address, count=200, interval=0.005, size=1200)
    print(
        f"delay: baseline rtt {base:.2f} ms, delayed median {result['rtt_ms_median']:.2f}"
        f" max {result['rtt_ms_max']:.2f} ms"
    )
    assert result["received"] == 200, result
    assert result["reordered"] == 0, result
    assert base + 45 <= result["rtt_ms_median"] <= base + 65, result
    assert result["rtt_ms_max"] <= base + 100, result
    # Changing the delay at run time reuses the same delayer process.
    pid = lab.delayer_pids()["client"]
    lab.set_delay(20, side="client")
    assert lab.delayer_pids()["client"] == pid
    changed = _udp_probe(lab, "client", lab.server_address)
    assert base + 15 <= changed["rtt_ms_median"] <= base + 35, changed


@pytest.mark.timeout(30)
def test_rate_1mbit_caps_throughput(lab: NetworkLab) -> None:
    lab.set_rate(1.0, side="client")
    sink = lab.python_tool(
        "server", "udp-sink", "--port", str(SINK_PORT), "--duration", "8", "--idle", "0.5"
    )
    wait_for_line(sink, "ready", timeout=10)
    blast = _tool_json(
        lab,
        "client",
        "udp-blast",
        "--host",
        lab.server_hostname,
        "--port",
        str(SINK_PORT),
        "--duration",
        "1.5",
        "--size",
        "1200",
    )
    out, err = sink.communicate(timeout=15)
    received = json.loads(out)
    print(
        f"rate: offered {blast['bytes'] * 8 / 1.5 / 1e6:.0f} Mbit/s, "
        f"received {received['rate_mbit']:.3f} Mbit/s"
    )
    assert received["packets"] > 50, received
    assert 0.6 <= received["rate_mbit"] <= 1.3, received


@pytest.mark.timeout(30)
def test_clear_removes_impairments(lab: NetworkLab) -> None:
    _start_echo(lab, "server")
    lab.set_loss(50)
    lab.set_delay(30)
    lab.set_rate(0.5)
    lab.clear()
    assert lab.delayer_pids() == {}
    result = _udp_probe(lab, "client", lab.server_address, count=100)
    assert result["received"] == 100, result
    assert result["rtt_ms_median"] < 10, result
    assert "tbf" not in lab.run("client", ["tc", "qdisc", "show", "dev", "lab0"]).stdout


@pytest.mark.timeout(30)
def test_close_removes_everything() -> None:
    lab = NetworkLab().start()
    echo = _start_echo(lab, "server")
    lab.set_delay(10)
    lab.set_loss(5)
    lab.set_rate(5)
    delayers = list(lab.delayer_pids().values())
    assert len(delayers) == 2 and all(pid_alive(p) for p in delayers)
    names = [lab.server_ns, lab.client_ns]
    assert set(names) <= set(list_netns())

    lab.close()
    lab.close()  # idempotent
    assert not set(names) & set(list_netns())
    assert not any((NETNS_ETC_DIR / n).exists() for n in names)
    assert echo.poll() is not None
    deadline = time.monotonic() + 3
    while any(pid_alive(p) for p in delayers) and time.monotonic() < deadline:
        time.sleep(0.05)  # terminated children are reaped by Popen.wait in close()
    assert not any(pid_alive(p) for p in delayers)


_CRASHING_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo_root!r})
    from lab.network_lab import NetworkLab
    lab = NetworkLab().start()
    lab.set_delay(10)
    print(lab.server_ns, lab.client_ns, flush=True)
    time.sleep(20)  # bounded: the test kills us long before
""")


@pytest.mark.timeout(40)
def test_cleanup_stale_removes_only_dead_owners_labs(lab: NetworkLab) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CRASHING_CHILD.format(repo_root=str(Path(__file__).resolve().parents[1])),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = wait_for_line(child, "balllab-", timeout=20)
        stale: list[str] = line.split()
        os.kill(child.pid, signal.SIGKILL)  # a crash: no close(), no atexit
        child.wait(timeout=5)
        assert set(stale) <= set(list_netns())

        removed = NetworkLab.cleanup_stale()
        assert set(stale) <= set(removed)
        assert not set(stale) & set(list_netns())
        assert not any((NETNS_ETC_DIR / n).exists() for n in stale)
        # The live lab of this process was left alone and still works.
        assert {lab.server_ns, lab.client_ns} <= set(list_netns())
        _start_echo(lab, "server")
        assert _udp_probe(lab, "client", lab.server_address)["received"] == 20
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=5)
        NetworkLab.cleanup_stale()
