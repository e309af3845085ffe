"""Run k8s/ for real with ``podman kube play`` on this machine, and score it.

``.venv/bin/python bench/kube_play.py --host-ca``   (as root; ~3 minutes)

1. Builds both images as ``build.sh`` does, with podman (``--make-base``
   makes the base image with debootstrap where no registry is reachable;
   ``--host-ca`` trusts this machine's CA bundle for pip behind a
   TLS-intercepting proxy), under ``nice -n 19``. ``--no-build`` skips it.
2. Renders ``kubectl kustomize k8s/`` and turns it into what kube play can
   run (below), on a network of its own with DNS (netavark + aardvark-dns).
3. Starts the server pods (the HPA's ``minReplicas``), a stand-in for the
   Service (``bench/service_proxy.py``), then the clients (the client
   Deployment's ``replicas``), each streaming ``--seconds``.
4. Midway, stops one server pod the way a rolling update does: SIGTERM,
   then SIGKILL after the pod's ``terminationGracePeriodSeconds``. Its
   sessions must end cleanly, with their reports, and the server must exit
   0 before the grace period ends (``--no-terminate`` skips this).
5. When the clients are done, stops the other servers the same way, copies
   every server's reports out (``--out``), prints one row per session and
   checks: one session per client, every one >= 95 % answered, every server
   pod used, every exit status 0. Exit status 0 when all hold.

What kube play gets instead of the manifests' objects, and why:

- Each Deployment becomes its pods (``<deployment>-<i>``). podman 4.3 turns
  an ``emptyDir`` into a named volume called after the volume, so all
  replicas of one Deployment would share one ``/reports`` (two servers
  writing ``session-<time>-0001`` into one folder). Each pod's volumes get
  its own name instead. Clients get ``restartPolicy: Never`` so that each
  runs its one session (a Deployment would restart it).
- The Service becomes a proxy pod answering to the Service's name (see
  ``bench/service_proxy.py``): kube play ignores Services, and DNS alone
  would send every client to the same pod first.
- ``MAX_SESSIONS`` is lowered (``--max-sessions``, default 2) so that the
  clients cannot all fit on one pod: the run then shows readiness steering
  and "server busy" retries spreading them over the pods.
- Not run at all: the HorizontalPodAutoscaler and the PodDisruptionBudget
  (no controller here; their objects are checked statically by
  tests/test_deployment.py), and the NetworkPolicy (no enforcing CNI).
  podman ignores readinessProbe; the proxy runs it instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    import common  # noqa: F401  # bench/common.py: puts the repository root on sys.path

import argparse
import copy
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import yaml  # type: ignore[import-untyped]  # PyYAML (requirements-test.txt)

ROOT = Path(__file__).resolve().parent.parent

#: As build.sh's --podman-workarounds, plus netavark: its aardvark-dns gives
#: pods DNS names on the network (the CNI backend needs a dnsname plugin).
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[network]
network_backend = "netavark"

[engine]
runtime = "runc"
"""

#: Debian packages this needs besides podman itself.
PACKAGES = {
    "/usr/bin/podman": "podman",
    "/usr/sbin/runc": "runc",
    "/usr/bin/catatonit": "catatonit",  # the pods' infra (pause) containers
    "/usr/lib/podman/netavark": "netavark",
    "/usr/lib/podman/aardvark-dns": "aardvark-dns",
    "/usr/sbin/debootstrap": "debootstrap",
}

MIN_ANSWERED_RATIO = 0.95

#: The name the client pods reach the server by (their SIGNALING_HOST).
SERVICE_NAME = "balltracker-server"


class PlayFailed(Exception):
    pass


def log(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)


def podman(*args: str, check: bool = True, timeout: float = 120) -> str:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise PlayFailed(f"podman {' '.join(args[:3])}: {result.stderr.strip()[-500:]}")
    return result.stdout


# --- turning the manifests into what kube play runs -----------------------------


def render_manifests() -> dict[tuple[str, str], dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise PlayFailed("kubectl not found (python3 dev.py setup installs it)")
    result = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "k8s")], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise PlayFailed(f"kubectl kustomize k8s/: {result.stderr.strip()}")
    return {
        (doc["kind"], doc["metadata"]["name"]): doc
        for doc in yaml.safe_load_all(result.stdout)
        if doc
    }


def set_env(container: dict[str, Any], values: dict[str, str]) -> None:
    env = [item for item in container.get("env", []) if item["name"] not in values]
    container["env"] = env + [{"name": k, "value": v} for k, v in values.items()]


