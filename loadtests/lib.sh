# Shared helpers for bench.sh and profile.sh. Source it; do not run it.
#
# Everything here talks only to 127.0.0.1, and every load run is bounded
# in time (wrk -d, wrapped in `timeout`).

# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS_DIR="$ROOT/loadtests/results"

WASMTIME_VERSION="${BENCH_WASMTIME_VERSION:-48.0.8}"
WASM="${BENCH_WASM:-guests/c/hello/hello.wasm}"
HOST_HEADER="${BENCH_HOST:-hello.test}"

# wrk knobs.
THREADS="${BENCH_THREADS:-2}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
DURATION="${BENCH_DURATION:-10s}"
WARMUP="${BENCH_WARMUP:-2s}"

# Readiness: how long a server may take to print its address and answer.
READY_TIMEOUT_S="${BENCH_READY_TIMEOUT_S:-60}"

# Load gate: wait (polling) while the 1-minute load average is above this
# (checked once, before the first server), and, before each server, while
# other processes keep more than BENCH_MAX_BUSY cores busy (sampled over 3 s;
# load1 itself lags a minute behind our own previous run, so it is no use
# between servers).
MAX_LOAD="${BENCH_MAX_LOAD:-1.5}"
MAX_BUSY="${BENCH_MAX_BUSY:-0.5}"
LOAD_WAIT_S="${BENCH_LOAD_WAIT_S:-600}"
LOAD_POLL_S="${BENCH_LOAD_POLL_S:-30}"

WORK="$(mktemp -d /tmp/outpost-bench.XXXXXX)"
CHILDREN=()

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    printf '\n[bench] FAILED: %s\n\n' "$*" >&2
    exit 1
}

cleanup() {
    local pid
    for pid in "${CHILDREN[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${CHILDREN[@]}"; do
        # Bounded: up to 5 s for a graceful exit, then SIGKILL.
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}

# Seconds (float) in a wrk duration such as 10s, 2m, 500ms.
duration_s() {
    local d="$1"
    case "$d" in
        *ms) awk -v v="${d%ms}" 'BEGIN { print v / 1000 }' ;;
        *s) echo "${d%s}" ;;
        *m) awk -v v="${d%m}" 'BEGIN { print v * 60 }' ;;
        *h) awk -v v="${d%h}" 'BEGIN { print v * 3600 }' ;;
        *) echo "$d" ;;
    esac
}

ensure_wrk() {
    if ! command -v wrk >/dev/null 2>&1; then
        log "installing wrk (apt)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
    fi
    command -v wrk >/dev/null || die "wrk is not installed"
}

ensure_wasmtime() {
    export PATH="$HOME/.cargo/bin:$PATH"
    local have=""
    have="$(wasmtime --version 2>/dev/null | awk '{print $2}')" || true
    if [[ "$have" != "$WASMTIME_VERSION" ]]; then
        log "installing wasmtime-cli $WASMTIME_VERSION (have '${have:-none}'; ~16 min on 2 cores)"
        cargo install wasmtime-cli --version "$WASMTIME_VERSION" --locked -j2
    fi
    have="$(wasmtime --version | awk '{print $2}')"
    [[ "$have" == "$WASMTIME_VERSION" ]] || die "wasmtime is $have, want $WASMTIME_VERSION"
}

build_edge_node() {
    log "building edge-node (release)"
    (cd "$ROOT" && cargo build --release -j2 -p outpost-edge-node)
    [[ -x "$ROOT/target/release/edge-node" ]] || die "target/release/edge-node was not built"
}

# Waits (bounded) until the 1-minute load average is at most MAX_LOAD.
# Numbers measured on a busy 2-core machine are meaningless.
wait_for_quiet_machine() {
    local waited=0 load
    while :; do
        load="$(cut -d' ' -f1 /proc/loadavg)"
        if awk -v l="$load" -v m="$MAX_LOAD" 'BEGIN { exit !(l <= m) }'; then
            log "load average $load <= $MAX_LOAD: measuring"
            return 0
        fi
        if ((waited >= LOAD_WAIT_S)); then
            log "WARNING: load average still $load after ${waited}s; measuring anyway (numbers will be noisy)"
            return 0
        fi
        log "load average $load > $MAX_LOAD (something else is running); waiting ${LOAD_POLL_S}s"
        sleep "$LOAD_POLL_S"
        waited=$((waited + LOAD_POLL_S))
    done
}

# Cores kept busy by the whole machine over the next $1 seconds (from /proc/stat).
busy_cores() {
    local a b
    a="$(head -1 /proc/stat)"
    sleep "$1"
    b="$(head -1 /proc/stat)"
    awk -v a="$a" -v b="$b" -v n="$(nproc)" 'BEGIN {
        split(a, x); split(b, y); tot = 0; idle = 0
        for (i = 2; i <= 9; i++) tot += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.2f", (tot > 0 ? n * (tot - idle) / tot : 0)
    }'
}

# Waits (bounded) until other processes keep at most MAX_BUSY cores busy.
# Sets BUSY to the last sample.
wait_for_idle_cpu() {
    local waited=0
    while :; do
        BUSY="$(busy_cores 3)"
        if awk -v b="$BUSY" -v m="$MAX_BUSY" 'BEGIN { exit !(b <= m) }'; then
            return 0
        fi
        if ((waited >= LOAD_WAIT_S)); then
            log "WARNING: $BUSY cores still busy after ${waited}s; measuring anyway (numbers will be noisy)"
            return 0
        fi
        log "$BUSY cores busy with something else (> $MAX_BUSY); waiting ${LOAD_POLL_S}s"
        sleep "$LOAD_POLL_S"
        waited=$((waited + LOAD_POLL_S))
    done
}

