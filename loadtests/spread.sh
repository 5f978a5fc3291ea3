#!/usr/bin/env bash
# Spread: what it costs when consecutive requests hit different apps.
#
# Usage:  bash loadtests/spread.sh
#         SPREAD_BINS="base=/tmp/edge-node-old new=target/release/edge-node" bash loadtests/spread.sh
#         SPREAD_POOL='max_unused_warm_slots = 1000' bash loadtests/spread.sh
#         SPREAD_BINS="a=target/release/edge-node b=target/release/edge-node" \
#             SPREAD_POOL_b='max_unused_warm_slots = 2000' bash loadtests/spread.sh
#
# One standalone edge node (no control plane) per binary in SPREAD_BINS,
# serving SPREAD_APPS apps from one TOML file, each app its own variant of
# guests/c/hello/hello.wasm (the same code plus a custom section naming the
# app: one digest and one compiled module per app, as real tenants' apps).
# After a warm-up pass (one request to every app, so no first-request cost
# is measured), for each spread S in SPREAD_SPREADS: wrk -t1 -c16 -d10s with
# a Lua script rotating the Host header request by request over the first S
# hosts (S = 1 goes through the same script, so wrk's own Lua cost is the
# same in every row). Reports per run: req/s, the ratio to the one-host run
# of the same node, the node's CPU per request (utime + stime from
# /proc/PID/stat), and the node's RSS and warm pool slots after the runs. Binaries are measured
# one after another, SPREAD_ROUNDS times in alternation, so compare ratios
# within one run rather than absolute numbers across runs.
#
# Writes results/spread-latest.md (+ a timestamped copy); wrk outputs and
# node logs in results/spread-raw/. Everything talks to 127.0.0.1 only and
# every wrk run is bounded (SPREAD_DURATION s, wrapped in `timeout`).
#
# Knobs (env): SPREAD_BINS ("node=$ROOT/target/release/edge-node"; space-
# separated LABEL=PATH) SPREAD_APPS (1000) SPREAD_SPREADS ("1 10 100 1000")
# SPREAD_DURATION (10) SPREAD_CONNS (16) SPREAD_ROUNDS (1) SPREAD_POOL
# (lines for the nodes' [pool] section, e.g. 'max_unused_warm_slots =
# 1000', several separated by ';') SPREAD_POOL_<LABEL> (the same for the
# node of binary LABEL only, overriding SPREAD_POOL) SPREAD_WASM (the
# component to vary; default the C hello) BENCH_MAX_BUSY (0.5)
# BENCH_LOAD_WAIT_S (600): the idle-CPU gate before each wrk run;
# ISO_TIMEOUT_S (300 here: start -> banner, compiling every app);
# SPREAD_PERF (unset; 1: a flat `perf record -F 999` of the node during
# every wrk run, reported per symbol in µs of node CPU per request in
# results/spread-raw/perf-LABEL-rROUND-sS.txt, and a table of the symbols
# whose cost grows most from the smallest spread to the largest in
# results/spread-raw/perf-growth-LABEL-rROUND.txt; sampling slowed a 2-core
# VM's node by about a quarter, so use such a run for the attribution, not
# for its ratios).
set -euo pipefail
export LC_ALL=C
# Compiling a thousand apps before the banner takes a while.
export ISO_TIMEOUT_S="${ISO_TIMEOUT_S:-300}"

# shellcheck source=loadtests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=loadtests/iso_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/iso_lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

log() { printf '[spread %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    printf '\n[spread] FAILED: %s\n\n' "$*" >&2
    exit 1
}

BINS="${SPREAD_BINS:-node=$ROOT/target/release/edge-node}"
N="${SPREAD_APPS:-1000}"
SPREADS="${SPREAD_SPREADS:-1 10 100 1000}"
DUR="${SPREAD_DURATION:-10}"
CONNS="${SPREAD_CONNS:-16}"
ROUNDS="${SPREAD_ROUNDS:-1}"
SRC_WASM="${SPREAD_WASM:-$C_HELLO}"
PERF="${SPREAD_PERF:-}"
RAW="$RESULTS_DIR/spread-raw"

[[ "${BASH_VERSINFO[0]}" -ge 5 ]] || die "needs bash >= 5 (EPOCHREALTIME)"
for tool in curl wrk awk python3 timeout; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
[[ -f "$SRC_WASM" ]] || die "$SRC_WASM not found"
for b in $BINS; do
    [[ "$b" =~ ^[A-Za-z0-9_]+= ]] || die "SPREAD_BINS entry '$b' is not LABEL=PATH (LABEL: letters, digits, _)"
    [[ -x "${b#*=}" ]] || die "${b#*=} is not an executable (build it first)"
done
for s in $SPREADS; do
    ((s >= 1 && s <= N)) || die "spread $s is not between 1 and SPREAD_APPS ($N)"
done
if [[ -n "$PERF" ]]; then
    command -v perf >/dev/null || die "SPREAD_PERF is set but perf is not installed (apt-get install linux-perf)"
    perf record -q -o /dev/null -- true 2>/dev/null ||
        die "SPREAD_PERF is set but perf cannot record here (kernel.perf_event_paranoid: $(cat /proc/sys/kernel/perf_event_paranoid))"
