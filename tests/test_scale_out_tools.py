"""The scale-out tools in bench/: the capacity headline, what kube play is
given in place of the manifests, and the Service stand-in's load balancing.

No podman and no cluster: the kube play transformation runs on k8s/*.yaml
as they are, and the proxy on loopback addresses.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from bench import capacity, kube_play, service_proxy

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- capacity


def level(
    sessions: int, answered: float = 1.0, p99: float = 8.0, thinned: int = 0
) -> capacity.LevelResult:
    report = {
        "answered_ratio": answered,
        "latency_ms": {"p50": 4.0, "p99": p99},
        "error_px": {"mean": 0.006},
        "frames_sent": 450 - thinned,
        "frames_skipped": 0,
        "frames_skipped_for_rate": thinned,
    }
    return capacity.LevelResult(sessions, 15.0, reports=[dict(report) for _ in range(sessions)])


def test_a_level_passes_only_when_every_session_meets_the_bar() -> None:
    assert level(4).passed()
    assert not level(4, answered=0.989).passed()
    assert not level(4, p99=20.1).passed()
    # Every frame answered, but a third of them never sent: a busy server
    # thinned its frame rate, which is no capacity.
    assert not level(4, thinned=150).passed()
    assert level(4, thinned=4).passed()
    short = level(4)
    short.reports.pop()  # a session without a report
    assert not short.passed()


def test_sessions_per_core_stops_at_the_first_failure() -> None:
    # A pass above a failure is noise, not capacity.
    results = [level(1), level(2), level(4, p99=35.0), level(6)]
    assert capacity.sessions_per_core(results) == 2
    assert capacity.sessions_per_core([level(1, answered=0.5), level(2)]) == 0


def test_the_side_out_of_cpu_is_named() -> None:
    result = level(8)
    result.server_cpu_pct, result.client_cpu_pct = 50.0, 97.0
    assert result.limit(server_cpus=1, client_cpus=1) == "clients"
    assert result.limit(server_cpus=1, client_cpus=2) == "—"


def test_the_levels_of_two_servers_interleave_and_stop_after_failures_in_a_row() -> None:
    here, before = capacity.ServerTree(ROOT), capacity.ServerTree(ROOT, "HEAD~1")
    schedule = capacity.LevelSchedule([1, 2, 4, 6], [here, before], stop_after=2)
    runs = []
    for sessions, tree in schedule.runs():
        runs.append((sessions, tree.revision))
        # The earlier server fails from N=2 on; this tree's passes throughout.
        failed = tree.revision and sessions >= 2
        result = level(sessions, p99=35.0 if failed else 8.0)
        result.revision = tree.revision
        schedule.record(result)
    # Who goes first alternates; HEAD~1's N=6 is skipped after two failures.
    assert runs == [(1, ""), (1, "HEAD~1"), (2, "HEAD~1"), (2, ""), (4, ""), (4, "HEAD~1"), (6, "")]
    assert capacity.sessions_per_core(schedule.results[""]) == 6
    assert capacity.sessions_per_core(schedule.results["HEAD~1"]) == 1


def test_repeated_levels_count_only_when_every_run_passed() -> None:
    here = capacity.ServerTree(ROOT)
    schedule = capacity.LevelSchedule([2, 4, 6], [here], stop_after=0, repeat=2)
    runs = [sessions for sessions, _ in schedule.runs()]
    assert runs == [2, 2, 4, 4, 6, 6]
    outcomes = iter([8.0, 8.0, 8.0, 35.0, 8.0, 8.0])  # N=4's second run fails
    for sessions in runs:
        result = level(sessions, p99=next(outcomes))
        result.server_cpu_pct, result.server_rss_mb = 30.0 + sessions, 200.0
        schedule.record(result)
    results = schedule.results[""]
    assert capacity.sessions_per_core(results) == 2
    lines = capacity.headline(results, server_cpus=1, client_cpus=1)
    assert "runs that passed, by N: 2: 2/2, 4: 1/2, 6: 2/2" in lines
    assert any("BALLTRACKER_MAX_SESSIONS=2 " in line and "about 32%" in line for line in lines)


def test_the_load_clients_cpu_column_is_named_for_it() -> None:
    load = level(4)
    load.clients = "load"
    table = capacity.markdown_table([load], server_cpus=1, client_cpus=1)
    assert "load client CPU % of its core" in table.splitlines()[0]
    assert "clients CPU % of their core" in capacity.markdown_table([level(4)], 1, 1)


def test_every_session_of_a_level_is_admitted_from_one_address() -> None:
    assert capacity.ServerTree(ROOT).admission_flags(24) == [
        "--max-sessions",
        "24",
        "--max-sessions-per-peer",
        "24",
    ]


# ---------------------------------------------------------------- kube play


@pytest.fixture(scope="module")
def plan() -> kube_play.Plan:
    manifests: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted((ROOT / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            manifests[(doc["kind"], doc["metadata"]["name"])] = doc
    return kube_play.make_plan(manifests, clients=None, seconds=12, max_sessions=2)


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"] if "value" in e}


def test_kube_play_runs_the_hpa_minimum_of_servers_and_the_clients_replicas(
    plan: kube_play.Plan,
) -> None:
    hpa = yaml.safe_load((ROOT / "k8s" / "server-hpa.yaml").read_text())
    clients = yaml.safe_load((ROOT / "k8s" / "client-deployment.yaml").read_text())
    assert len(plan.servers) == hpa["spec"]["minReplicas"]
    assert len(plan.clients) == clients["spec"]["replicas"]
    assert all(env_of(p)["BALLTRACKER_MAX_SESSIONS"] == "2" for p in plan.servers)
    assert all(env_of(p)["BALLTRACKER_DURATION"] == "12" for p in plan.clients)
    # Each client runs its one session; a server is restarted like a pod's.
    assert {p["spec"]["restartPolicy"] for p in plan.clients} == {"Never"}
    assert {p["spec"]["restartPolicy"] for p in plan.servers} == {"Always"}
    assert plan.grace_s >= 25 and plan.probe_paths == ("/readyz", "/livez")


def test_kube_play_pods_share_no_volume_and_publish_no_port(plan: kube_play.Plan) -> None:
    volumes = [v["name"] for pod in plan.servers + plan.clients for v in pod["spec"]["volumes"]]
    assert len(volumes) == len(set(volumes))  # podman would share same-named emptyDirs
    for pod in plan.servers + plan.clients:
        (container,) = pod["spec"]["containers"]
        names = {v["name"] for v in pod["spec"]["volumes"]}
        assert {m["name"] for m in container["volumeMounts"]} <= names
        assert "/dev/shm" not in {m["mountPath"] for m in container["volumeMounts"]}
        assert not {"ports", "readinessProbe", "livenessProbe"} & set(container)
        # What matters of the manifests is kept: the hardening.
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    reports = [m for m in plan.servers[0]["spec"]["containers"][0]["volumeMounts"]]
    assert "/reports" in {m["mountPath"] for m in reports}


def test_kube_play_service_follows_the_readiness_probe(plan: kube_play.Plan) -> None:
    command = plan.service["spec"]["containers"][0]["command"]
    options = dict(zip(command[2::2], command[3::2]))
    assert options["--pods"] == ",".join(p["metadata"]["name"] for p in plan.servers)
    assert options["--ready-path"] == "/readyz" and options["--ready-port"] == "8080"
    assert float(options["--period"]) <= 5
    assert [command[i + 1] for i, a in enumerate(command) if a == "--port"] == [
        "1234:1234",
        "8080:8080",
    ]


# ---------------------------------------------------------------- the Service stand-in


def free_port_on(*hosts: str) -> int:
    """A TCP port free on every one of these loopback addresses."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        try:
            for host in hosts[1:]:
                with socket.socket() as other:
                    other.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no common free port")


