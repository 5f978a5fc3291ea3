#!/usr/bin/env bash
# What the on-disk compiled-module cache buys a restarting edge node.
#
# Usage:  bash loadtests/restart.sh
#
# For each guest (the C hello guest, then RESTART_WASM, by default the
# 13 MB componentize-js guest guests/out/js-hello.wasm):
#   1. start a control plane (127.0.0.1:0, sled in a temp dir), create a
#      tenant and an app through the REST API, deploy the guest;
#   2. start an edge node in sync mode with a fresh --cache-dir, wait until
#      it serves the app (200 with the app's Host), stop it (SIGTERM);
#   3. stop the control plane, then restart the node three times with the
#      control plane down and time process start -> `Listening on` banner
#      (the node applies its cached snapshot before it binds, so that is
#      the restore time):
#        warm    cache dir as left (compiled code in DIR/compiled/)
#        cold    DIR/compiled/ deleted: snapshot and modules cached, code
#                must be compiled again
#        warm2   as left by the cold start (compiled again, so cached)
#      After each: the first request must answer 200, and the compile-cache
#      hit/miss/invalid counters are scraped from the metrics listener.
# Prints a Markdown table and writes it to loadtests/results/restart-latest.md
# (plus a timestamped copy and the node logs under results/restart-logs/).
#
# Everything runs on 127.0.0.1 with kernel-picked ports; every wait is
# bounded; an EXIT trap stops whatever is still running.
#
# Knobs (env): RESTART_SKIP_BUILD (unset) RESTART_BIN_DIR (target/release)
# RESTART_WASM (guests/out/js-hello.wasm) RESTART_GUESTS (overrides the
# whole list; default "guests/c/hello/hello.wasm $RESTART_WASM")
# RESTART_BIN_NOTE (free text: where the binaries came from, for the table)
# RESTART_TIMEOUT_S (300: per start, per upload) BENCH_MAX_BUSY (0.5)
# BENCH_LOAD_WAIT_S (600) (the idle-CPU gate from lib.sh, before each timed
# start). RUST_BACKTRACE is passed through unchanged and reported.
set -euo pipefail
export LC_ALL=C # EPOCHREALTIME and awk with a '.' decimal point

# shellcheck source=loadtests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[restart %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    printf '\n[restart] FAILED: %s\n\n' "$*" >&2
    exit 1
}

BIN_DIR="${RESTART_BIN_DIR:-$ROOT/target/release}"
MAIN_WASM="${RESTART_WASM:-guests/out/js-hello.wasm}"
GUESTS="${RESTART_GUESTS:-guests/c/hello/hello.wasm $MAIN_WASM}"
TIMEOUT_S="${RESTART_TIMEOUT_S:-300}"
BACKTRACE="${RUST_BACKTRACE-<unset>}"
LOG_DIR="$RESULTS_DIR/restart-logs"

# Fresh random tokens (>= 16 characters), handed to the children through
# the environment, never on a command line.
rand_hex() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }
ADMIN_TOKEN="admin-$(rand_hex)"
NODE_TOKEN="node-$(rand_hex)"

[[ "${BASH_VERSINFO[0]}" -ge 5 ]] || die "needs bash >= 5 (EPOCHREALTIME)"
for tool in curl jq du od; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
for w in $GUESTS; do
    [[ -f "$ROOT/$w" ]] || die "$w not found (build it with guests/build.sh, or set RESTART_WASM)"
done

if [[ -z "${RESTART_SKIP_BUILD:-}" ]]; then
    log "building control-plane and edge-node (release)"
    (cd "$ROOT" && cargo build --release -j2 -p outpost-control-plane -p outpost-edge-node) ||
        die "cargo build failed"
fi
for b in control-plane edge-node; do
    [[ -x "$BIN_DIR/$b" ]] || die "$BIN_DIR/$b was not built"
done

# Helpers -------------------------------------------------------------------

# forget PID: stops it (if still running) and drops it from CHILDREN.
forget() { stop_server "$1"; }

# Milliseconds between two EPOCHREALTIME values.
ms_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }

# Copies stdin to stdout, each line prefixed with the time it was read.
stamp_lines() {
    local line
    while IFS= read -r line; do
        printf '%s %s\n' "$EPOCHREALTIME" "$line"
    done
}

