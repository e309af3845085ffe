"""NetworkLab: two network namespaces joined by a veth pair, with impairments.

A reusable test fixture library (not a test module). Typical use::

    with NetworkLab() as lab:
        lab.set_delay(50, side="client")      # client -> server packets held 50 ms
        lab.set_loss(2)                       # 2 % loss in both directions
        lab.set_rate(1.5, side="server")      # server -> client capped at 1.5 Mbit/s
        lab.drop_first_rtp(2)                 # the first 2 RTP packets server -> client
        server = lab.popen("server", [sys.executable, "-m", "server", ...])
        client = lab.popen("client", [..., "--host", "ball-server"])

Topology (addresses from the documentation range 192.0.2.0/24 by default)::

    [ns <name>-s] lab0 192.0.2.1/24  <== veth ==>  lab0 192.0.2.2/24 [ns <name>-c]

Inside both namespaces ``ball-server`` resolves to the server address and
``ball-client`` to the client address (``ip netns exec`` bind-mounts
``/etc/netns/<ns>/hosts`` over ``/etc/hosts``).

With ``relay=True`` a third namespace, the relay's (``<name>-r``), hangs off
both others by a veth pair of its own, for a TURN server both can reach::

    [ns -s] relay0 198.51.100.2/24 <==> srv0 198.51.100.1/24 [ns -r] cli0 203.0.113.1/24 <==> relay0 203.0.113.2/24 [ns -c]
                                    relay address 198.18.0.1 (on the relay's lo)

``ball-relay`` resolves to the relay address everywhere, and server and
client each have a route to it (only to it: the relay namespace does not
forward, so it joins nobody else). The relay's own routes reach every
address the others advertise as ICE candidates: coturn closes an allocation
whose send to a peer fails with "Network is unreachable", so the lab0
subnet goes towards the server, where what the server does not own is
dropped silently. ``block_direct_udp()`` then cuts UDP on lab0 (TCP,
signaling and HTTP, still pass), so every media path goes through the relay.

Why each impairment is built the way it is (the kernel here has no netem):

- loss: an nftables table ``inet balllab`` with ``iifname lab0 numgen random mod 100
  < N drop`` in a prerouting chain of the RECEIVING namespace. Dropping at the peer's
  ingress, not at the sender's egress, matters: a netfilter drop on a local process'
  own egress makes its ``sendto()`` fail with EPERM, which a real lossy path never
  does (and which aiortc would treat as a socket error). By default it hits ALL IP
  traffic of that direction, TCP signalling included, as on a real lossy path (TCP
  just retransmits); ``udp_only=True`` restricts it to UDP (the media). ARP is not IP,
  so it is never dropped: neighbour resolution stays reliable.
- rate: ``tc qdisc replace dev lab0 root tbf rate R burst 16kb latency 200ms`` on the
  sender's egress, where a bottleneck queue really is. When the tbf queue
  overflows the kernel drops silently for UDP (ENOBUFS is only reported with
  IP_RECVERR), like a router would.
- delay: an iptables-nft rule ``-t mangle -A PREROUTING -i lab0 -j NFQUEUE
  --queue-num Q --queue-bypass`` plus ``packet_delayer.py`` running in the RECEIVING
  namespace. At ingress the held packets no longer count against the sender's socket
  memory (on egress TCP small queues would throttle a delayed TCP flow to a trickle).
  ``nft``'s own ``queue`` statement is not available on this kernel (nft_queue
  missing), the xtables NFQUEUE target is. ``--queue-bypass`` lets traffic flow
  undelayed if the delayer dies instead of black-holing it. Loss (priority -300) is
  applied before the delay (mangle, -150), so lost packets cost the delayer nothing.
- first RTP packets: ``drop_first_rtp(n)`` drops exactly the first ``n`` RTP packets
  a side sends, then nothing, with one rule in a chain ``rtp_head`` (prerouting,
  priority -310) of the RECEIVING namespace (ingress, as for loss)::

      iifname "lab0" meta l4proto udp @th,64,8 128-191 @th,72,8 != 192-223
          numgen inc mod 2147483648 < N counter drop

  WebRTC bundles STUN, DTLS (with the data channel's SCTP inside), SRTP and SRTCP on
  one UDP 5-tuple. RFC 7983 tells them apart by the first payload byte (``@th,64,8``,
  the byte after the 8-byte UDP header): 0..3 STUN, 20..63 DTLS, 128..191 RTP or
  RTCP. RFC 5761 then tells RTCP by its second byte, the packet type 192..223 (SR 200,
  RR 201, NACK 205, PLI 206...); RTP's second byte is marker bit plus payload type,
  and payload types 64..95 are reserved so that it never falls there. SRTP and SRTCP
  leave these headers in clear. ``numgen inc`` is a packet counter of the rule itself,
  advanced only by the packets that matched everything before it (the RTP ones),
  starting at 0: ``< N`` is true for exactly the first N. nft's ``quota`` counts
  bytes, not packets, so it cannot stop after exactly N packets of varying size. The
  chain runs before the loss chain (-310 < -300): with both set, the first N RTP
  packets the sender emits are the ones dropped, whatever the random loss does.
  Retransmissions (RTX: another payload type and SSRC) count like any RTP packet,
  but none can be among the first N: a receiver asks for one (NACK) only about
  packets after one it received, and it receives no RTP until the N are dropped.
  Dropped packets are never recovered (aiortc's NACKs start at the first packet it
  sees), so the receiver never sees the first packets of the stream.

Every impairment applies to one direction, named by its sender:
``side="client"`` impairs client->server, ``side="server"`` server->client and
``side="both"`` (the default) both directions. A round trip with ``set_delay(50)`` on
both sides therefore grows by ~100 ms.

The file doubles as a small CLI of measurement helpers (UDP/TCP echo, probe,
blast, send, sink) that tests run inside the namespaces::

    python lab/network_lab.py udp-echo --bind 0.0.0.0 --port 9000 --duration 10
"""

