#!/usr/bin/env bash
# CPU profile of one server under the benchmark's load.
#
# Usage:  bash loadtests/profile.sh [outpost|ref|ref-tuned]   (default outpost)
#
# Starts the server alone, warms it up, runs wrk (BENCH_PROFILE_LOAD, 12s)
# and, 2 s into it, `perf record -g -p PID -- sleep 8` (BENCH_PERF_SECONDS).
# Writes loadtests/results/perf-NAME[-dwarf].data and .txt
# (`perf report --no-children --percent-limit 1.5 --stdio`, first 120
# lines, then the samples grouped by request phase with
# loadtests/perf_groups.py), and prints the latter. wrk's numbers under perf are not
# benchmark numbers (perf costs CPU on a 2-core machine): use bench.sh.
# Set BENCH_PERF_CALLGRAPH=dwarf for full Rust call chains (release builds
# have no frame pointers, so plain -g chains stop early; pair it with
# BENCH_PERF_FREQ=999 to keep the data file small); default: fp (-g).
set -euo pipefail

# shellcheck source=loadtests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

NAME="${1:-outpost}"
PROFILE_LOAD="${BENCH_PROFILE_LOAD:-12s}"
PERF_SECONDS="${BENCH_PERF_SECONDS:-8}"
CALLGRAPH="${BENCH_PERF_CALLGRAPH:-fp}"
FREQ="${BENCH_PERF_FREQ:-}"
set_cmd "$NAME"

find_perf() {
    local p
    for p in perf /usr/bin/perf_*; do
        if command -v "$p" >/dev/null 2>&1 && "$p" --version >/dev/null 2>&1; then
            command -v "$p"
            return 0
        fi
    done
    return 1
}

PERF="$(find_perf || true)"
if [[ -z "$PERF" ]]; then
    log "installing linux-perf (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null
    PERF="$(find_perf)" || die "no working perf binary after installing linux-perf"
fi
log "perf: $PERF ($("$PERF" --version))"

ensure_wrk
case "$NAME" in
    ref*) ensure_wasmtime ;;
    outpost) [[ -n "${BENCH_SKIP_BUILD:-}" ]] || build_edge_node ;;
esac
mkdir -p "$RESULTS_DIR"
log "RUST_BACKTRACE=${RUST_BACKTRACE-<unset>}"

wait_for_quiet_machine
wait_for_idle_cpu
start_server "$NAME" "$(server_regex "$NAME")" "${CMD[@]}"
run_wrk "$WARMUP" "$WORK/warmup.txt"
check_wrk "$NAME (warm-up)" "$WORK/warmup.txt"

suffix=""
[[ "$CALLGRAPH" == fp ]] || suffix="-$CALLGRAPH"
data="$RESULTS_DIR/perf-$NAME$suffix.data"
report="$RESULTS_DIR/perf-$NAME$suffix.txt"
log "wrk for $PROFILE_LOAD; perf record ($CALLGRAPH) for ${PERF_SECONDS}s on pid $SERVER_PID"
run_wrk "$PROFILE_LOAD" "$WORK/wrk.txt" &
wrk_pid=$!
CHILDREN+=("$wrk_pid")
sleep 2 # let wrk ramp up before sampling (not a readiness wait)
cg=(-g)
[[ "$CALLGRAPH" == fp ]] || cg=(--call-graph "$CALLGRAPH")
[[ -z "$FREQ" ]] || cg+=(-F "$FREQ")
"$PERF" record "${cg[@]}" -o "$data" -p "$SERVER_PID" -- sleep "$PERF_SECONDS" \
    >"$WORK/perf-record.log" 2>&1 || {
    cat "$WORK/perf-record.log" >&2
    die "perf record failed (perf events not supported here?)"
}
wait "$wrk_pid" || die "wrk failed during profiling"
check_wrk "$NAME (under perf)" "$WORK/wrk.txt"
log "under perf: $RPS req/s (not a benchmark number)"
stop_server "$SERVER_PID"

"$PERF" report -i "$data" --no-children --percent-limit 1.5 --stdio 2>/dev/null |
    head -120 >"$report" || true
# Phase groups (meaningful with BENCH_PERF_CALLGRAPH=dwarf).
if command -v python3 >/dev/null 2>&1; then
    requests="$(awk -v r="$RPS" -v s="$PERF_SECONDS" 'BEGIN { printf "%d", r * s }')"
    {
        echo
        echo "# Phase groups (loadtests/perf_groups.py; call graph: $CALLGRAPH)"
        "$PERF" script -i "$data" -F comm,tid,ip,sym --no-inline 2>/dev/null |
            python3 "$ROOT/loadtests/perf_groups.py" - --freq "${FREQ:-4000}" --requests "$requests"
    } >>"$report" || log "WARNING: grouping the samples failed"
fi
cat "$report"
log "report: $report  (data: $data)"