fi

write_wrk_lua
rm -rf "$RAW"
mkdir -p "$RESULTS_DIR" "$RAW" "$WORK/variants"
LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg)"
wait_for_quiet_machine

# The apps: variants of SRC_WASM (a custom section `outpost-variant` naming
# the app appended; custom sections may come anywhere in a component and
# change nothing it does), one [[app]] each, hosts app-I.spread.test.
log "writing $N variants of $SRC_WASM and the node config"
names=()
for ((i = 0; i < N; i++)); do names+=("app-$i"); done
write_variants "$SRC_WASM" "$WORK/variants" "${names[@]}"
for name in "${names[@]}"; do
    echo "$name.spread.test" >>"$WORK/hosts.txt"
    printf '[[app]]\nname = "%s"\nroutes = ["%s.spread.test"]\nwasm = "variants/%s.wasm"\n\n' \
        "$name" "$name" "$name" >>"$WORK/apps.toml"
done

# node_config LABEL: writes $WORK/node-LABEL.toml: the [pool] lines of
# SPREAD_POOL_<LABEL>, else of SPREAD_POOL (';'-separated), then the apps.
node_config() {
    local var="SPREAD_POOL_$1" pool
    pool="${!var-${SPREAD_POOL:-}}"
    {
        if [[ -n "$pool" ]]; then
            echo "[pool]"
            tr ';' '\n' <<<"$pool" | sed -E 's/^ +//'
            echo
        fi
        cat "$WORK/apps.toml"
    } >"$WORK/node-$1.toml"
    POOLS["$1"]="${pool:-defaults}"
    cp "$WORK/node-$1.toml" "$RAW/node-$1.toml"
}
declare -A POOLS
for s in $SPREADS; do head -"$s" "$WORK/hosts.txt" >"$WORK/hosts-$s.txt"; done

# warm_up: one request to every app (one curl each, bounded);
# fails unless every one answers 200.
warm_up() {
    local bad
    # curl applies a -H to every URL on its command line, so one curl per
    # host (each bounded).
    bad="$(while read -r h; do
        curl -s -o /dev/null -w '%{http_code}\n' --max-time 10 -H "Host: $h" "http://$NODE_ADDR/" || echo 000
    done <"$WORK/hosts.txt" | grep -vc '^200$' || true)"
    [[ "$bad" == 0 ]] || die "warm-up: $bad of $N apps did not answer 200"
}

# measure LABEL ROUND SPREAD: one wrk run; appends a row to ROWS.
ROWS=()
declare -A ONE_RPS
measure() {
    local label="$1" round="$2" s="$3" c0 c1 m0 m1 us ratio out
    out="$RAW/wrk-$label-r$round-s$s.txt"
    wait_for_idle_cpu
    local busy="$BUSY"
    c0="$(cpu_s "$NODE_PID")"
    m0="$(cpu_mark "$NODE_PID")"
    local perf_pid="" perf_data="$WORK/perf-$label-r$round-s$s.data"
    if [[ -n "$PERF" ]]; then
        # Bounded by the wrk run: stopped with SIGINT right after it.
        perf record -q -F 999 -p "$NODE_PID" -o "$perf_data" 2>/dev/null &
        perf_pid=$!
        CHILDREN+=("$perf_pid")
    fi
    HOSTS_FILE="$WORK/hosts-$s.txt" wrk_run "$out" "$DUR" "$CONNS" "$(head -1 "$WORK/hosts.txt")" -s "$WORK/rotate.lua"
    if [[ -n "$perf_pid" ]]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        reap "$perf_pid"
    fi
    m1="$(cpu_mark "$NODE_PID")"
    c1="$(cpu_s "$NODE_PID")"
    parse_wrk "$out"
    [[ -n "$W_RPS" ]] || die "wrk printed no result (see $out)"
    us="$(awk -v a="$c0" -v b="$c1" -v n="${W_REQ:-0}" 'BEGIN { printf "%.1f", (n > 0 ? (b - a) * 1e6 / n : 0) }')"
    [[ -z "$PERF" ]] || perf_per_request "$perf_data" "$us" "$RAW/perf-$label-r$round-s$s.txt"
    [[ "$s" != 1 ]] || ONE_RPS["$label-$round"]="$W_RPS"
    ratio="$(awk -v a="$W_RPS" -v b="${ONE_RPS[$label-$round]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }')"
    ROWS+=("| $label | $round | $s | $W_RPS | $ratio | $us | $W_P50 | $W_P99 | ${W_STATUS:-?}${W_SOCK:+ (socket: $W_SOCK)} | $busy / $(other_cores "$m0" "$m1") |")
    log "$label round $round, $s hosts: $W_RPS req/s (x$ratio of one host), node $us µs CPU/request, p99 $W_P99 ms"
}

