# Shared by the scripts in this folder: logging, a work dir and child
# processes cleaned up on exit, and waiting for a server's readiness line.
# Set SCRIPT_NAME before sourcing.
# shellcheck shell=bash

log() { printf '[%s %(%H:%M:%S)T] %s\n' "${SCRIPT_NAME:-script}" -1 "$*" >&2; }
die() {
    log "FAILED: $*"
    exit 1
}

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# wait_for FILE REGEX: prints the first host:port of REGEX in FILE (30 s
# max); on timeout shows FILE and its .err sibling.
wait_for() {
    local file="$1" regex="$2" deadline=$((SECONDS + 30)) found=""
    while [[ -z "$found" ]]; do
        ((SECONDS < deadline)) || {
            cat "$file" "${file%.out}.err" >&2 2>/dev/null || true
            die "no '$regex' in $file"
        }
        found="$(grep -oE "$regex" "$file" 2>/dev/null | head -1 | grep -oE '127\.0\.0\.1:[0-9]+' || true)"
        [[ -n "$found" ]] || sleep 0.05
    done
    echo "$found"
}
