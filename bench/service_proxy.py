"""A stand-in for a Kubernetes ClusterIP Service, for ``bench/kube_play.py``.

``podman kube play`` accepts a Service object but does nothing with it: no
virtual IP, no load balancing, no endpoints that follow readiness. Pods
reach each other by pod name through the network's DNS, and a network alias
shared by several pods resolves to all of them in one fixed order, so every
client would try the same pod first. This proxy plays the Service's part:
it listens on the Service's ports under the Service's name (a network alias)
and hands each new TCP connection to one pod picked at random among the
*ready* ones, readiness being the pod's own readiness probe (an HTTP GET)
polled every ``--period`` seconds, as the kubelet and the endpoints
controller would. WebRTC media does not pass through it: as in a cluster,
it flows pod to pod on the host candidates in the SDP.

One difference from a Service, on purpose: with no ready pod a Service has
no endpoints and refuses the connection; this proxy then picks any pod, which
refuses a full server's way ("server busy"). The client retries either way.

Standard library only: it runs in the server image.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import urllib.error
import urllib.request
from typing import Optional, Sequence

logger = logging.getLogger("service")


class Endpoints:
    """The pods behind the Service and which of them are ready now."""

    def __init__(self, pods: Sequence[str], ready_port: int, ready_path: str) -> None:
        self.pods = list(pods)
        self.ready: set[str] = set()
        self._ready_port = ready_port
        self._ready_path = ready_path

    def _probe(self, pod: str) -> bool:
        url = f"http://{pod}:{self._ready_port}{self._ready_path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(200 <= response.status < 400)
        except (urllib.error.URLError, OSError):  # 503 (HTTPError), refused, no DNS name yet
            return False

    async def watch(self, period_s: float) -> None:
        while True:
            results = await asyncio.gather(*(asyncio.to_thread(self._probe, p) for p in self.pods))
            ready = {pod for pod, ok in zip(self.pods, results) if ok}
            if ready != self.ready:
                logger.info("ready endpoints: %s", sorted(ready) or "none")
            self.ready = ready
            await asyncio.sleep(period_s)

    def pick(self) -> str:
        return random.choice(sorted(self.ready) or self.pods)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            writer.close()


async def _forward(
    endpoints: Endpoints,
    target_port: int,
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
) -> None:
    peer = client_writer.get_extra_info("peername")
    pod = endpoints.pick()
    logger.info("%s -> %s:%d (ready: %s)", peer, pod, target_port, sorted(endpoints.ready))
    try:
        pod_reader, pod_writer = await asyncio.open_connection(pod, target_port)
    except OSError as exc:
        logger.warning("%s: cannot reach %s: %s", peer, pod, exc)
        client_writer.close()
        return
    await asyncio.gather(_pipe(client_reader, pod_writer), _pipe(pod_reader, client_writer))
    pod_writer.close()
    client_writer.close()


def _port_pair(text: str) -> tuple[int, int]:
    listen, _, target = text.partition(":")
    return int(listen), int(target or listen)


async def serve(args: argparse.Namespace, host: str = "0.0.0.0") -> None:
    endpoints = Endpoints(args.pods.split(","), args.ready_port, args.ready_path)
    watcher = asyncio.create_task(endpoints.watch(args.period))
    servers: list[asyncio.base_events.Server] = []
    for listen, target in args.port:

        def handler(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: int = target
        ) -> Optional[asyncio.Task[None]]:
            return asyncio.ensure_future(_forward(endpoints, target, reader, writer))

        servers.append(await asyncio.start_server(handler, host, listen))
        logger.info("listening on %d for %s port %d", listen, endpoints.pods, target)
    try:
        await watcher
    finally:
        for server in servers:
            server.close()


def build_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", required=True, help="comma-separated pod host names")
    parser.add_argument(
        "--port", type=_port_pair, action="append", required=True, help="LISTEN[:TARGET]"
    )
    parser.add_argument("--ready-port", type=int, required=True)
    parser.add_argument("--ready-path", default="/readyz")
    parser.add_argument("--period", type=float, default=2.0, help="readiness probe period, s")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
