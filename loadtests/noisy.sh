#!/usr/bin/env bash
# Noisy neighbour: does tenant B's hostile code hurt tenant A's latency and
# throughput on the same edge node?
#
# Usage:  bash loadtests/noisy.sh
#
# One standalone edge node (a TOML --config with [[app]] entries) serves
#   tenant a: hello        a.test          guests/c/hello/hello.wasm (C)
#   tenant b: hello        hello.b.test    the same C hello (a well-behaved peer: the reference)
#             loop         loop.b.test     fixtures::infinite_loop()  (fuel-limited)
#             bomb         bomb.b.test     fixtures::memory_bomb()    (memory_mib NOISY_BOMB_MIB)
#             slow         slow.b.test     fixtures::slow(NOISY_SLOW_MS) with timeout_ms NOISY_SLOW_TIMEOUT_MS
# (the WAT fixtures are written as .wasm by loadtests/fixture-dump). Each
# node configuration (NOISY_CONFIGS; default: nolanes default fuel10m)
# changes only B's limits or the node's lanes:
#   nolanes       as default, with the node's background lane turned off
#                 ([lanes] enabled = false: every guest in the foreground)
#   default       B's fuel at the node default (1e9)
#   fuel10m       fuel = NOISY_LOW_FUEL (10M) on every B app
#   conc4         max_concurrency = NOISY_B_CONCURRENCY (4) on every B app
#   fuel10m-conc4 both
# and in each, case by case (NOISY_CASES):
#   alone   A alone: wrk -t1 -c16 -d10s --latency, Host a.test
#   peer|loop|bomb|slow
#           the same A run while a second wrk (-t1 -c16, started 1 s
#           earlier, ending 1 s later) hammers that B route (peer: B's
#           well-behaved hello, i.e. what any equally busy neighbour costs)
#   all     the same with one such wrk on each of the three B routes
#   alone-end  A alone again, to see how far the machine drifted
# Before each case: wait for the machine to be idle (lib.sh
# wait_for_idle_cpu); the busy cores seen then are reported as other load,
# and so is what other processes used during the case (machine busy time
# minus the node's, this script's and its children's, from /proc).
# Per case: A's req/s, p50, p99, non-2xx; B's answers by status and
# x-outpost-error (a wrk Lua tally); the node's CPU (cores, from
# /proc/PID/stat); B instances still in flight when B's wrk ended and how
# long they took to drain; RSS and peak RSS (VmHWM).
# Writes results/noisy-latest.md (+ timestamped copy) and raw wrk output in
# results/noisy-raw/.
#
# Knobs (env): NOISY_DURATION (10, seconds) NOISY_CONNS (16, B's wrk and A's)
# NOISY_A_CONNS (A's wrk only; default NOISY_CONNS) NOISY_CONFIGS
# NOISY_CASES NOISY_SLOW_MS (2000) NOISY_SLOW_TIMEOUT_MS (500)
# NOISY_BOMB_MIB (64) NOISY_LOW_FUEL (10000000) NOISY_B_CONCURRENCY (4)
# ISO_SKIP_BUILD ISO_BIN_DIR BENCH_MAX_BUSY (0.5) BENCH_LOAD_WAIT_S (600).
# RUST_BACKTRACE is passed through unchanged and reported.
set -euo pipefail
export LC_ALL=C

# shellcheck source=loadtests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=loadtests/iso_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/iso_lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

log() { printf '[noisy %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    printf '\n[noisy] FAILED: %s\n\n' "$*" >&2
    exit 1
}

DUR="${NOISY_DURATION:-10}"
CONNS="${NOISY_CONNS:-16}"
A_CONNS="${NOISY_A_CONNS:-$CONNS}"
CONFIGS="${NOISY_CONFIGS:-nolanes default fuel10m}"
CASES="${NOISY_CASES:-alone peer loop bomb slow all alone-end}"
SLOW_MS="${NOISY_SLOW_MS:-2000}"
SLOW_TIMEOUT_MS="${NOISY_SLOW_TIMEOUT_MS:-500}"
BOMB_MIB="${NOISY_BOMB_MIB:-64}"
LOW_FUEL="${NOISY_LOW_FUEL:-10000000}"
B_CONC="${NOISY_B_CONCURRENCY:-4}"
RAW="$RESULTS_DIR/noisy-raw"