from __future__ import annotations

import argparse
import atexit
import ipaddress
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

Side = Literal["server", "client"]
SideSpec = Literal["server", "client", "both"]
#: A namespace to run programs in: the two sides, or the relay's (``relay=True``).
Node = Literal["server", "client", "relay"]

HERE = Path(__file__).resolve().parent
NETWORK_LAB_PY = str(Path(__file__).resolve())
PACKET_DELAYER_PY = str(HERE / "packet_delayer.py")

DEFAULT_PREFIX = "balllab"
IFNAME = "lab0"  # same name in both namespaces: names are per namespace
NFT_TABLE = "balllab"
#: The chain of drop_first_rtp's rule (the loss rule has the chain ``ingress``).
RTP_HEAD_CHAIN = "rtp_head"
#: numgen's modulus for drop_first_rtp: its counter wraps (and would drop N more)
#: only after 2**31 RTP packets, years of video.
RTP_HEAD_NUMGEN_MOD = 1 << 31
#: The interfaces that join the relay's namespace (``relay=True``).
RELAY_IFNAME = "relay0"  # in the server's and the client's namespace
RELAY_SERVER_IFNAME = "srv0"  # in the relay's, towards the server
RELAY_CLIENT_IFNAME = "cli0"  # in the relay's, towards the client
#: The chain of block_direct_udp's rule: before every impairment.
DIRECT_CHAIN = "direct"
NETNS_ETC_DIR = Path("/etc/netns")
CMD_TIMEOUT_S = 15.0


class LabError(RuntimeError):
    """A lab operation failed; the message carries the command and its stderr."""


def _run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = CMD_TIMEOUT_S,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a host command with a bounded time; raise LabError with stderr on failure."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, input=input_text
        )
    except (subprocess.TimeoutExpired, FileNotFoundError) as exc:
        raise LabError(f"{' '.join(argv)}: {exc}") from exc
    if check and proc.returncode != 0:
        raise LabError(
            f"{' '.join(argv)} exited {proc.returncode}: "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_process(proc: subprocess.Popen[Any], grace_s: float = 2.0) -> None:
    """Terminate one process we started (by its own pid), kill it if it lingers."""
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        except ProcessLookupError:
            pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


def wait_for_line(
    proc: subprocess.Popen[str], expected: str = "ready", timeout: float = 10.0
) -> str:
    """Read ``proc.stdout`` (text mode) until a line starting with ``expected``.

    Bounded by ``timeout``; raises LabError (with the process' stderr if it died).
    """
    assert proc.stdout is not None, "start the process with stdout=subprocess.PIPE"
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LabError(f"timed out waiting for {expected!r} from {proc.args!r}")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if not ready:
            continue
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read() if proc.stderr is not None else ""
            raise LabError(
                f"{proc.args!r} exited ({proc.poll()}) before {expected!r}: {err.strip()}"
            )
        if line.startswith(expected):
            return line.strip()


class _Delayer:
    """One packet_delayer.py process plus its NFQUEUE rule, in the namespace that
    receives the delayed direction."""

    def __init__(self, netns: str, queue_num: int, max_runtime_s: float) -> None:
        self.netns = netns
        self.queue_num = queue_num
        self.max_runtime_s = max_runtime_s
        self.proc: subprocess.Popen[str] | None = None
        self._rule = [
            "-i",
            IFNAME,
            "-j",
            "NFQUEUE",
            "--queue-num",
            str(queue_num),
            "--queue-bypass",
        ]

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, delay_ms: float, jitter_ms: float) -> None:
        # `ip netns exec` execs the command, so proc.pid is the delayer itself.
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.netns,
                sys.executable,
                PACKET_DELAYER_PY,
                "--queue-num",
                str(self.queue_num),
                "--delay-ms",
                str(delay_ms),
                "--jitter-ms",
                str(jitter_ms),
                "--max-runtime-s",
                str(self.max_runtime_s),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        # Install the rule only once the queue is bound (ready), so no packet is
        # ever queued while nobody listens.
        wait_for_line(self.proc, "ready", timeout=10.0)
        _run(self._rule_command("-A"))

    def _rule_command(self, action: str) -> list[str]:
        """Add (``-A``) or delete (``-D``) the NFQUEUE rule in the namespace."""
        return [
            "ip",
            "netns",
            "exec",
            self.netns,
            "iptables-nft",
            "-t",
            "mangle",
            action,
            "PREROUTING",
            *self._rule,
        ]

    def update(self, delay_ms: float, jitter_ms: float) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        if self.proc.poll() is not None:
            raise LabError(
                f"packet delayer in {self.netns} died "
                f"(rc={self.proc.returncode}); set_delay(0) resets it"
            )
        self.proc.stdin.write(f"delay {delay_ms} {jitter_ms}\n")
        self.proc.stdin.flush()
        wait_for_line(self.proc, "ok", timeout=5.0)

    def stop(self) -> None:
        # Remove the rule first so traffic never hits a queue without a reader
        # (it would pass thanks to --queue-bypass anyway, but undelayed & counted).
        _run(self._rule_command("-D"), check=False)
        if self.proc is not None:
            _stop_process(self.proc)
            self.proc = None