def drop_shm_volume(spec: dict[str, Any]) -> None:
    """Leave /dev/shm to podman: its own is what the manifests ask for.

    The client's ``emptyDir: {medium: Memory}`` on /dev/shm would become a
    plain named volume, owned by root with mode 0755 (podman copies the
    image's /dev/shm permissions onto it, even onto a tmpfs volume), which
    the non-root client cannot write: its multiprocessing semaphores fail
    with EACCES. Kubernetes makes an emptyDir world-writable. podman's
    default /dev/shm is a world-writable 64 MB tmpfs, as asked.
    """
    memory = {
        v["name"]
        for v in spec.get("volumes", [])
        if v.get("emptyDir", {}).get("medium") == "Memory"
    }
    for container in spec["containers"]:
        mounts = container.get("volumeMounts", [])
        if any(m["name"] in memory and m["mountPath"] != "/dev/shm" for m in mounts):
            raise PlayFailed("a memory-backed emptyDir elsewhere than /dev/shm")
        container["volumeMounts"] = [m for m in mounts if m["name"] not in memory]
    spec["volumes"] = [v for v in spec.get("volumes", []) if v["name"] not in memory]


def pods_of(
    deployment: dict[str, Any], count: int, restart_policy: str, env: dict[str, str]
) -> list[dict[str, Any]]:
    """The Deployment's pod template, ``count`` times, as bare Pods with
    volumes of their own (podman names an emptyDir's volume after it)."""
    template = deployment["spec"]["template"]
    pods = []
    for index in range(count):
        name = f"{deployment['metadata']['name']}-{index}"
        spec = copy.deepcopy(template["spec"])
        spec["restartPolicy"] = restart_policy
        drop_shm_volume(spec)
        renamed = {v["name"]: f"{name}-{v['name']}" for v in spec.get("volumes", [])}
        for volume in spec.get("volumes", []):
            volume["name"] = renamed[volume["name"]]
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                mount["name"] = renamed[mount["name"]]
            set_env(container, env)
            # podman 4.3 publishes every containerPort on the host's port of
            # the same number: two replicas could not both start, and the
            # pods would be open to the host's network. Pods reach each
            # other on the pod network without it.
            container.pop("ports", None)
            # podman turns an httpGet probe into `curl -f` (not in our
            # images; named ports only from podman 4.6) run by systemd
            # timers (none here). The proxy runs the readiness probe and
            # this script checks both probes with the images' own Python.
            container.pop("readinessProbe", None)
            container.pop("livenessProbe", None)
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": dict(template["metadata"]["labels"])},
                "spec": spec,
            }
        )
    return pods


def named_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


def service_pod(
    service: dict[str, Any], server_pods: list[dict[str, Any]], container: dict[str, Any]
) -> dict[str, Any]:
    """The Service as a pod running bench/service_proxy.py in the server image."""
    probe = container["readinessProbe"]
    ports = [
        f"{p['port']}:{named_port(container, p.get('targetPort', p['port']))}"
        for p in service["spec"]["ports"]
    ]
    command = [
        "python",
        "/service/service_proxy.py",
        "--pods",
        ",".join(p["metadata"]["name"] for p in server_pods),
        "--ready-port",
        str(named_port(container, probe["httpGet"]["port"])),
        "--ready-path",
        probe["httpGet"]["path"],
        "--period",
        str(probe.get("periodSeconds", 10)),
    ]
    for pair in ports:
        command += ["--port", pair]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{service['metadata']['name']}-service"},
        "spec": {
            "restartPolicy": "Always",
            "containers": [
                {
                    "name": "proxy",
                    "image": container["image"],
                    "imagePullPolicy": "IfNotPresent",
                    "command": command,
                    "volumeMounts": [
                        {"name": "service", "mountPath": "/service", "readOnly": True}
                    ],
                    "securityContext": {"runAsUser": 10001, "runAsNonRoot": True},
                }
            ],
            "volumes": [
                {"name": "service", "hostPath": {"path": str(ROOT / "bench"), "type": "Directory"}}
            ],
        },
    }


@dataclass
class Plan:
    servers: list[dict[str, Any]]
    service: dict[str, Any]
    clients: list[dict[str, Any]]
    grace_s: int
    max_sessions: int
    #: The server's HTTP port and its probes' paths: readiness, liveness.
    http_port: int
    probe_paths: tuple[str, str]


