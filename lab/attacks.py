"""Hostile peers from one source address, as a program of their own.

``python -m lab.attacks KIND --port P [--http-port H] --source 127.0.0.2``
runs one attack against a server until ``--seconds`` pass or SIGTERM, then
prints what it saw as one JSON object (what the server refused, and why).
Every socket binds ``--source``, so the server sees one address; a real
client from another address (127.0.0.1) must be served all the while. Tests
(tests/test_admission.py) and bench/attacks.py run the same attacks.

The attacks, after issue 19:

- ``idle-signaling``: 50 sockets that read the offer, never answer, and
  reconnect as soon as the server drops them (with ``--token``, they
  present a wrong one);
- ``silent-webrtc``: a real aiortc peer that negotiates, opens the data
  channel and never answers;
- ``idle-http``: 64 idle HTTP connections, reopened as they are closed;
- ``slow-body``: WHEP POSTs whose body trickles in a byte at a time;
- ``candidates``: 10,000 ICE candidates where the answer belongs;
- ``junk-messages``: a real aiortc peer sending 1,000 junk data channel
  messages a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional

from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from lab.programs import PYTHON, Program
from protocol.coordinates import CHANNEL_LABEL
from protocol.signaling import MAX_LINE_BYTES, Auth, Bye, SignalingChannel, SignalingError

ATTACKS = (
    "idle-signaling",
    "silent-webrtc",
    "idle-http",
    "slow-body",
    "candidates",
    "junk-messages",
)


@dataclass
class Tally:
    """What the attacker saw; printed as JSON at the end."""

    connections: int = 0
    offers: int = 0
    #: The server's BYE reasons, cut at the first ':' (their kind).
    byes: Counter[str] = field(default_factory=Counter)
    http_status: Counter[str] = field(default_factory=Counter)
    messages_sent: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def bye(self, reason: Optional[str]) -> None:
        self.byes[(reason or "").split(":", 1)[0]] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "offers": self.offers,
            "byes": dict(self.byes),
            "http_status": dict(self.http_status),
            "messages_sent": self.messages_sent,
            "errors": dict(self.errors),
        }


class Attack:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tally = Tally()
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        kind = self.args.kind
        workers: list[Callable[[], Awaitable[None]]]
        if kind == "idle-signaling":
            workers = [self._idle_signaling] * 50
        elif kind == "silent-webrtc":
            workers = [lambda: self._webrtc(junk_per_s=0)]
        elif kind == "junk-messages":
            workers = [lambda: self._webrtc(junk_per_s=1000)]
        elif kind == "idle-http":
            workers = [self._idle_http] * 64
        elif kind == "slow-body":
            workers = [self._slow_body] * 8
        elif kind == "candidates":
            workers = [self._candidates]
        else:
            raise ValueError(kind)
        tasks = [asyncio.create_task(self._forever(worker)) for worker in workers]
        try:
            await asyncio.wait_for(self.stopping.wait(), self.args.seconds)
        except asyncio.TimeoutError:
            pass
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _forever(self, worker: Callable[[], Awaitable[None]]) -> None:
        while not self.stopping.is_set():
            try:
                await worker()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # count it and come back, as an attacker would
                self.tally.errors[type(error).__name__] += 1
                await asyncio.sleep(0.05)

    async def _signaling(self) -> SignalingChannel:
        reader, writer = await asyncio.open_connection(
            self.args.host, self.args.port, limit=MAX_LINE_BYTES, local_addr=(self.args.source, 0)
        )
        self.tally.connections += 1
        channel = SignalingChannel(reader, writer)
        if self.args.token is not None:
            await channel.send(Auth(self.args.token))
        return channel

    async def _idle_signaling(self) -> None:
        channel = await self._signaling()
        try:
            while True:  # read everything, answer nothing, until the server hangs up
                message = await channel.receive()
                if message is None:
                    return
                if isinstance(message, Bye):
                    self.tally.bye(message.reason)
                elif isinstance(message, RTCSessionDescription):
                    self.tally.offers += 1
        finally:
            await channel.close()

    async def _candidates(self) -> None:
        channel = await self._signaling()
        try:
            first = await channel.receive(30)
            if isinstance(first, Bye) or first is None:
                self.tally.bye(first.reason if first else "closed")
                return
            self.tally.offers += 1
            lines = b"".join(
                json.dumps(
                    {
                        # Loopback addresses only: the server may check the first few.
                        "candidate": f"candidate:{i} 1 udp {2130706431 - i} 127.0.0.3 "
                        f"{10000 + i % 50000} typ host",
                        "id": "0",
                        "label": 0,
                        "type": "candidate",
                    }
                ).encode()
                + b"\n"
                for i in range(10_000)
            )
            try:
                channel._writer.write(lines)
                await channel._writer.drain()
            except ConnectionError:
                pass
            while (message := await channel.receive(30)) is not None:
                if isinstance(message, Bye):
                    self.tally.bye(message.reason)
        except SignalingError:
            pass
        finally:
            await channel.close()

    async def _webrtc(self, junk_per_s: int) -> None:
        channel = await self._signaling()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        opened: asyncio.Future[RTCDataChannel] = asyncio.get_running_loop().create_future()

        @pc.on("datachannel")
        def on_datachannel(data_channel: RTCDataChannel) -> None:
            if data_channel.label == CHANNEL_LABEL and not opened.done():
                opened.set_result(data_channel)

        try:
            offer = await channel.receive(30)
            if not isinstance(offer, RTCSessionDescription):
                self.tally.bye(offer.reason if isinstance(offer, Bye) else "closed")
                await asyncio.sleep(0.2)
                return
            self.tally.offers += 1
            await pc.setRemoteDescription(offer)
            await pc.setLocalDescription(await pc.createAnswer())
            await channel.send(pc.localDescription)
            data_channel = await asyncio.wait_for(opened, 30)
            gone = asyncio.create_task(channel.receive())
            junk = b"\x00junk" * 8
            while not gone.done():
                if junk_per_s:
                    # Sent in bursts of 50 so the loop's timer granularity
                    # does not set the rate.
                    for _ in range(50):
                        data_channel.send(junk)
                    self.tally.messages_sent += 50
                    await asyncio.sleep(50 / junk_per_s)
                else:
                    await asyncio.sleep(0.1)
            message = gone.result()
            self.tally.bye(message.reason if isinstance(message, Bye) else "closed")
        finally:
            await pc.close()
            await channel.close()

    async def _http(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        connection = await asyncio.open_connection(
            self.args.host, self.args.http_port, local_addr=(self.args.source, 0)
        )
        self.tally.connections += 1
        return connection

    async def _idle_http(self) -> None:
        reader, writer = await self._http()
        try:
            await reader.read()  # nothing sent: wait for the server to give up on us
        finally:
            writer.close()

    async def _slow_body(self) -> None:
        reader, writer = await self._http()
        try:
            writer.write(
                b"POST /api/track/whep HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/sdp\r\nContent-Length: 4000\r\n\r\nv=0\r\n"
            )
            while not reader.at_eof():
                try:
                    line = await asyncio.wait_for(reader.readline(), 0.5)
                except asyncio.TimeoutError:
                    writer.write(b"a")  # one byte every half second: a slow loris
                    continue
                if line.startswith(b"HTTP/1.1 "):
                    self.tally.http_status[line.split()[1].decode()] += 1
                    return
        finally:
            writer.close()


class ProbeWatch:
    """Polls an HTTP path from another thread and keeps the slowest answer.

    ``failures`` counts probes that got no 2xx/503 answer within ``timeout``.
    """

    def __init__(self, url: str, interval_s: float = 0.2, timeout: float = 3.0) -> None:
        self._url = url
        self._interval = interval_s
        self._timeout = timeout
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def slowest_s(self) -> float:
        return max(self.latencies, default=float("inf"))

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self._url, timeout=self._timeout) as reply:
                    reply.read()
                self.latencies.append(time.monotonic() - started)
            except Exception:
                self.failures += 1
                self.latencies.append(time.monotonic() - started)
            self._stop.wait(self._interval)


#: Where the attacks come from: another address than the honest client's.
ATTACKER_ADDRESS = "127.0.0.2"
#: The attacker stands for another host: its own CPU is not the server's to
#: pay. At the lowest priority it still reconnects thousands of times a
#: second, but on a shared 2-core machine it no longer starves the server and
#: the client of the cores they need.
ATTACKER_PRIORITY = ("nice", "-n", "19")


def start_attacker(kind: str, port: int, http_port: int, *flags: str) -> Program:
    """This module as a program attacking the server from ``ATTACKER_ADDRESS``; once it attacks."""
    attacker = Program(
        [
            PYTHON,
            "-m",
            "lab.attacks",
            kind,
            "--port",
            str(port),
            "--http-port",
            str(http_port),
            "--source",
            ATTACKER_ADDRESS,
            *flags,
        ],
        prefix=ATTACKER_PRIORITY,
    )
    attacker.wait_for_output("attacking", timeout=30)
    return attacker


def stop_attacker(attacker: Program) -> Optional[dict[str, Any]]:
    """Stop an attacker; what it saw (the JSON line it prints last), or None."""
    attacker.stop()
    lines = [line for line in attacker.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab.attacks", description=__doc__)
    parser.add_argument("kind", choices=ATTACKS)
    parser.add_argument("--host", default="127.0.0.1", help="the server's address")
    parser.add_argument("--port", type=int, required=True, help="its signaling port")
    parser.add_argument("--http-port", type=int, default=0, help="its console port")
    parser.add_argument("--source", default=ATTACKER_ADDRESS, help="the address to attack from")
    parser.add_argument("--token", default=None, help="present this (wrong) access token")
    parser.add_argument("--seconds", type=float, default=3600.0, help="stop after this long")
    return parser


async def main_async(args: argparse.Namespace) -> Tally:
    attack = Attack(args)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, attack.stopping.set)
    print("attacking", flush=True, file=sys.stderr)
    await attack.run()
    return attack.tally


def main() -> int:
    args = build_parser().parse_args()
    tally = asyncio.run(main_async(args))
    print(json.dumps(tally.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
