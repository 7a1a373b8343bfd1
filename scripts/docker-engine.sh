#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`; start one when it does not.
#
# Idempotent: when `docker info` already works this exits 0 at once. Otherwise, as root on a
# Debian-like host without dockerd, it installs Debian's docker.io, then starts
#   dockerd --iptables=false --bridge=none [--config-file <runsc runtimes> (when runsc is installed)]
# in the background (no default bridge network: containers use `--network none` or
# `--network host`, which is all the platform needs) and waits up to 30 s for it.
#
# Usage: scripts/docker-engine.sh [LOG_DIR]     (log: LOG_DIR/dockerd.log, default /tmp)
# Environment: DOCKERD_ARGS overrides the daemon's flags; DOCKER_ENGINE_WAIT_S the wait (30).
set -euo pipefail

log_dir="${1:-/tmp}"
wait_s="${DOCKER_ENGINE_WAIT_S:-30}"
read -r -a dockerd_args <<<"${DOCKERD_ARGS:---iptables=false --bridge=none}"
# gVisor: when runsc is installed the engine gets two runtimes (DOCKER_RUNSC=0 leaves them out):
# `runsc` for containers without a network (`--network none`, also the model-only proxy's) and
# `runsc-host` for `--network host`. Each tells runsc which network it runs with: left to guess,
# runsc refuses to start where this engine itself runs in a sandbox ("cannot run with network
# enabled in root network namespace"). dockerd's --add-runtime takes no runtime arguments, so
# they go in a daemon config file. A running engine keeps its runtimes.
if [ -z "${DOCKERD_ARGS:-}" ] && [ "${DOCKER_RUNSC:-1}" = 1 ] && command -v runsc >/dev/null 2>&1; then
    runsc_path="$(command -v runsc)"
    mkdir -p "$log_dir"
    config="$log_dir/dockerd-runtimes.json"
    printf '{"runtimes": {"runsc": {"path": "%s", "runtimeArgs": ["--network=none"]}, "runsc-host": {"path": "%s", "runtimeArgs": ["--network=host"]}}}\n' \
        "$runsc_path" "$runsc_path" >"$config"
    dockerd_args+=("--config-file" "$config")
fi

say() { printf 'docker-engine: %s\n' "$*" >&2; }

engine_up() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

if engine_up; then
    say "the Docker engine is running"
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing docker.io (Debian's Docker engine)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq docker.io >/dev/null
    else
        say "ERROR: dockerd is not installed and this is not root with apt-get: install Docker" \
            "(Debian: apt-get install docker.io) or point DOCKER_HOST at a running engine"
        exit 1
    fi
fi

if [ "$(id -u)" != 0 ]; then
    say "ERROR: the Docker engine is not answering and only root can start dockerd here;" \
        "start it (e.g. sudo $0) or add yourself to the docker group"
    exit 1
fi

mkdir -p "$log_dir"
log="$log_dir/dockerd.log"
started=0
if pgrep -x dockerd >/dev/null 2>&1; then
    say "dockerd is running but not answering yet; waiting"
else
    started=1
    say "starting dockerd ${dockerd_args[*]} (log: $log)"
    nohup dockerd "${dockerd_args[@]}" >>"$log" 2>&1 </dev/null &
    echo "$!" >"$log_dir/dockerd.pid"
fi

for _ in $(seq 1 "$wait_s"); do
    if engine_up; then
        say "the Docker engine is up"
        exit 0
    fi
    sleep 1
done

say "ERROR: the Docker engine did not answer 'docker info' within ${wait_s} s"
if [ "$started" = 1 ]; then
    say "last lines of $log:"
    tail -n 20 "$log" >&2 2>/dev/null || true
else
    say "a dockerd was already running: check DOCKER_HOST (${DOCKER_HOST:-unset}) and the socket's" \
        "permissions, or its own log"
fi
exit 1
