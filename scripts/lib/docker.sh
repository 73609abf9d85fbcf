# Shared settings for the scripts that run imgpipe's private Docker engine.
# Source it; it sets IMGPIPE_ROOT, DOCKER_STATE, DOCKER_HOST and small helpers.
# shellcheck shell=bash

IMGPIPE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DOCKER_STATE="${IMGPIPE_DOCKER_STATE:-$IMGPIPE_ROOT/.cache/docker}"
IMGPIPE_IMAGE="${IMGPIPE_IMAGE:-imgpipe:latest}"

# Unix socket paths are limited to 108 bytes and containerd nests its sockets
# deep inside the exec root: keep that root short when the checkout is deep.
if [ "${#DOCKER_STATE}" -le 48 ]; then
    DOCKER_EXEC="$DOCKER_STATE/exec"
else
    DOCKER_EXEC="/run/imgpipe-docker-$(printf '%s' "$DOCKER_STATE" | sha1sum | cut -c1-10)"
fi
DOCKER_SOCK="$DOCKER_EXEC/docker.sock"
DOCKER_PIDFILE="$DOCKER_STATE/dockerd.pid"
DOCKER_LOG="$DOCKER_STATE/dockerd.log"
export DOCKER_HOST="unix://$DOCKER_SOCK"
export DOCKER_CONFIG="$DOCKER_STATE/config"

# Prefer the preinstalled CLI (newer) and fall back to Debian's.
DOCKER_BIN="$(command -v docker || true)"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }

# step NAME CMD...: run CMD and report how long it took.
step() {
    local name="$1" start ms
    shift
    start=$(date +%s%N)
    "$@"
    ms=$((($(date +%s%N) - start) / 1000000))
    log "$name: $((ms / 1000)).$((ms % 1000 / 100)) s"
}

# Exit status meaning "no engine can be had here" (not root, no apt, ...):
# callers such as the test suite turn it into a skip with the printed reason.
NO_ENGINE=77
no_engine() {
    log "no engine: $*"
    exit "$NO_ENGINE"
}

engine_up() {
    [ -S "$DOCKER_SOCK" ] && [ -n "$DOCKER_BIN" ] && "$DOCKER_BIN" version >/dev/null 2>&1
}

image_present() {
    "$DOCKER_BIN" image inspect "$1" >/dev/null 2>&1
}
