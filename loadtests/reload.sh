#!/usr/bin/env bash
# Reload churn: does a node's memory stay bounded when its apps are
# reloaded over and over? One control plane and one sync-mode edge node;
# one app with two versions (the C hello and the C echo) rolled back and
# forth RELOAD_N times, each time waiting (bounded, 2 s) until the node has
# applied the change, so every step loads a fresh compiled app (from the
# compile cache) and drops the old one. No traffic: this isolates what a
# reload leaves behind.
#
# Usage:  bash loadtests/reload.sh
#         RELOAD_N=3000 bash loadtests/reload.sh
#
# Every RELOAD_SAMPLE reloads: node RSS, and the bytes the instance pool
# keeps resident in warm slots on purpose (outpost_runtime_pool_warm_memory_bytes,
# bounded by pool.max_unused_warm_slots). Target: RSS reaches a plateau.
# Writes results/reload-latest.md (+ timestamped copy).
#
# Knobs (env): RELOAD_N (1500) RELOAD_SAMPLE (100) ISO_SKIP_BUILD ISO_BIN_DIR
# ISO_TIMEOUT_S (120). Extra arguments go to the edge node.
set -euo pipefail
export LC_ALL=C

# shellcheck source=loadtests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=loadtests/iso_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/iso_lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

log() { printf '[reload %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    printf '\n[reload] FAILED: %s\n\n' "$*" >&2
    exit 1
}

N="${RELOAD_N:-1500}"
SAMPLE="${RELOAD_SAMPLE:-100}"

build_binaries
control_plane cp "$WORK/cp-data"
CP_ADDR="$PROC_ADDR"
edge_node_sync node "$CP_ADDR" "$WORK/node-cache" "$@"
NODE_PID="$PROC_PID"
NODE_METRICS="$PROC_METRICS"

json=(-H 'content-type: application/json')
wasm=(-H 'content-type: application/wasm')
tok="$(api POST /v1/tenants "$ADMIN_TOKEN" "${json[@]}" -d '{"name":"t","domains":["a.test"]}' | sed -E 's/.*"token":"([^"]+)".*/\1/')"
api POST /v1/apps "$tok" "${json[@]}" -d '{"name":"a","routes":["a.test"]}' >/dev/null
api POST /v1/apps/a/deployments "$tok" "${wasm[@]}" --data-binary @"$ROOT/guests/c/hello/hello.wasm" >/dev/null
api POST /v1/apps/a/deployments "$tok" "${wasm[@]}" --data-binary @"$ROOT/guests/c/echo/echo.wasm" >/dev/null

SAMPLES="$WORK/samples.txt"
late=0
t0="$EPOCHREALTIME"
for i in $(seq 0 "$N"); do
    if ((i % SAMPLE == 0)); then
        warm="$(metric "$NODE_METRICS" outpost_runtime_pool_warm_memory_bytes)"
        printf '%s %s %s\n' "$i" "$(rss_mib "$NODE_PID")" \
            "$(awk -v b="${warm:-0}" 'BEGIN { printf "%.1f", b / 1048576 }')" >>"$SAMPLES"
        log "reload $i: $(tail -1 "$SAMPLES")"
    fi
    ((i < N)) || break
    api POST /v1/apps/a/rollback "$tok" "${json[@]}" -d "{\"version\":$((i % 2 + 1))}" >/dev/null
    rev="$(api GET /v1/rollout "$tok" | sed -E 's/.*"revision":([0-9]+).*/\1/')"
    applied=0
    for _ in $(seq 200); do
        if [[ "$(metric "$NODE_METRICS" outpost_sync_applied_revision)" == "$rev" ]]; then
            applied=1
            break
        fi
        sleep 0.01
    done
    ((applied)) || late=$((late + 1))
done
WALL_S="$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')"
LOOKUPS="$(compile_cache "$NODE_METRICS")"
HWM="$(hwm_mib "$NODE_PID")"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
{
    echo "## Reload churn: $N reloads of one app ($stamp)"
    echo
    echo "RUST_BACKTRACE=$BACKTRACE; commit $(describe_commit); $(nproc) cores; $WALL_S s; changes not applied within 2 s: $late; compile-cache lookups (hit/miss/invalid): $LOOKUPS; node peak RSS (VmHWM) $HWM MiB."
    echo
    echo "| reloads | node RSS MiB | pool warm slots MiB |"
    echo "|---:|---:|---:|"
    awk '{ printf "| %s | %s | %s |\n", $1, $2, $3 }' "$SAMPLES"
} >"$WORK/table.md"
echo
cat "$WORK/table.md"
cp "$WORK/table.md" "$RESULTS_DIR/reload-latest.md"
cp "$WORK/table.md" "$RESULTS_DIR/reload-$stamp.md"
log "wrote $RESULTS_DIR/reload-latest.md"
