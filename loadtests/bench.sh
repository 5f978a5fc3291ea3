#!/usr/bin/env bash
# Outpost vs `wasmtime serve`: hello-world throughput, latency and peak RSS.
#
# Usage:  bash loadtests/bench.sh
#
# Installs what it needs (wrk from apt, wasmtime-cli from crates.io), builds
# target/release/edge-node, then benchmarks one server at a time (never two
# at once: the machine has 2 cores):
#   ref        wasmtime serve, pooling allocator
#   ref-tuned  wasmtime serve, pooling allocator with the keep-resident /
#              decommit-batch settings Outpost uses by default
#   outpost    edge-node, every per-request limit on (its defaults)
# Each: start on 127.0.0.1 (free port), wait until it answers, warm up, one
# wrk run, check for zero errors, read VmHWM, stop. The Markdown table goes
# to stdout and to loadtests/results/latest.md (plus a timestamped copy).
#
# Knobs (env): BENCH_THREADS (2) BENCH_CONNECTIONS (32) BENCH_DURATION (10s)
# BENCH_WARMUP (2s) BENCH_SERVERS ("ref ref-tuned outpost") BENCH_MAX_LOAD
# (1.5) BENCH_LOAD_WAIT_S (600) BENCH_SKIP_BUILD (unset) BENCH_WASM
# BENCH_HOST. RUST_BACKTRACE is passed through to every server unchanged
# and reported.
set -euo pipefail

# shellcheck source=loadtests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

SERVERS="${BENCH_SERVERS:-ref ref-tuned outpost}"
BACKTRACE="${RUST_BACKTRACE-<unset>}"

for s in $SERVERS; do set_cmd "$s"; done
[[ -f "$ROOT/$WASM" ]] || die "$WASM not found"

ensure_wrk
ensure_wasmtime
if [[ -z "${BENCH_SKIP_BUILD:-}" ]]; then
    build_edge_node
fi

mkdir -p "$RESULTS_DIR"
log "RUST_BACKTRACE=$BACKTRACE"
log "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency (warm-up $WARMUP)"

wait_for_quiet_machine
declare -A R_RPS R_P50 R_P99 R_RSS R_REQ R_BUSY
for s in $SERVERS; do
    set_cmd "$s"
    wait_for_idle_cpu
    R_BUSY[$s]="$BUSY"
    start_server "$s" "$(server_regex "$s")" "${CMD[@]}"
    log "$s: warm-up $WARMUP"
    run_wrk "$WARMUP" "$WORK/$s.warmup.txt"
    check_wrk "$s (warm-up)" "$WORK/$s.warmup.txt"
    log "$s: measuring $DURATION"
    run_wrk "$DURATION" "$WORK/$s.wrk.txt"
    check_wrk "$s" "$WORK/$s.wrk.txt"
    kill -0 "$SERVER_PID" 2>/dev/null || die "$s died during the run"
    R_RSS[$s]="$(peak_rss_mib "$SERVER_PID")"
    R_RPS[$s]="$RPS"
    R_P50[$s]="$P50_MS"
    R_P99[$s]="$P99_MS"
    R_REQ[$s]="$REQUESTS"
    cp "$WORK/$s.wrk.txt" "$RESULTS_DIR/wrk-$s.txt" 2>/dev/null || true
    stop_server "$SERVER_PID"
    log "$s: $RPS req/s, p50 ${P50_MS} ms, p99 ${P99_MS} ms, peak RSS ${R_RSS[$s]} MiB"
done

# Ratios are against the plain reference when it was measured.
base=""
for s in $SERVERS; do
    if [[ "$s" == ref ]]; then base="${R_RPS[ref]}"; fi
done

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
commit="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
dirty="$(cd "$ROOT" && git status --porcelain -- edge-node 2>/dev/null | grep -q . && echo ' (edge-node has uncommitted changes)' || true)"
{
    echo "## Outpost vs wasmtime serve — C hello ($stamp)"
    echo
    echo "- RUST_BACKTRACE: \`$BACKTRACE\`"
    echo "- load: \`wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency\` after a $WARMUP warm-up, Host: $HOST_HEADER"
    echo "- guest: \`$WASM\`; wasmtime-cli $WASMTIME_VERSION; commit $commit$dirty"
    echo "- machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
    echo
    echo "| server | req/s | p50 (ms) | p99 (ms) | peak RSS (MiB) | req/s vs ref | requests | idle check (busy cores) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for s in $SERVERS; do
        ratio="n/a"
        if [[ -n "$base" ]]; then
            ratio="$(awk -v a="${R_RPS[$s]}" -v b="$base" 'BEGIN { printf "%.2f×", a / b }')"
        fi
        printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' \
            "$(server_label "$s")" "${R_RPS[$s]}" "${R_P50[$s]}" "${R_P99[$s]}" \
            "${R_RSS[$s]}" "$ratio" "${R_REQ[$s]}" "${R_BUSY[$s]}"
    done
} >"$WORK/table.md"

cp "$WORK/table.md" "$RESULTS_DIR/latest.md"
cp "$WORK/table.md" "$RESULTS_DIR/$stamp-bt${RUST_BACKTRACE-unset}.md"
echo
cat "$WORK/table.md"
echo
log "written to loadtests/results/latest.md"