# start_timed NAME CMD...: starts CMD with stdout through a FIFO into
# stamp_lines (so every stdout line carries the time it was printed) and
# stderr into $WORK/NAME.err, then waits (bounded) for the
# `Listening on http://ADDR/` banner. Sets PID, ADDR, METRICS (if printed)
# and BANNER_MS (process start -> banner) and READER (the stamper's pid).
start_timed() {
    local name="$1"
    shift
    local fifo="$WORK/$name.fifo" out="$WORK/$name.out" err="$WORK/$name.err"
    rm -f "$fifo" "$out" "$err"
    mkfifo "$fifo"
    : >"$out" # the stamper opens it only once the FIFO has a writer
    stamp_lines <"$fifo" >"$out" &
    READER=$!
    CHILDREN+=("$READER")
    local t0="$EPOCHREALTIME"
    (cd "$ROOT" && exec "$@") >"$fifo" 2>"$err" &
    PID=$!
    CHILDREN+=("$PID")
    local deadline=$((SECONDS + TIMEOUT_S)) line=""
    while :; do
        line="$(grep -m1 ' Listening on http://' "$out" || true)"
        [[ -z "$line" ]] || break
        if ! kill -0 "$PID" 2>/dev/null; then
            cat "$out" "$err" >&2
            die "$name exited before it was listening"
        fi
        ((SECONDS < deadline)) || {
            cat "$out" "$err" >&2
            die "$name printed no banner within ${TIMEOUT_S}s"
        }
        sleep 0.01
    done
    BANNER_MS="$(ms_between "$t0" "${line%% *}")"
    ADDR="$(grep -oE 'Listening on http://127\.0\.0\.1:[0-9]+' <<<"$line" | grep -oE '127\.0\.0\.1:[0-9]+')"
    METRICS=""
    for _ in $(seq 100); do # the metrics line follows at once (bounded: 1 s)
        METRICS="$(grep -oE 'Metrics on http://127\.0\.0\.1:[0-9]+' "$out" | grep -oE '127\.0\.0\.1:[0-9]+' || true)"
        [[ -n "$METRICS" ]] && break
        sleep 0.01
    done
    [[ -n "$ADDR" ]] || die "$name: no address in its banner: $line"
    log "$name (pid $PID): banner after ${BANNER_MS} ms, on $ADDR"
}

# stop_timed NAME: SIGTERM (SIGKILL after 5 s) the process and its stamper;
# keeps its logs.
stop_timed() {
    local name="$1"
    forget "$PID"
    forget "$READER"
    mkdir -p "$LOG_DIR"
    # Without ANSI colours, so the WARN/ERROR summary below can grep them.
    cat "$WORK/$name.out" "$WORK/$name.err" 2>/dev/null | sed -E $'s/\x1b\\[[0-9;]*m//g' >"$LOG_DIR/$name.log" || true
}

# api METHOD PATH TOKEN CURL_ARGS...: a control-plane call; fails loudly on
# a non-2xx answer; prints the body.
api() {
    local method="$1" path="$2" token="$3"
    shift 3
    local body code
    body="$(curl -sS --max-time "$TIMEOUT_S" -X "$method" -H "Authorization: Bearer $token" \
        -w '\n%{http_code}' "$@" "http://$CP_ADDR$path")" || die "$method $path: curl failed"
    code="${body##*$'\n'}"
    body="${body%$'\n'*}"
    [[ "$code" == 2?? ]] || die "$method $path: HTTP $code: $body"
    printf '%s' "$body"
}

# status HOST: the status code of GET / on the node with that Host.
status() {
    curl -s -o "$WORK/body" -w '%{http_code}' --max-time 10 -H "Host: $1" "http://$ADDR/" || true
}