class NetworkLab:
    """Two namespaces (server, client) joined by a veth pair, with impairments.

    Lifecycle: ``start()`` / ``close()`` or use as a context manager. ``close()`` is
    idempotent and also runs at interpreter exit if a test forgot it. Namespace names
    carry the creating pid, so ``cleanup_stale()`` removes only leftovers of dead
    processes and never a lab another live test run is using.
    """

    def __init__(
        self,
        *,
        prefix: str = DEFAULT_PREFIX,
        server_address: str = "192.0.2.1",
        client_address: str = "192.0.2.2",
        prefix_len: int = 24,
        server_hostname: str = "ball-server",
        client_hostname: str = "ball-client",
        delayer_max_runtime_s: float = 3600.0,
        ipv6: bool = False,
        relay: bool = False,
        relay_address: str = "198.18.0.1",
        relay_hostname: str = "ball-relay",
        server_relay_link: tuple[str, str] = ("198.51.100.2", "198.51.100.1"),
        client_relay_link: tuple[str, str] = ("203.0.113.2", "203.0.113.1"),
    ) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,15}", prefix):
            raise ValueError("prefix must be lowercase alphanumeric, <= 16 chars")
        net = ipaddress.ip_interface(f"{server_address}/{prefix_len}").network
        if ipaddress.ip_address(client_address) not in net or server_address == client_address:
            raise ValueError("server and client addresses must differ and share a subnet")
        self.prefix = prefix
        self.name = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
        self.server_ns = f"{self.name}-s"
        self.client_ns = f"{self.name}-c"
        #: The relay's namespace, with ``relay=True`` (else None).
        self.relay_ns = f"{self.name}-r" if relay else None
        self.relay_address = relay_address
        self.relay_hostname = relay_hostname
        #: (this side's address, the relay's) on each side's link to the relay.
        self.relay_links: dict[Side, tuple[str, str]] = {
            "server": server_relay_link,
            "client": client_relay_link,
        }
        self.server_address = server_address
        self.client_address = client_address
        self.prefix_len = prefix_len
        self.server_hostname = server_hostname
        self.client_hostname = client_hostname
        self.delayer_max_runtime_s = delayer_max_runtime_s
        self.ipv6 = ipv6
        # NFQUEUE numbers are per namespace already; a random base additionally keeps
        # them unique per lab, so rules are unambiguous when reading dumps.
        base = 1000 + secrets.randbelow(30000) * 2
        self._queue_nums: dict[Side, int] = {"server": base, "client": base + 1}
        self._hosts: dict[Node, dict[str, str]] = {"server": {}, "client": {}, "relay": {}}
        self._delayers: dict[Side, _Delayer] = {}
        self._procs: list[subprocess.Popen[Any]] = []
        self._started = False
        self._closed = False

    # ----------------------------------------------------------------- lifecycle
    @staticmethod
    def available() -> tuple[bool, str]:
        """Check prerequisites; (True, "ok") or (False, what is missing and how to fix)."""
        missing: list[str] = []
        if os.geteuid() != 0:
            missing.append("must run as root (network namespaces, nftables, tc)")
        for tool, pkg in (
            ("ip", "iproute2"),
            ("tc", "iproute2"),
            ("nft", "nftables"),
            ("iptables-nft", "iptables"),
            ("getent", "libc-bin"),
        ):
            if shutil.which(tool) is None:
                missing.append(f"`{tool}` not found (apt-get install {pkg})")
        probe = subprocess.run(
            [sys.executable, "-c", "import netfilterqueue"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if probe.returncode != 0:
            missing.append(
                "python module netfilterqueue not importable by "
                f"{sys.executable} (apt-get install libnetfilter-queue-dev gcc "
                "libc6-dev python3-dev; pip install netfilterqueue==1.1.0)"
            )
        if missing:
            return False, "; ".join(missing)
        return True, "ok"

    def start(self) -> NetworkLab:
        if self._started:
            raise LabError("lab already started")
        if self._closed:
            raise LabError("lab was closed; create a new one")
        self._started = True
        atexit.register(self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        s, c = self.server_ns, self.client_ns
        _run(["ip", "netns", "add", s])
        _run(["ip", "netns", "add", c])
        # Create the veth pair directly inside the namespaces: it never appears in
        # the host namespace, so interface names cannot clash between labs.
        _run(
            [
                "ip",
                "link",
                "add",
                IFNAME,
                "netns",
                s,
                "type",
                "veth",
                "peer",
                "name",
                IFNAME,
                "netns",
                c,
            ]
        )
        for ns, addr in ((s, self.server_address), (c, self.client_address)):
            _run(["ip", "-n", ns, "addr", "add", f"{addr}/{self.prefix_len}", "dev", IFNAME])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            if not self.ipv6:
                # No link-local address, router solicitations or MLD chatter: loss
                # counters and rates see only test traffic, and ICE gathers only
                # the IPv4 address. /proc/sys/net is per namespace.
                _run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns,
                        "sh",
                        "-c",
                        f"echo 1 > /proc/sys/net/ipv6/conf/{IFNAME}/disable_ipv6",
                    ]
                )
            _run(["ip", "-n", ns, "link", "set", IFNAME, "up"])
            # An empty nft table per namespace; set_loss and drop_first_rtp only
            # swap the rule of their chain. Priorities -310 and -300 run before
            # conntrack (a dropped packet leaves no trace) and after defragmentation
            # (-400: the raw payload match sees whole datagrams).
            _run(
                ["ip", "netns", "exec", ns, "nft", "-f", "-"],
                input_text=(
                    f"table inet {NFT_TABLE} {{\n"
                    f"  chain {RTP_HEAD_CHAIN} {{\n"
                    "    type filter hook prerouting priority -310; policy accept;\n"
                    "  }\n"
                    "  chain ingress {\n"
                    "    type filter hook prerouting priority -300; policy accept;\n"
                    "  }\n"
                    "}\n"
                ),
            )
        if self.relay_ns is not None:
            self._build_relay(self.relay_ns)
        nodes: tuple[Node, ...] = (
            ("server", "client", "relay") if self.relay_ns else ("server", "client")
        )
        for node in nodes:
            self._hosts[node][self.server_hostname] = self.server_address
            self._hosts[node][self.client_hostname] = self.client_address
            if self.relay_ns is not None:
                self._hosts[node][self.relay_hostname] = self.relay_address
            self._write_hosts(node)

    def _build_relay(self, r: str) -> None:
        _run(["ip", "netns", "add", r])
        _run(["ip", "-n", r, "link", "set", "lo", "up"])
        _run(["ip", "-n", r, "addr", "add", f"{self.relay_address}/32", "dev", "lo"])
        _run(["ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        links = (
            ("server", self.server_ns, RELAY_SERVER_IFNAME),
            ("client", self.client_ns, RELAY_CLIENT_IFNAME),
        )
        for side, ns, relay_ifname in links:
            own, relays = self.relay_links[side]  # type: ignore[index]
            _run(
                [
                    "ip", "link", "add", RELAY_IFNAME, "netns", ns,
                    "type", "veth", "peer", "name", relay_ifname, "netns", r,
                ]
            )  # fmt: skip
            for namespace, ifname, address in ((ns, RELAY_IFNAME, own), (r, relay_ifname, relays)):
                _run(["ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", ifname])
                _run(
                    [
                        "ip", "netns", "exec", namespace, "sh", "-c",
                        f"echo 1 > /proc/sys/net/ipv6/conf/{ifname}/disable_ipv6",
                    ]
                )  # fmt: skip
                _run(["ip", "-n", namespace, "link", "set", ifname, "up"])
            # Only the relay is reachable this way, never the far side.
            _run(["ip", "-n", ns, "route", "add", f"{self.relay_address}/32", "via", relays])
        # Towards the server for the whole lab0 subnet: its address answers,
        # the client's ends in a silent drop there (no forwarding), and no
        # send from the relay ever fails with "Network is unreachable".
        lab_subnet = ipaddress.ip_interface(f"{self.server_address}/{self.prefix_len}").network
        _run(["ip", "-n", r, "route", "add", str(lab_subnet), "via", self.relay_links["server"][0]])

    def block_direct_udp(self) -> None:
        """Drop all UDP between server and client on lab0, both ways; TCP still passes.

        Matched on the interface, not on addresses: a host sends from any of
        its addresses over a link.
        """
        for side in ("server", "client"):
            self._nft(
                side,  # type: ignore[arg-type]
                f"add chain inet {NFT_TABLE} {DIRECT_CHAIN} "
                "{ type filter hook prerouting priority -320; policy accept; }\n"
                f"flush chain inet {NFT_TABLE} {DIRECT_CHAIN}\n"
                f'add rule inet {NFT_TABLE} {DIRECT_CHAIN} iifname "{IFNAME}" '
                "meta l4proto udp counter drop\n",
            )

    def direct_udp_dropped(self, side: Side) -> int:
        """UDP packets to ``side`` that block_direct_udp's rule dropped."""
        out = self.run(side, ["nft", "list", "chain", "inet", NFT_TABLE, DIRECT_CHAIN]).stdout
        found = re.search(r"counter packets (\d+)", out)
        return int(found.group(1)) if found else 0

    def close(self) -> None:
        """Tear everything down; safe to call repeatedly and after a failed start()."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        errors: list[str] = []
        for proc in self._procs:
            _stop_process(proc)
        self._procs.clear()
        for delayer in list(self._delayers.values()):
            try:
                delayer.stop()
            except Exception as exc:  # keep tearing down the rest
                errors.append(str(exc))
        self._delayers.clear()
        for ns in (self.server_ns, self.client_ns, self.relay_ns):
            if ns is None:
                continue
            try:
                _remove_netns(ns)
            except Exception as exc:
                errors.append(str(exc))
        if errors:
            raise LabError("close() incomplete: " + "; ".join(errors))

    def __enter__(self) -> NetworkLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def cleanup_stale(cls, prefix: str = DEFAULT_PREFIX) -> list[str]:
        """Remove namespaces (and /etc/netns dirs) left by crashed runs.

        Only names whose embedded creator pid is dead are touched, so labs of
        concurrently running tests survive. Returns the removed namespace names.
        """
        pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)-[0-9a-f]+-[scr]$")
        names = set(list_netns())
        if NETNS_ETC_DIR.is_dir():
            names.update(p.name for p in NETNS_ETC_DIR.iterdir())
        removed: list[str] = []
        for name in sorted(names):
            match = pattern.match(name)
            if match and not pid_alive(int(match.group(1))):
                _remove_netns(name)
                removed.append(name)
        return removed

    # ----------------------------------------------------------------- processes
    def ns(self, side: Node) -> str:
        if side == "server":
            return self.server_ns
        if side == "client":
            return self.client_ns
        if side == "relay" and self.relay_ns is not None:
            return self.relay_ns
        raise ValueError(
            f"side must be 'server' or 'client' (or 'relay' with relay=True), not {side!r}"
        )

    def address(self, side: Node) -> str:
        if side == "relay":
            self.ns(side)  # validates
            return self.relay_address
        return self.server_address if side == "server" else self.client_address

    def exec_argv(self, side: Node, argv: Sequence[str]) -> list[str]:
        """The argv that runs ``argv`` inside the namespace of ``side``."""
        return ["ip", "netns", "exec", self.ns(side), *argv]

    def popen(self, side: Node, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside a namespace. The environment is inherited (PYTHONPATH
        etc.) unless ``env=`` is given. The process is stopped by ``close()``."""
        self._require_running()
        proc = subprocess.Popen(self.exec_argv(side, argv), **kwargs)
        self._procs.append(proc)
        return proc

    def run(
        self, side: Node, argv: Sequence[str], *, timeout: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to completion inside a namespace (bounded by ``timeout``)."""
        self._require_running()
        return _run(self.exec_argv(side, argv), check=check, timeout=timeout)

    def python_tool(
        self, side: Node, tool: str, *args: str, **kwargs: Any
    ) -> subprocess.Popen[str]:
        """Start one of this module's CLI helpers (udp-echo, ...) inside a namespace,
        with text pipes for stdout/stderr."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("text", True)
        return self.popen(side, [sys.executable, NETWORK_LAB_PY, tool, *args], **kwargs)

    # ----------------------------------------------------------------- names
    def add_hosts_entry(self, name: str, address: str, side: SideSpec = "both") -> None:
        """Make ``name`` resolve to ``address`` inside the namespace(s) (/etc/hosts)."""
        ipaddress.ip_address(address)
        if not re.fullmatch(r"[A-Za-z0-9.-]+", name):
            raise ValueError(f"bad host name {name!r}")
        for s in self._sides(side):
            self._hosts[s][name] = address
            self._write_hosts(s)

    def _write_hosts(self, side: Node) -> None:
        # `ip netns exec` bind-mounts every file in /etc/netns/<ns>/ over /etc/ for
        # the command it runs, so this replaces /etc/hosts for that namespace only.
        directory = NETNS_ETC_DIR / self.ns(side)
        directory.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines += [f"{addr}\t{name}" for name, addr in self._hosts[side].items()]
        (directory / "hosts").write_text("\n".join(lines) + "\n")

    # ----------------------------------------------------------------- impairments
    def set_loss(self, percent: float, side: SideSpec = "both", *, udp_only: bool = False) -> None:
        """Drop ``percent`` % (integer granularity) of the packets the side(s) send."""
        if not 0 <= percent <= 100:
            raise ValueError("percent must be within 0..100")
        pct = int(round(percent))
        match = "meta l4proto udp " if udp_only else ""
        for s in self._sides(side):
            # Installed at the peer's ingress: see the module doc for why.
            script = f"flush chain inet {NFT_TABLE} ingress\n"
            # numgen's values are 0..99: "< 100" is refused, so 100 % has no test.
            chance = f"numgen random mod 100 < {pct} " if pct < 100 else ""
            if pct > 0:
                script += (
                    f'add rule inet {NFT_TABLE} ingress iifname "{IFNAME}" '
                    f"{match}{chance}counter drop\n"
                )
            self._nft(_peer(s), script)

    def set_rate(
        self, mbit: float, side: SideSpec = "both", *, burst_kb: int = 16, latency_ms: int = 200
    ) -> None:
        """Cap the rate the side(s) send at (tbf on their veth egress)."""
        if mbit <= 0:
            raise ValueError("mbit must be > 0 (use clear_rate() to remove)")
        kbit = max(1, int(round(mbit * 1000)))
        for s in self._sides(side):
            _run(
                [
                    "tc",
                    "-n",
                    self.ns(s),
                    "qdisc",
                    "replace",
                    "dev",
                    IFNAME,
                    "root",
                    "tbf",
                    "rate",
                    f"{kbit}kbit",
                    "burst",
                    f"{burst_kb}kb",
                    "latency",
                    f"{latency_ms}ms",
                ]
            )

    def set_delay(self, ms: float, side: SideSpec = "both", *, jitter_ms: float = 0.0) -> None:
        """Hold the packets the side(s) send for ``ms`` (+/- uniform ``jitter_ms``,
        order preserved). ``ms == 0 and jitter_ms == 0`` removes the delay.
        Keyed by sender side; the delayer runs in the peer namespace (module doc)."""
        if ms < 0 or jitter_ms < 0:
            raise ValueError("delay and jitter must be >= 0")
        self._require_running()
        for s in self._sides(side):
            delayer = self._delayers.get(s)
            if ms == 0 and jitter_ms == 0:
                if delayer is not None:
                    delayer.stop()
                    del self._delayers[s]
            elif delayer is not None:
                delayer.update(ms, jitter_ms)
            else:
                delayer = _Delayer(
                    self.ns(_peer(s)), self._queue_nums[s], self.delayer_max_runtime_s
                )
                self._delayers[s] = delayer
                try:
                    delayer.start(ms, jitter_ms)
                except BaseException:
                    delayer.stop()
                    del self._delayers[s]
                    raise

    def drop_first_rtp(self, n: int, side: SideSpec = "server") -> None:
        """Drop exactly the first ``n`` RTP packets the side(s) send, then none.

        Only RTP matches: never STUN, DTLS (nor the data channel inside it) or
        RTCP; see the module doc for the rule and why RTX cannot be among the
        ``n``. Installed at the peer's ingress like the loss rule. Each call starts
        a fresh count; ``n == 0`` removes the rule. The default side is the server,
        the sender of the video.
        """
        if n < 0:
            raise ValueError("n must be >= 0")
        for s in self._sides(side):
            script = f"flush chain inet {NFT_TABLE} {RTP_HEAD_CHAIN}\n"
            if n > 0:
                script += (
                    f'add rule inet {NFT_TABLE} {RTP_HEAD_CHAIN} iifname "{IFNAME}" '
                    "meta l4proto udp @th,64,8 128-191 @th,72,8 != 192-223 "
                    f"numgen inc mod {RTP_HEAD_NUMGEN_MOD} < {n} counter drop\n"
                )
            self._nft(_peer(s), script)

    def first_rtp_dropped(self, side: Side) -> int:
        """RTP packets sent by ``side`` that drop_first_rtp's rule dropped (0 without)."""
        out = self.run(
            _peer(side), ["nft", "list", "chain", "inet", NFT_TABLE, RTP_HEAD_CHAIN]
        ).stdout
        found = re.search(r"counter packets (\d+)", out)
        return int(found.group(1)) if found else 0

    def clear_rate(self, side: SideSpec = "both") -> None:
        for s in self._sides(side):
            # Fails harmlessly when no qdisc was set (veth default is noqueue).
            _run(["tc", "-n", self.ns(s), "qdisc", "del", "dev", IFNAME, "root"], check=False)

    def clear(self, side: SideSpec = "both") -> None:
        """Remove loss, first-RTP drop, rate and delay impairments from the side(s)."""
        self.set_loss(0, side)
        self.drop_first_rtp(0, side)
        self.clear_rate(side)
        self.set_delay(0, side)

    def delayer_pids(self) -> dict[Side, int]:
        """Pids of running delayers, keyed by the sender side they delay."""
        return {s: d.pid for s, d in self._delayers.items() if d.pid is not None}

    def loss_counter(self, side: Side) -> int:
        """Packets sent by ``side`` that the loss rule dropped (0 without a rule)."""
        out = self.run(_peer(side), ["nft", "list", "chain", "inet", NFT_TABLE, "ingress"]).stdout
        found = re.search(r"counter packets (\d+)", out)
        return int(found.group(1)) if found else 0

    # ----------------------------------------------------------------- internals
    def _nft(self, side: Side, script: str) -> None:
        self._require_running()
        _run(["ip", "netns", "exec", self.ns(side), "nft", "-f", "-"], input_text=script)

    def _sides(self, side: SideSpec) -> tuple[Side, ...]:
        if side == "both":
            return ("server", "client")
        self.ns(side)  # validates
        return (side,)

    def _require_running(self) -> None:
        if not self._started or self._closed:
            raise LabError("lab is not running (call start() or use `with`)")


def _peer(side: Side) -> Side:
    return "client" if side == "server" else "server"


def list_netns() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _remove_netns(ns: str) -> None:
    """Kill what still runs inside ``ns``, delete it, remove its /etc/netns dir.

    Processes must go first: a namespace (and its veth) lives on as long as any
    process is inside it, even after `ip netns del` removed its name.
    """
    if ns in list_netns():
        pids = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        deadline = time.monotonic() + 3.0
        while pids and time.monotonic() < deadline:
            if not any(pid_alive(int(p)) for p in pids if p.isdigit()):
                break
            time.sleep(0.02)
        _run(["ip", "netns", "del", ns])
    shutil.rmtree(NETNS_ETC_DIR / ns, ignore_errors=True)


# =========================================================================== CLI
# Small measurement programs that tests run inside the namespaces. Each prints
# "ready" once its socket is bound (servers) and JSON results on stdout (clients);
# every loop is bounded by a duration/timeout.


def _resolve(host: str) -> str:
    return str(socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0])


def _cli_udp_echo(args: argparse.Namespace) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.bind, args.port))
    print("ready", flush=True)
    deadline = time.monotonic() + args.duration
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(min(remaining, 0.5))
        try:
            data, peer = sock.recvfrom(65535)
        except TimeoutError:
            continue
        sock.sendto(data, peer)