def make_plan(
    manifests: dict[tuple[str, str], dict[str, Any]],
    clients: Optional[int],
    seconds: float,
    max_sessions: int,
) -> Plan:
    server = manifests[("Deployment", "balltracker-server")]
    client = manifests[("Deployment", "balltracker-client")]
    hpa = manifests[("HorizontalPodAutoscaler", "balltracker-server")]
    service = manifests[("Service", SERVICE_NAME)]
    (server_container,) = server["spec"]["template"]["spec"]["containers"]
    server_pods = pods_of(
        server,
        hpa["spec"]["minReplicas"],
        "Always",
        {"BALLTRACKER_MAX_SESSIONS": str(max_sessions)},
    )
    client_count = clients if clients is not None else client["spec"]["replicas"]
    client_pods = pods_of(client, client_count, "Never", {"BALLTRACKER_DURATION": f"{seconds:g}"})
    readiness = server_container["readinessProbe"]["httpGet"]
    liveness = server_container["livenessProbe"]["httpGet"]
    if named_port(server_container, readiness["port"]) != named_port(
        server_container, liveness["port"]
    ):
        raise PlayFailed("the probes use different ports")
    return Plan(
        servers=server_pods,
        service=service_pod(service, server_pods, server_container),
        clients=client_pods,
        grace_s=server["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        max_sessions=max_sessions,
        http_port=named_port(server_container, readiness["port"]),
        probe_paths=(readiness["path"], liveness["path"]),
    )


# --- running it ---------------------------------------------------------------


@dataclass
class Result:
    reports: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # pod -> reports
    server_exit: dict[str, Optional[int]] = field(default_factory=dict)
    stop_s: dict[str, float] = field(default_factory=dict)
    client_exit: dict[str, Optional[int]] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)
    #: pod -> {probe path: HTTP status} while every session streams.
    probes: dict[str, dict[str, int]] = field(default_factory=dict)
    terminated: Optional[str] = None
    resources: dict[str, str] = field(default_factory=dict)


def play(documents: list[dict[str, Any]], work: Path, name: str, network: str) -> None:
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    podman("kube", "play", "--network", network, str(path), timeout=300)


def container_of(pod: dict[str, Any]) -> str:
    """podman names a pod's container <pod>-<container>."""
    return f"{pod['metadata']['name']}-{pod['spec']['containers'][0]['name']}"


def logs(container: str) -> str:
    result = subprocess.run(
        ["podman", "logs", container], capture_output=True, text=True, timeout=60, check=False
    )
    return result.stdout + result.stderr


def state(container: str) -> tuple[str, Optional[int]]:
    out = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", container)
    status, code = out.split()
    return status, (int(code) if status == "exited" else None)