# lookups: "hit miss invalid" from the node's metrics listener.
lookups() {
    local text r out=()
    text="$(curl -s --max-time 5 "http://$METRICS/metrics" || true)"
    for r in hit miss invalid; do
        out+=("$(awk -v r="$r" '$1 == "outpost_runtime_compile_cache_lookups_total{result=\"" r "\"}" { v = $2 } END { print (v == "" ? "?" : v) }' <<<"$text")")
    done
    echo "${out[*]}"
}

# Compiled cache on disk (du), human-readable.
du_compiled() {
    local kib
    kib="$(du -sk "$1" 2>/dev/null | cut -f1)"
    awk -v k="${kib:-0}" 'BEGIN { if (k >= 1024) printf "%.1f MiB", k / 1024; else printf "%d KiB", k }'
}

size_of() {
    awk -v b="$(stat -c %s "$1")" 'BEGIN { if (b >= 1048576) printf "%.1f MB", b / 1048576; else printf "%.1f KB", b / 1024 }'
}

node_cmd() {
    NODE_CMD=(env OUTPOST_NODE_TOKEN="$NODE_TOKEN" "$BIN_DIR/edge-node"
        --control-plane "http://$CP_ADDR" --cache-dir "$1" --node-id restart-bench
        --http 127.0.0.1:0 --metrics 127.0.0.1:0)
}

# One guest ---------------------------------------------------------------

declare -A R_PATH R_SIZE R_COLD R_WARM R_WARM2 R_DU R_FILES R_LOOKUPS R_FIRST R_UPLOAD R_FLAG R_BUSY
mkdir -p "$RESULTS_DIR"
rm -rf "$LOG_DIR"

run_guest() {
    local wasm="$1"
    local g
    g="$(basename "$wasm" .wasm)"
    local host="$g.restart.test" dir="$WORK/$g"
    local cache="$dir/node-cache"
    mkdir -p "$dir"
    R_PATH[$g]="$wasm"
    R_SIZE[$g]="$(size_of "$ROOT/$wasm")"
    R_FLAG[$g]=""
    R_BUSY[$g]=""

    # Control plane, tenant, app, deployment.
    start_timed "$g-control-plane" env OUTPOST_ADMIN_TOKEN="$ADMIN_TOKEN" OUTPOST_NODE_TOKEN="$NODE_TOKEN" \
        "$BIN_DIR/control-plane" --listen 127.0.0.1:0 --data-dir "$dir/cp-data"
    local cp_pid="$PID" cp_reader="$READER"
    CP_ADDR="$ADDR"
    local tenant_token t0
    tenant_token="$(api POST /v1/tenants "$ADMIN_TOKEN" -H 'content-type: application/json' \
        -d '{"name":"bench","domains":["restart.test"]}' | jq -er .token)" || die "no tenant token"
    api POST /v1/apps "$tenant_token" -H 'content-type: application/json' \
        -d "{\"name\":\"$g\",\"routes\":[\"$host\"]}" >/dev/null
    t0="$EPOCHREALTIME"
    api POST "/v1/apps/$g/deployments" "$tenant_token" -H 'content-type: application/wasm' \
        --data-binary "@$ROOT/$wasm" >"$dir/deploy.json"
    R_UPLOAD[$g]="$(ms_between "$t0" "$EPOCHREALTIME")"
    log "$g: deployed $(jq -c '{version, size}' "$dir/deploy.json") in ${R_UPLOAD[$g]} ms (upload + validation compile)"

    # First start: empty cache, follows the control plane until it serves.
    node_cmd "$cache"
    t0="$EPOCHREALTIME"
    start_timed "$g-node-first" "${NODE_CMD[@]}"
    local code="" deadline=$((SECONDS + TIMEOUT_S))
    while [[ "$code" != 200 ]]; do
        ((SECONDS < deadline)) || die "$g: the node did not serve $host within ${TIMEOUT_S}s (last: '$code')"
        kill -0 "$PID" 2>/dev/null || die "$g: the node exited: $(cat "$WORK/$g-node-first.err")"
        code="$(status "$host")"
        [[ "$code" == 200 ]] || sleep 0.02
    done
    R_FIRST[$g]="$(ms_between "$t0" "$EPOCHREALTIME")"
    log "$g: first start served $host after ${R_FIRST[$g]} ms ('$(head -c 60 "$WORK/body" | head -1)'); lookups hit/miss/invalid: $(lookups)"
    compgen -G "$cache/compiled/*.cwasm" >/dev/null || die "$g: no $cache/compiled/*.cwasm after the first start"
    stop_timed "$g-node-first"

    # Restarts, control plane down.
    PID="$cp_pid" READER="$cp_reader" stop_timed "$g-control-plane"
    local mode busy got
    for mode in warm cold warm2; do
        if [[ "$mode" == cold ]]; then
            rm -rf "$cache/compiled"
        fi
        wait_for_idle_cpu
        busy="$BUSY"
        start_timed "$g-node-$mode" "${NODE_CMD[@]}"
        code="$(status "$host")"
        [[ "$code" == 200 ]] || {
            cat "$WORK/$g-node-$mode.err" >&2
            die "$g ($mode): the first request after the banner got '$code', not 200: $(head -c 300 "$WORK/body")"
        }
        got="$(lookups)"
        read -r hit miss invalid <<<"$got"
        log "$g ($mode): ${BANNER_MS} ms to the banner, 200 at once; lookups hit/miss/invalid: $got; other load before: $busy cores"
        if [[ "$mode" == cold ]]; then
            R_COLD[$g]="$BANNER_MS"
            [[ "$hit" == 0 && "$miss" != 0 && "$miss" != "?" ]] ||
                { R_FLAG[$g]+=" cold start expected 0 hits and a miss, got $got;"; log "WARNING: ${R_FLAG[$g]}"; }
        else
            if [[ "$mode" == warm ]]; then R_WARM[$g]="$BANNER_MS"; else R_WARM2[$g]="$BANNER_MS"; fi
            [[ "$miss" == 0 && "$invalid" == 0 && "$hit" != 0 && "$hit" != "?" ]] ||
                { R_FLAG[$g]+=" $mode start expected hits only, got $got;"; log "WARNING: ${R_FLAG[$g]}"; }
        fi
        R_LOOKUPS[$g]+="${R_LOOKUPS[$g]:+ · }$mode ${hit}/${miss}/${invalid}"
        R_BUSY[$g]+="${R_BUSY[$g]:+/}$busy"
        stop_timed "$g-node-$mode"
    done
    R_DU[$g]="$(du_compiled "$cache/compiled")"
    R_FILES[$g]="$(find "$cache/compiled" -name '*.cwasm' | wc -l)"
}

log "RUST_BACKTRACE=$BACKTRACE; binaries from $BIN_DIR"
ORDER=()
for w in $GUESTS; do
    run_guest "$w"
    ORDER+=("$(basename "$w" .wasm)")
done

# Report ------------------------------------------------------------------

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
commit="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
dirty="$(cd "$ROOT" && git status --porcelain -- edge-node control-plane proto Cargo.toml Cargo.lock 2>/dev/null | grep -q . &&
    echo ' (working tree has uncommitted Rust changes)' || true)"
if [[ -n "${RESTART_SKIP_BUILD:-}" ]]; then
    dirty+=", not rebuilt: edge-node binary from $(date -u -r "$BIN_DIR/edge-node" +%Y-%m-%dT%H:%MZ)"
fi
{
    echo "## Edge-node restart: restore time with and without the compiled-module cache ($stamp)"
    echo
    echo "RUST_BACKTRACE=$BACKTRACE; binaries: \`${BIN_DIR/#$ROOT\//}\`${RESTART_BIN_NOTE:+ ($RESTART_BIN_NOTE)}; repo at \`$commit\`$dirty; $(nproc) cores."
    echo "Restore = process start -> \`Listening on\` banner, control plane down; the first request right after it answered 200 every time."
    echo
    echo "| guest | guest size | cold restore (compile) ms | warm restore (cache) ms | cold / warm | compiled cache on disk |"
    echo "|---|---:|---:|---:|---:|---:|"
    for g in "${ORDER[@]}"; do
        ratio="$(awk -v c="${R_COLD[$g]}" -v a="${R_WARM[$g]}" -v b="${R_WARM2[$g]}" 'BEGIN { w = (a + b) / 2; printf "%.1f×", (w > 0 ? c / w : 0) }')"
        echo "| \`${R_PATH[$g]}\` | ${R_SIZE[$g]} | ${R_COLD[$g]} | ${R_WARM[$g]} / ${R_WARM2[$g]} | $ratio | ${R_DU[$g]} (${R_FILES[$g]} × .cwasm) |"
    done
    echo
    echo "Warm is given twice: before the cold run and after it (the cold run compiled and re-cached); the ratio uses their mean."
    echo "Compile-cache lookups scraped after each start (hit/miss/invalid):"
    for g in "${ORDER[@]}"; do
        echo "- $g: ${R_LOOKUPS[$g]}; first sync start (empty cache, control plane up) served after ${R_FIRST[$g]} ms; deploy (upload + validation) ${R_UPLOAD[$g]} ms; other load before each timed start: ${R_BUSY[$g]} cores${R_FLAG[$g]:+; **WARNING**:${R_FLAG[$g]}}"
    done
} >"$WORK/table.md"

echo
cat "$WORK/table.md"
cp "$WORK/table.md" "$RESULTS_DIR/restart-latest.md"
cp "$WORK/table.md" "$RESULTS_DIR/restart-$stamp.md"

# Warnings and errors the nodes logged (expected with the control plane
# down: "sync with the control plane failed; retrying").
echo
log "WARN/ERROR lines in the logs (results/restart-logs/), counted:"
grep -hE ' (WARN|ERROR) ' "$LOG_DIR"/*.log 2>/dev/null |
    sed -E 's/^[0-9TZ:.-]+ +//; s/(error=).*/\1…/' | sort | uniq -c | sort -rn >&2 || true
log "wrote $RESULTS_DIR/restart-latest.md"