def _cli_tcp_echo(args: argparse.Namespace) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.bind, args.port))
    srv.listen(8)
    print("ready", flush=True)
    deadline = time.monotonic() + args.duration
    conns: list[socket.socket] = []
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([srv, *conns], [], [], min(remaining, 0.5))
            for s in readable:
                if s is srv:
                    conn, _ = srv.accept()
                    conns.append(conn)
                    continue
                data = s.recv(65535)
                if data:
                    s.sendall(data)
                else:
                    conns.remove(s)
                    s.close()
    finally:
        for conn in conns:
            conn.close()
        srv.close()


def _cli_udp_probe(args: argparse.Namespace) -> None:
    """Send ``count`` numbered datagrams, collect echoes, report loss and RTTs."""
    addr = (_resolve(args.host), args.port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sent_at: dict[int, float] = {}
    rtts: dict[int, float] = {}
    order = {"last": -1, "reordered": 0}
    pad = b"x" * max(0, args.size - 8)

    def drain(until: float) -> None:
        while True:
            timeout = until - time.monotonic()
            if timeout <= 0 or len(rtts) == args.count:
                return
            ready, _, _ = select.select([sock], [], [], timeout)
            if not ready:
                return
            data = sock.recv(65535)
            seq = int.from_bytes(data[:8], "big")
            if seq in sent_at and seq not in rtts:
                rtts[seq] = (time.monotonic() - sent_at[seq]) * 1000.0
                if seq < order["last"]:
                    order["reordered"] += 1
                order["last"] = max(order["last"], seq)

    start = time.monotonic()
    for seq in range(args.count):
        sent_at[seq] = time.monotonic()
        sock.sendto(seq.to_bytes(8, "big") + pad, addr)
        drain(start + (seq + 1) * args.interval)
    drain(time.monotonic() + args.timeout)
    values = sorted(rtts.values())
    print(
        json.dumps(
            {
                "sent": args.count,
                "received": len(rtts),
                "reordered": order["reordered"],
                "rtt_ms_median": values[len(values) // 2] if values else None,
                "rtt_ms_min": values[0] if values else None,
                "rtt_ms_max": values[-1] if values else None,
            }
        )
    )


def _cli_tcp_probe(args: argparse.Namespace) -> None:
    """Connect, send one message, expect it echoed; report success and RTT."""
    start = time.monotonic()
    result: dict[str, Any] = {"ok": False}
    try:
        with socket.create_connection((args.host, args.port), timeout=args.timeout) as conn:
            message = b"ping-" + secrets.token_hex(4).encode()
            conn.sendall(message)
            received = b""
            while len(received) < len(message):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                received += chunk
            result = {"ok": received == message, "rtt_ms": (time.monotonic() - start) * 1000.0}
    except OSError as exc:
        result["error"] = str(exc)
    print(json.dumps(result))


def _cli_udp_blast(args: argparse.Namespace) -> None:
    """Send datagrams as fast as the socket allows for ``duration`` seconds."""
    addr = (_resolve(args.host), args.port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"b" * args.size
    sent = errors = 0
    deadline = time.monotonic() + args.duration
    while time.monotonic() < deadline:
        try:
            sock.sendto(payload, addr)
            sent += 1
        except OSError:  # ENOBUFS when the qdisc is full: just keep offering load
            errors += 1
            time.sleep(0.0005)
    print(json.dumps({"sent": sent, "errors": errors, "bytes": sent * args.size}))


def _cli_udp_send(args: argparse.Namespace) -> None:
    """Send the given datagrams (hex), once each, in order, ``interval`` s apart.

    For rules that look at payload bytes: a test crafts packets whose first bytes
    look like STUN, DTLS, RTP or RTCP and sees which of them arrive (udp-sink
    ``--record``).
    """
    addr = (_resolve(args.host), args.port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for payload in args.payload:
        sock.sendto(bytes.fromhex(payload), addr)
        time.sleep(args.interval)
    print(json.dumps({"sent": len(args.payload)}))


def _cli_udp_sink(args: argparse.Namespace) -> None:
    """Count received datagrams; stop after ``idle`` s of silence or ``duration`` s.

    ``--record`` also reports every datagram, in hex and in arrival order."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((args.bind, args.port))
    print("ready", flush=True)
    packets = nbytes = 0
    first = last = 0.0
    first_size = 0
    payloads: list[str] = []
    deadline = time.monotonic() + args.duration
    while (remaining := deadline - time.monotonic()) > 0:
        wait = min(remaining, args.idle if packets else remaining)
        ready, _, _ = select.select([sock], [], [], wait)
        if not ready:
            if packets:
                break
            continue
        data = sock.recv(65535)
        now = time.monotonic()
        if not packets:
            first, first_size = now, len(data)
        packets += 1
        nbytes += len(data)
        last = now
        if args.record:
            payloads.append(data.hex())
    span = last - first
    # Bytes after the first datagram over the time between first and last arrival.
    rate = (nbytes - first_size) * 8 / span / 1e6 if span > 0 else None
    result: dict[str, Any] = {
        "packets": packets,
        "bytes": nbytes,
        "span_s": span,
        "rate_mbit": rate,
    }
    if args.record:
        result["payloads"] = payloads
    print(json.dumps(result))


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="NetworkLab measurement helpers")
    sub = parser.add_subparsers(dest="tool", required=True)
    p = sub.add_parser("udp-echo")
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--duration", type=float, default=30.0)
    p.set_defaults(func=_cli_udp_echo)
    p = sub.add_parser("tcp-echo")
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--duration", type=float, default=30.0)
    p.set_defaults(func=_cli_tcp_echo)
    p = sub.add_parser("udp-probe")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--interval", type=float, default=0.01)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--timeout", type=float, default=2.0)
    p.set_defaults(func=_cli_udp_probe)
    p = sub.add_parser("tcp-probe")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--timeout", type=float, default=5.0)
    p.set_defaults(func=_cli_tcp_probe)
    p = sub.add_parser("udp-blast")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--size", type=int, default=1200)
    p.set_defaults(func=_cli_udp_blast)
    p = sub.add_parser("udp-send")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--payload", action="append", required=True, help="hex; repeatable")
    p.add_argument("--interval", type=float, default=0.002)
    p.set_defaults(func=_cli_udp_send)
    p = sub.add_parser("udp-sink")
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--idle", type=float, default=0.5)
    p.add_argument("--record", action="store_true")
    p.set_defaults(func=_cli_udp_sink)
    args = parser.parse_args(list(argv) if argv is not None else None)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