def test_service_proxy_sends_connections_only_to_ready_pods() -> None:
    """Two "pods" on 127.0.0.2 and 127.0.0.3: one ready, one answering 503
    (full). Every connection through the proxy lands on the ready one, and
    once it turns unready and the other ready, on the other."""
    pods = ("127.0.0.2", "127.0.0.3")
    target, ready_port = free_port_on(*pods), free_port_on(*pods)
    listen = free_port_on("127.0.0.1")
    ready = {"127.0.0.2": True, "127.0.0.3": False}

    async def main() -> tuple[list[bytes], list[bytes]]:
        servers = []
        for pod in pods:

            async def name(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pod: str = pod
            ) -> None:
                writer.write(pod.encode())
                await writer.drain()
                writer.close()

            async def healthz(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pod: str = pod
            ) -> None:
                await reader.readuntil(b"\r\n\r\n")
                status = b"200 OK" if ready[pod] else b"503 Service Unavailable"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                writer.close()

            servers.append(await asyncio.start_server(name, pod, target))
            servers.append(await asyncio.start_server(healthz, pod, ready_port))
        args = service_proxy.build_args(
            [
                "--pods",
                ",".join(pods),
                "--port",
                f"{listen}:{target}",
                "--ready-port",
                str(ready_port),
                "--period",
                "0.1",
            ]
        )
        proxy = asyncio.create_task(service_proxy.serve(args, host="127.0.0.1"))

        async def ask() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", listen)
            answer = await reader.read()
            writer.close()
            return answer

        await asyncio.sleep(0.5)  # the first probes
        first = [await ask() for _ in range(8)]
        ready["127.0.0.2"], ready["127.0.0.3"] = False, True
        await asyncio.sleep(0.5)
        second = [await ask() for _ in range(8)]
        proxy.cancel()
        for server in servers:
            server.close()
        return first, second

    first, second = asyncio.run(asyncio.wait_for(main(), 30))
    assert set(first) == {b"127.0.0.2"}
    assert set(second) == {b"127.0.0.3"}