# start_server NAME ADDR_REGEX CMD...: starts CMD in the background
# (stdout/stderr to $WORK/NAME.{out,err}), waits until one of them shows
# ADDR_REGEX (whose first match must be host:port) and the server answers
# 200 to GET / with the bench Host header. Sets SERVER_PID and SERVER_ADDR.
start_server() {
    local name="$1" regex="$2"
    shift 2
    local out="$WORK/$name.out" err="$WORK/$name.err"
    log "starting $name: $*"
    (cd "$ROOT" && exec "$@") >"$out" 2>"$err" &
    SERVER_PID=$!
    CHILDREN+=("$SERVER_PID")
    SERVER_ADDR=""
    local deadline=$((SECONDS + READY_TIMEOUT_S))
    while [[ -z "$SERVER_ADDR" ]]; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            cat "$out" "$err" >&2
            die "$name exited before it was listening"
        fi
        ((SECONDS < deadline)) || {
            cat "$out" "$err" >&2
            die "$name printed no address within ${READY_TIMEOUT_S}s"
        }
        SERVER_ADDR="$(cat "$out" "$err" | grep -oE "$regex" | head -1 | grep -oE '127\.0\.0\.1:[0-9]+' || true)"
        [[ -n "$SERVER_ADDR" ]] || sleep 0.05
    done
    local code=""
    while [[ "$code" != "200" ]]; do
        ((SECONDS < deadline)) || {
            cat "$out" "$err" >&2
            die "$name at $SERVER_ADDR did not answer 200 within ${READY_TIMEOUT_S}s (last: '$code')"
        }
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
            -H "Host: $HOST_HEADER" "http://$SERVER_ADDR/" || true)"
        [[ "$code" == "200" ]] || sleep 0.05
    done
    log "$name (pid $SERVER_PID) is answering on $SERVER_ADDR"
}

stop_server() {
    local pid="$1"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local keep=() p
    for p in "${CHILDREN[@]}"; do
        [[ "$p" == "$pid" ]] || keep+=("$p")
    done
    CHILDREN=("${keep[@]}")
}

# run_wrk DURATION OUTFILE: one bounded wrk run against $SERVER_ADDR.
run_wrk() {
    local dur="$1" out="$2" limit
    limit="$(awk -v d="$(duration_s "$dur")" 'BEGIN { printf "%d", d + 30 }')"
    timeout --signal=INT --kill-after=5 "$limit" \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$dur" --latency \
        -H "Host: $HOST_HEADER" "http://$SERVER_ADDR/" >"$out" 2>&1 ||
        {
            cat "$out" >&2
            die "wrk failed or overran ${limit}s against $SERVER_ADDR"
        }
}

# A wrk latency ("812.00us", "1.23ms", "1.02s", "2.00m") in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else { printf "%s", v }
    }'
}

# check_wrk NAME FILE: fails loudly on any non-2xx/3xx answer, socket error or
# an empty run. Sets RPS, P50_MS, P99_MS, REQUESTS.
check_wrk() {
    local name="$1" f="$2"
    local non2xx sock
    non2xx="$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$f")"
    sock="$(grep -E '^ *Socket errors:' "$f" || true)"
    REQUESTS="$(awk '/requests in/ { print $1 }' "$f")"
    RPS="$(awk '/^Requests\/sec:/ { print $2 }' "$f")"
    P50_MS="$(to_ms "$(awk '$1 == "50%" { print $2 }' "$f")")"
    P99_MS="$(to_ms "$(awk '$1 == "99%" { print $2 }' "$f")")"
    if [[ -n "$non2xx" && "$non2xx" != "0" ]] || [[ -n "$sock" ]] ||
        [[ -z "$RPS" || -z "$REQUESTS" || "$REQUESTS" == "0" ]]; then
        cat "$f" >&2
        die "$name: errors under load (non-2xx/3xx: ${non2xx:-0}; ${sock:-no socket errors}; requests: ${REQUESTS:-?})"
    fi
}

# Peak resident set size of PID, in MiB (VmHWM).
peak_rss_mib() {
    awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

# The servers under test ----------------------------------------------------

# wasmtime's -O sizes are plain byte counts (no KiB/MiB suffixes).
TUNED_OPTS="pooling-memory-keep-resident=$((1024 * 1024)),pooling-table-keep-resident=$((64 * 1024)),pooling-decommit-batch-size=64,pooling-async-stack-keep-resident=$((256 * 1024))"

# Sets the array CMD to the command line of server $1.
set_cmd() {
    case "$1" in
        ref) CMD=(wasmtime serve -O pooling-allocator=y --addr 127.0.0.1:0 "$WASM") ;;
        ref-tuned) CMD=(wasmtime serve -O pooling-allocator=y -O "$TUNED_OPTS" --addr 127.0.0.1:0 "$WASM") ;;
        outpost) CMD=("$ROOT/target/release/edge-node" --http 127.0.0.1:0 --metrics 127.0.0.1:0 --app "$HOST_HEADER=$WASM") ;;
        *) die "unknown server '$1' (want ref, ref-tuned or outpost)" ;;
    esac
}

server_regex() {
    case "$1" in
        ref | ref-tuned) echo 'Serving HTTP on http://127\.0\.0\.1:[0-9]+' ;;
        outpost) echo 'Listening on http://127\.0\.0\.1:[0-9]+' ;;
    esac
}

server_label() {
    case "$1" in
        ref) echo "wasmtime serve (pooling)" ;;
        ref-tuned) echo "wasmtime serve (pooling, tuned)" ;;
        outpost) echo "Outpost edge-node" ;;
    esac
}