[[ "${BASH_VERSINFO[0]}" -ge 5 ]] || die "needs bash >= 5 (EPOCHREALTIME)"
for tool in curl wrk awk; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
[[ -f "$C_HELLO" ]] || die "$C_HELLO not found"

build_binaries
dump_fixtures "$SLOW_MS"
write_wrk_lua
mkdir -p "$RESULTS_DIR" "$RAW"
rm -f "$RAW"/*.txt

# write_config NAME: the node's TOML for configuration NAME.
write_config() {
    local b_extra="" lanes=""
    case "$1" in
        default) b_extra="" ;;
        nolanes) lanes=$'\n[lanes]\nenabled = false' ;;
        fuel10m) b_extra="fuel = $LOW_FUEL" ;;
        conc4) b_extra="max_concurrency = $B_CONC" ;;
        fuel10m-conc4) b_extra="fuel = $LOW_FUEL, max_concurrency = $B_CONC" ;;
        *) die "unknown configuration '$1'" ;;
    esac
    local sep="${b_extra:+, }"
    cat >"$WORK/$1.toml" <<EOF
http = "127.0.0.1:0"
metrics = "127.0.0.1:0"
$lanes

[[app]]
name = "hello"
tenant = "a"
routes = ["a.test"]
wasm = "$C_HELLO"

[[app]]
name = "hello"
tenant = "b"
routes = ["hello.b.test"]
wasm = "$C_HELLO"
limits = { $b_extra }

[[app]]
name = "loop"
tenant = "b"
routes = ["loop.b.test"]
wasm = "$FIXTURES_DIR/infinite_loop.wasm"
limits = { $b_extra }

[[app]]
name = "bomb"
tenant = "b"
routes = ["bomb.b.test"]
wasm = "$FIXTURES_DIR/memory_bomb.wasm"
limits = { memory_mib = $BOMB_MIB$sep$b_extra }

[[app]]
name = "slow"
tenant = "b"
routes = ["slow.b.test"]
wasm = "$FIXTURES_DIR/slow.wasm"
limits = { timeout_ms = $SLOW_TIMEOUT_MS$sep$b_extra }
EOF
}

b_limits_text() {
    case "$1" in
        default) echo "fuel 1e9 (default)" ;;
        nolanes) echo "fuel 1e9 (default), node with [lanes] enabled = false (every guest in the foreground, as before the lanes)" ;;
        fuel10m) echo "fuel $LOW_FUEL" ;;
        conc4) echo "fuel 1e9, max_concurrency $B_CONC" ;;
        fuel10m-conc4) echo "fuel $LOW_FUEL, max_concurrency $B_CONC" ;;
    esac
}

b_hosts() {
    case "$1" in
        alone | alone-end) echo "" ;;
        peer) echo "hello.b.test" ;;
        all) echo "loop.b.test bomb.b.test slow.b.test" ;;
        *) echo "$1.b.test" ;;
    esac
}

# B instances running right now (the in-flight gauge summed over tenant b).
b_in_flight() {
    metric_sum "$NODE_METRICS" '^outpost_runtime_instances_in_flight\{.*tenant="b"'
}

# One probe request per B route, to show what B's answers look like alone.
probe_b() {
    local h line
    for h in loop.b.test bomb.b.test slow.b.test; do
        line="$(curl -s -o /dev/null --max-time 60 -D - -w 'time=%{time_total}' -H "Host: $h" "http://$NODE_ADDR/" |
            tr -d '\r' | awk 'NR == 1 { s = $2 } tolower($1) == "x-outpost-error:" { e = $2 } /^time=/ { t = $0 } END { print s, (e == "" ? "-" : e), t }')"
        log "  probe $h alone: $line"
        PROBES+="${PROBES:+; }\`$h\` → $line"
    done
}

declare -A R
ROWS=()
PROBE_NOTES=()
log "RUST_BACKTRACE=$BACKTRACE; A: wrk -t1 -c$A_CONNS -d${DUR}s; B: wrk -t1 -c$CONNS per hostile route"
LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg)"
wait_for_quiet_machine

for cfg in $CONFIGS; do
    write_config "$cfg"
    start_proc "node-$cfg" "$BIN_DIR/edge-node" --config "$WORK/$cfg.toml"
    NODE_PID="$PROC_PID"
    NODE_ADDR="$PROC_ADDR"
    NODE_METRICS="$PROC_METRICS"
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H 'Host: a.test' "http://$NODE_ADDR/" || true)"
    [[ "$code" == 200 ]] || die "$cfg: A's app answered '$code', not 200"
    PROBES=""
    probe_b
    PROBE_NOTES+=("$cfg: $PROBES")
    log "$cfg: warm-up 2 s on A"
    wrk_run "$WORK/warmup.txt" 2 "$A_CONNS" a.test
    for c in $CASES; do
        wait_for_idle_cpu
        busy="$BUSY"
        cpu0="$(cpu_s "$NODE_PID")"
        mark0="$(cpu_mark "$NODE_PID")"
        t0="$EPOCHREALTIME"
        bpids=()
        for h in $(b_hosts "$c"); do
            wrk_bg "$RAW/$cfg-$c-B-$h.txt" $((DUR + 2)) "$CONNS" "$h" -s "$WORK/tally.lua" --timeout 60s
            bpids+=("$WRK_PID")
        done
        ((${#bpids[@]} == 0)) || sleep 1
        log "$cfg/$c: A for ${DUR}s${bpids[*]:+ while B is hammered on $(b_hosts "$c")}"
        wrk_run "$RAW/$cfg-$c-A.txt" "$DUR" "$A_CONNS" a.test
        ((${#bpids[@]} == 0)) || reap "${bpids[@]}"
        t1="$EPOCHREALTIME"
        cpu1="$(cpu_s "$NODE_PID")"
        mark1="$(cpu_mark "$NODE_PID")"
        # B's guests still running once B's clients are gone, and how long
        # they take to go (bounded: 90 s).
        left="$(b_in_flight)"
        drain_ms=0
        if [[ -n "$left" && "$left" != 0 ]]; then
            td="$EPOCHREALTIME"
            for _ in $(seq 900); do
                [[ "$(b_in_flight)" == 0 ]] && break
                sleep 0.1
            done
            drain_ms="$(ms_between "$td" "$EPOCHREALTIME")"
            [[ "$(b_in_flight)" == 0 ]] || drain_ms=">90000"
        fi
        kill -0 "$NODE_PID" 2>/dev/null || die "$cfg/$c: the node died"
        parse_wrk "$RAW/$cfg-$c-A.txt"
        [[ -n "$W_RPS" && "$W_REQ" != 0 ]] || {
            cat "$RAW/$cfg-$c-A.txt" >&2
            die "$cfg/$c: A's wrk run produced nothing"
        }
        k="$cfg/$c"
        R[$k.rps]="$W_RPS"
        R[$k.p50]="$W_P50"
        R[$k.p99]="$W_P99"
        R[$k.err]="$W_NON2XX${W_SOCK:+ (socket: $W_SOCK)}"
        bans=""
        for h in $(b_hosts "$c"); do
            parse_wrk "$RAW/$cfg-$c-B-$h.txt"
            bans+="${bans:+; }${h%%.*}: ${W_STATUS:-none}"
            [[ -z "$W_SOCK" ]] || bans+=" (socket: $W_SOCK)"
        done
        R[$k.b]="${bans:-—}"
        R[$k.cpu]="$(awk -v a="$cpu0" -v b="$cpu1" -v s="$t0" -v e="$t1" 'BEGIN { printf "%.2f", (b - a) / (e - s) }')"
        R[$k.left]="${left:-?} / $drain_ms"
        R[$k.rss]="$(rss_mib "$NODE_PID") / $(hwm_mib "$NODE_PID")"
        R[$k.busy]="$busy / $(other_cores "$mark0" "$mark1")"
        ROWS+=("$k")
        log "$k: A ${R[$k.rps]} req/s, p99 ${R[$k.p99]} ms, non-2xx ${R[$k.err]}; B ${R[$k.b]}; node ${R[$k.cpu]} cores; B left in flight/drain ms ${R[$k.left]}; RSS/HWM ${R[$k.rss]} MiB"
    done
    R[$cfg.kills]="$(curl -s --max-time 5 "http://$NODE_METRICS/metrics" |
        awk '/^outpost_runtime_limit_kills_total/ && $2 != 0 { printf "%s%s %s", sep, $1, $2; sep = ", " }' |
        sed -E 's/outpost_runtime_limit_kills_total\{app="([^"]*)",reason="([^"]*)",tenant="([^"]*)"\}/\3\/\1 \2/g')"
    R[$cfg.hwm]="$(hwm_mib "$NODE_PID")"
    mkdir -p "$RAW"
    sed -E $'s/\x1b\\[[0-9;]*m//g' "$WORK/node-$cfg.err" >"$RAW/node-$cfg.log" 2>/dev/null || true
    stop_server "$NODE_PID"
done

# Report ------------------------------------------------------------------

verdict() { # A's numbers vs alone in the same configuration
    local cfg="$1" c="$2"
    awk -v r="${R[$cfg/$c.rps]}" -v r0="${R[$cfg/alone.rps]}" -v p="${R[$cfg/$c.p99]}" -v p0="${R[$cfg/alone.p99]}" 'BEGIN {
        tr = r / r0; pr = p / p0
        printf "%.2f | %.2f | %s", tr, pr, ((tr >= 0.9 && pr <= 2.0) ? "yes" : "**no**")
    }'
}

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
{
    echo "## Noisy neighbour ($stamp)"
    echo
    echo "RUST_BACKTRACE=$BACKTRACE; commit $(describe_commit); $(nproc) cores; load average at start $LOAD_AT_START."
    echo "A: \`wrk -t1 -c$A_CONNS -d${DUR}s --latency\` on tenant a's C hello; B: one \`wrk -t1 -c$CONNS\` per hostile route (started 1 s before A's run, ending 1 s after)."
    echo "B apps: peer = the same C hello as A (a well-behaved neighbour), loop = \`infinite_loop\`, bomb = \`memory_bomb\` (memory_mib $BOMB_MIB), slow = \`slow($SLOW_MS)\` (timeout_ms $SLOW_TIMEOUT_MS)."
    echo "Target (the issue): A keeps ≥ 0.90 of its alone throughput and its p99 at most doubles."
    echo
    for cfg in $CONFIGS; do
        echo "### B limits: $(b_limits_text "$cfg")"
        echo
        echo "| case | A req/s | A p50 ms | A p99 ms | A non-2xx | A req/s vs alone | A p99 vs alone | target holds | B answers (status/x-outpost-error:count) | node CPU (cores) | B in flight at end / drain ms | node RSS / peak (MiB) | other load before / during (cores) |"
        echo "|---|---:|---:|---:|---:|---:|---:|:---:|---|---:|---:|---:|---:|"
        for c in $CASES; do
            k="$cfg/$c"
            v="— | — | —"
            [[ "$c" == alone* || -z "${R[$cfg/alone.rps]:-}" ]] || v="$(verdict "$cfg" "$c")"
            echo "| $c | ${R[$k.rps]} | ${R[$k.p50]} | ${R[$k.p99]} | ${R[$k.err]} | $v | ${R[$k.b]} | ${R[$k.cpu]} | ${R[$k.left]} | ${R[$k.rss]} | ${R[$k.busy]} |"
        done
        echo
        echo "Limit kills over the whole configuration: ${R[$cfg.kills]:-none}; node peak RSS (VmHWM) ${R[$cfg.hwm]} MiB."
        echo
    done
    echo "One request to each B route on an idle node, before the runs (status, x-outpost-error, curl time_total in s):"
    echo
    for p in "${PROBE_NOTES[@]}"; do echo "- $p"; done
} >"$WORK/table.md"

echo
cat "$WORK/table.md"
cp "$WORK/table.md" "$RESULTS_DIR/noisy-latest.md"
cp "$WORK/table.md" "$RESULTS_DIR/noisy-$stamp.md"
cp -r "$RAW" "$RESULTS_DIR/noisy-raw-$stamp"
log "wrote $RESULTS_DIR/noisy-latest.md (raw wrk output and node logs in $RAW)"