# perf_per_request DATA US OUT: the flat profile in DATA as µs of node CPU
# per request, per object (the binary, libc, the kernel, and [JIT]: the
# guests' compiled code, which perf cannot name) and then per symbol (its
# share of the samples × US), largest first.
perf_per_request() {
    local sort
    for sort in dso dso,sym; do
        echo "== by $sort"
        perf report -i "$1" --stdio --no-children --sort "$sort" --percent-limit 0.05 -F "overhead,$sort" 2>/dev/null |
            sed -E 's/\[JIT\] tid [0-9]+/[JIT]/' |
            awk -v us="$2" '/^ *[0-9.]+%/ { p = $1; sub(/%/, "", p); $1 = ""; printf "%8.2f  %s\n", p * us / 100, substr($0, 2) }' |
            sort -rn
    done >"$3"
    rm -f "$1"
}

# perf_growth LABEL ROUND: which symbols' µs per request grew from the
# smallest spread to the largest (both profiles of that node and round).
perf_growth() {
    local first last
    first="${SPREADS%% *}"
    last="${SPREADS##* }"
    [[ "$first" != "$last" ]] || return 0
    python3 - "$RAW/perf-$1-r$2-s$first.txt" "$RAW/perf-$1-r$2-s$last.txt" "$first" "$last" \
        >"$RAW/perf-growth-$1-r$2.txt" <<'PY'
import sys
def load(path):
    # Only the per-symbol half of the file (after "== by dso,sym").
    out, on = {}, False
    for line in open(path):
        if line.startswith("=="):
            on = line.strip() == "== by dso,sym"
            continue
        if not on:
            continue
        us, _, name = line.strip().partition("  ")
        out[name.strip()] = out.get(name.strip(), 0.0) + float(us)
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
print(f"µs of node CPU per request: {sys.argv[3]} hosts -> {sys.argv[4]} hosts (growth), symbols with the largest growth first")
print(f"total: {sum(a.values()):.1f} -> {sum(b.values()):.1f} (symbols above 0.05 % of samples)")
rows = sorted(set(a) | set(b), key=lambda k: b.get(k, 0) - a.get(k, 0), reverse=True)
for k in rows[:40]:
    print(f"{a.get(k, 0):7.2f} -> {b.get(k, 0):7.2f}  ({b.get(k, 0) - a.get(k, 0):+6.2f})  {k}")
PY
}

RSS_ROWS=()
for ((round = 1; round <= ROUNDS; round++)); do
    for b in $BINS; do
        label="${b%%=*}"
        bin="${b#*=}"
        node_config "$label"
        start_proc "node-$label-r$round" "$bin" --config "$WORK/node-$label.toml" \
            --http 127.0.0.1:0 --metrics 127.0.0.1:0
        NODE_PID="$PROC_PID"
        NODE_ADDR="$PROC_ADDR"
        rss0="$(rss_mib "$NODE_PID")"
        warm_up
        rss1="$(rss_mib "$NODE_PID")"
        for s in $SPREADS; do measure "$label" "$round" "$s"; done
        [[ -z "$PERF" ]] || perf_growth "$label" "$round"
        warm="$(metric "$PROC_METRICS" outpost_runtime_pool_warm_memories)"
        warm_mib="$(awk -v b="$(metric "$PROC_METRICS" outpost_runtime_pool_warm_memory_bytes)" 'BEGIN { printf "%.1f", b / 1048576 }')"
        RSS_ROWS+=("| $label | $round | ${PROC_BANNER_MS} | $rss0 | $rss1 | $(rss_mib "$NODE_PID") | $(hwm_mib "$NODE_PID") | ${warm:-?} / $warm_mib |")
        stop_server "$NODE_PID"
        for f in "$WORK/node-$label-r$round".{out,err}; do
            sed -E $'s/\x1b\\[[0-9;]*m//g' "$f" >"$RAW/$(basename "$f").log" 2>/dev/null || true
        done
    done
done

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
{
    echo "## Spread: requests rotating over S of $N apps ($stamp)"
    echo
    echo "Commit $(describe_commit); $(nproc) cores; load average at start $LOAD_AT_START."
    echo "$N apps on one standalone node, each its own variant of \`${SRC_WASM#"$ROOT"/}\` (one compiled module per app). Nodes:"
    for b in $BINS; do echo "- \`${b%%=*}\`: \`${b#*=}\`, [pool] ${POOLS[${b%%=*}]}"; done
    echo
    echo "\`wrk -t1 -c$CONNS -d${DUR}s\`, a Lua script rotating the Host header request by request over the first S hosts:"
    echo
    echo "| binary | round | S hosts | req/s | × one host | node CPU µs/request | p50 ms | p99 ms | answers | other load before / during (cores) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "| binary | round | start → banner ms | RSS at banner MiB | after warm-up | after the runs | peak | warm memory slots / their resident MiB after the runs |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${RSS_ROWS[@]}"
} >"$WORK/table.md"

echo
cat "$WORK/table.md"
cp "$WORK/table.md" "$RESULTS_DIR/spread-latest.md"
cp "$WORK/table.md" "$RESULTS_DIR/spread-$stamp.md"
log "wrote $RESULTS_DIR/spread-latest.md (raw output in $RAW)"