def wait_for(what: str, condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise PlayFailed(f"timed out waiting for {what}")
        time.sleep(0.5)


#: The kubelet's httpGet probe, from inside the pod, with the image's Python:
#: prints the status (0 when nothing answers).
PROBE = """
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=2).status)
except urllib.error.HTTPError as error:
    print(error.code)
except OSError:
    print(0)
"""


def http_status(container: str, port: int, path: str) -> int:
    out = podman("exec", container, "python", "-c", PROBE, f"http://127.0.0.1:{port}{path}")
    return int(out.strip())


def stop_pod(pod: str, container: str, grace_s: int) -> tuple[Optional[int], float]:
    """SIGTERM, SIGKILL after the grace period: what the kubelet does."""
    began = time.monotonic()
    podman("pod", "stop", "--time", str(grace_s), pod, timeout=grace_s + 60)
    return state(container)[1], time.monotonic() - began


def copy_reports(container: str, destination: Path) -> list[dict[str, Any]]:
    """The server's /reports, from the stopped container (podman cp reads its volume)."""
    archive = subprocess.run(
        ["podman", "cp", f"{container}:/reports/.", "-"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    if archive.returncode != 0:
        raise PlayFailed(f"podman cp {container}:/reports: {archive.stderr.decode()[-300:]}")
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(destination, filter="data")
    return [json.loads(p.read_text()) for p in sorted(destination.glob("session-*.json"))]


def run(plan: Plan, work: Path, out: Path, seconds: float, terminate: bool) -> Result:
    result = Result()
    network = f"balltracker-kp-{os.getpid()}"
    podman("network", "create", network)
    try:
        return _run(plan, work, out, seconds, terminate, network, result)
    finally:
        # Every container's log, also (above all) when something failed.
        for pod in [*plan.servers, plan.service, *plan.clients]:
            (out / f"{pod['metadata']['name']}.log").write_text(logs(container_of(pod)))
        log("cleaning up pods, volumes and the network")
        for pod in [*plan.clients, plan.service, *plan.servers]:
            podman("pod", "rm", "--force", "--time", "0", pod["metadata"]["name"], check=False)
        for pod in [*plan.clients, *plan.servers]:
            for volume in pod["spec"].get("volumes", []):
                if "emptyDir" in volume:
                    podman("volume", "rm", "--force", volume["name"], check=False)
        podman("network", "rm", "--force", network, check=False)


def _run(
    plan: Plan, work: Path, out: Path, seconds: float, terminate: bool, network: str, result: Result
) -> Result:
    servers = [p["metadata"]["name"] for p in plan.servers]
    server_containers = {p["metadata"]["name"]: container_of(p) for p in plan.servers}
    log(f"server pods {servers} on network {network}")
    play(plan.servers, work, "servers", network)
    for container in server_containers.values():
        wait_for(f"{container} to listen", lambda c=container: "signaling on" in logs(c), 90)
        result.resources[container] = podman(
            "inspect",
            "--format",
            "cpus={{.HostConfig.NanoCpus}} memory={{.HostConfig.Memory}} "
            "user={{.Config.User}} read-only={{.HostConfig.ReadonlyRootfs}}",
            container,
        ).strip()
    log(f"the Service as {plan.service['metadata']['name']} (network alias {SERVICE_NAME})")
    play([plan.service], work, "service", f"{network}:alias={SERVICE_NAME}")
    service_container = container_of(plan.service)
    wait_for("the service proxy", lambda: "listening on" in logs(service_container), 60)
    clients = {p["metadata"]["name"]: container_of(p) for p in plan.clients}
    log(f"{len(clients)} client pods, {seconds:g} s each")
    play(plan.clients, work, "clients", network)

    def streaming() -> int:
        return sum(logs(c).count(": streaming to ") for c in server_containers.values())

    wait_for(f"{len(clients)} sessions streaming", lambda: streaming() >= len(clients), 180)
    log("all sessions stream")
    for pod, container in server_containers.items():
        result.probes[pod] = {
            path: http_status(container, plan.http_port, path) for path in plan.probe_paths
        }
    log(f"probes while streaming: {result.probes}")
    if terminate:
        time.sleep(seconds / 2)
        victim = servers[0]
        log(f"terminating {victim} as a rolling update would (grace {plan.grace_s} s)")
        code, took = stop_pod(victim, server_containers[victim], plan.grace_s)
        result.terminated, result.server_exit[victim], result.stop_s[victim] = victim, code, took
        log(f"{victim} exited {code} after {took:.1f} s")

    def clients_done() -> bool:
        return all(state(c)[0] == "exited" for c in clients.values())

    wait_for("the clients to finish", clients_done, seconds + 120)
    result.client_exit = {pod: state(c)[1] for pod, c in clients.items()}
    for pod in servers:
        if pod not in result.server_exit:
            log(f"stopping {pod}")
            code, took = stop_pod(pod, server_containers[pod], plan.grace_s)
            result.server_exit[pod], result.stop_s[pod] = code, took
    for pod, container in server_containers.items():
        result.refusals[pod] = logs(container).count("refusing ")
        result.reports[pod] = copy_reports(container, out / pod)
    return result


# --- verdict --------------------------------------------------------------------


def table(result: Result) -> str:
    rows = [
        "| server pod | session | answered % | error mean px | latency p50 ms | "
        "latency p99 ms | seconds | ended by |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for pod, reports in result.reports.items():
        for r in reports:
            latency = r["latency_ms"]
            rows.append(
                f"| {pod} | {r['session']} | {100 * r['answered_ratio']:.1f} | "
                f"{r['error_px']['mean']:.3f} | {latency['p50']:.1f} | {latency['p99']:.1f} | "
                f"{r['duration_s']:.1f} | {r['end_reason']} |"
            )
    return "\n".join(rows)


def problems(result: Result, plan: Plan) -> list[str]:
    clients, grace_s = len(plan.clients), plan.grace_s
    found = []
    readiness, liveness = plan.probe_paths
    for pod, statuses in result.probes.items():
        if statuses[liveness] != 200:
            found.append(f"{pod}: liveness {liveness} answered {statuses[liveness]}")
        # With exactly enough slots for all clients, every server is full.
        if clients == plan.max_sessions * len(plan.servers) and statuses[readiness] != 503:
            found.append(f"{pod} is full, yet readiness {readiness} answered {statuses[readiness]}")
    reports = [r for rs in result.reports.values() for r in rs]
    if len(reports) != clients:
        found.append(f"{len(reports)} session reports for {clients} clients")
    for r in reports:
        if r["answered_ratio"] < MIN_ANSWERED_RATIO:
            found.append(f"{r['session']}: {100 * r['answered_ratio']:.1f}% answered")
    for pod, rs in result.reports.items():
        if not rs:
            found.append(f"{pod} had no session (no load balancing?)")
    for pod, code in result.server_exit.items():
        if code != 0:
            found.append(f"{pod} exited {code}")
        if result.stop_s[pod] >= grace_s:
            found.append(f"{pod} needed the whole grace period ({result.stop_s[pod]:.1f} s)")
    if result.terminated is not None:
        cut = [r for r in result.reports[result.terminated] if "shutting down" in r["end_reason"]]
        if not cut:
            found.append(f"no session of {result.terminated} was ended by its shutdown")
    for pod, code in result.client_exit.items():
        if code != 0:
            found.append(f"client {pod} exited {code}")
    return found


def check_machine() -> None:
    if os.geteuid() != 0:
        raise PlayFailed("run as root (podman here runs rootful)")
    missing = [package for path, package in PACKAGES.items() if not Path(path).exists()]
    if missing:
        raise PlayFailed(f"missing packages: apt-get install {' '.join(missing)}")


def build(host_ca: bool) -> None:
    command = ["nice", "-n", "19", "./build.sh", "--engine", "podman", "--make-base"]
    command += ["--build-only", *(["--host-ca"] if host_ca else [])]
    log(" ".join(command))
    completed = subprocess.run(command, cwd=ROOT, check=False, stdout=subprocess.DEVNULL)
    if completed.returncode != 0:
        raise PlayFailed("build.sh failed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Run k8s/ with podman kube play and score it.")
    parser.add_argument("--no-build", action="store_true", help="use the images already built")
    parser.add_argument(
        "--host-ca", action="store_true", help="pass --host-ca to build.sh (TLS-intercepting proxy)"
    )
    parser.add_argument(
        "--clients", type=int, help="client pods (default: the client Deployment's replicas)"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="each client's DURATION")
    parser.add_argument(
        "--max-sessions",
        type=int,
        default=2,
        help="MAX_SESSIONS per server pod for this run (default 2: the clients need both pods)",
    )
    parser.add_argument(
        "--no-terminate", action="store_true", help="do not stop a server pod midway"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "reports" / "kube-play", help="logs and reports go here"
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_machine()
        with tempfile.TemporaryDirectory(prefix="balltracker-kube-play-") as temporary:
            work = Path(temporary)
            if "CONTAINERS_CONF" not in os.environ:
                (work / "containers.conf").write_text(CONTAINERS_CONF)
                os.environ["CONTAINERS_CONF"] = str(work / "containers.conf")
            if not args.no_build:
                build(args.host_ca)
            plan = make_plan(render_manifests(), args.clients, args.seconds, args.max_sessions)
            if args.out.exists():
                shutil.rmtree(args.out)
            args.out.mkdir(parents=True)
            result = run(plan, work, args.out, args.seconds, not args.no_terminate)
    except (PlayFailed, subprocess.TimeoutExpired) as exc:
        print(f"kube play failed: {exc} (logs in {args.out})", file=sys.stderr)
        return 1
    print(table(result))
    print()
    for pod in result.server_exit:
        print(
            f"- {pod}: {len(result.reports[pod])} session(s), refused {result.refusals[pod]} "
            f"connection(s) as busy, exit {result.server_exit[pod]} "
            f"{result.stop_s[pod]:.1f} s after SIGTERM (grace {plan.grace_s} s)"
            + (" — terminated midway" if pod == result.terminated else "")
        )
    for pod, statuses in result.probes.items():
        shown = ", ".join(f"{path} {status}" for path, status in statuses.items())
        print(f"- {pod} while all sessions streamed: {shown}")
    for container, text in result.resources.items():
        print(f"- {container}: {text}")
    print(f"- client exit statuses: {result.client_exit}")
    print(f"- logs and reports: {args.out}")
    found = problems(result, plan)
    if found:
        print("\nFAILED:\n" + "\n".join(f"- {p}" for p in found))
        return 1
    print(
        f"\npassed: {len(plan.clients)} sessions on {len(plan.servers)} server pods, "
        f"every one >= {100 * MIN_ANSWERED_RATIO:.0f}% answered"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
