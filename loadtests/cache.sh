#!/usr/bin/env bash
# The edge cache: a worker that proxies its origin, served from the cache
# (hit) vs from the origin every time (miss, pass-through) vs nginx
# `proxy_cache` in front of the same origin and the same file; then purge
# propagation across a control plane and two edge nodes.
#
# Usage:  bash loadtests/cache.sh
#         CACHE_SKIP_BUILD=1 CACHE_BIN_DIR=/some/release bash loadtests/cache.sh
#
# 1. Installs what is missing (apt, after `apt-get update`): nginx-light,
#    wrk. Builds release edge-node and control-plane (`cargo build --release
#    -j2 -p outpost-edge-node -p outpost-control-plane`; CACHE_SKIP_BUILD=1
#    skips it) and copies both, and the proxy fixture, to a temp dir, so
#    edits to the tree during the run change nothing that is measured.
# 2. The origin: nginx on 127.0.0.1 (a free port) serving random files of
#    CACHE_SIZES bytes with `Cache-Control: public, max-age=3600`, nginx's
#    ETag and Last-Modified; buffered access log, read after each run.
# 3. For each size, one server at a time (never two at once: 2 cores), each
#    after the idle-CPU gate, a 2 s warm-up and one `wrk -t2 -c32 -d10s
#    --latency` run with the same Lua script (loadtests/cache.lua):
#      origin        the origin nginx itself (the ceiling)
#      nginx-cache   a second nginx with proxy_cache (+ proxy_cache_lock,
#                    validity from the origin's headers, keep-alive to the
#                    origin), the same URL -> X-Cache-Status: HIT
#      outpost-hit   edge-node (standalone, [cache] on) running
#                    guests/c/proxy/proxy.wasm, the same URL -> x-cache: HIT
#      outpost-miss  the same, every request a new URL (?r=run-thread-n) ->
#                    MISS, each response stored, evicted as the budget fills
#      outpost-pass  edge-node with --cache false, the same URL: every
#                    request goes to the origin
#    Checked, or the script fails: curl sees MISS then HIT before the cache
#    runs; every warm-up answer is 200 with the expected verdict (the Lua
#    tally); no non-2xx and no socket error in any run; the origin's access
#    log shows exactly one request for each hit run; the node's
#    outpost_cache_requests_total says 1 miss and the rest hits (hit run),
#    0 hits (miss run), no cache lookups at all (pass-through).
# 4. Purges: a control plane (sled) and two sync-mode edge nodes with the
#    same [outbound]/[cache] sections, tenant acme, the proxy app deployed
#    through the API. One URL is warmed on both (HIT), then CACHE_PURGES
#    (100) times: POST /v1/cache/purge by URL, recording the client's wall
#    time of the call (curl's time_total) and the answer's waited_ms (from
#    the purge's record until both nodes reported it), checking the answer
#    says 2 of 2 nodes applied it, then both nodes answer MISS for the URL
#    (which stores it again) and then HIT. Bounded: CACHE_PURGE_MAX_S (60).
# 5. Writes the tables to loadtests/results/cache-latest.md and a
#    timestamped copy; raw wrk output and samples in results/cache-raw-STAMP/.
#
# Loopback only; every port from the kernel (:0) or checked free (nginx);
# every process is in CHILDREN, stopped by the EXIT trap; every run,
# request and wait is bounded. /tmp/bench-running exists while it measures.
#
# Knobs (env): CACHE_SIZES ("4096 65536") CACHE_SERVERS ("origin
# nginx-cache outpost-hit outpost-miss outpost-pass") CACHE_PURGES (100)
# CACHE_PURGE_MAX_S (60) CACHE_SKIP_PURGE CACHE_SKIP_LOAD CACHE_SKIP_BUILD
# CACHE_BIN_DIR (target/release) BENCH_THREADS (2) BENCH_CONNECTIONS (32)
# BENCH_DURATION (10s) BENCH_WARMUP (2s) BENCH_MAX_LOAD (1.5) BENCH_MAX_BUSY
# (0.5) BENCH_LOAD_WAIT_S (600) ISO_TIMEOUT_S (120).
set -euo pipefail
export LC_ALL=C

# shellcheck source=loadtests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=loadtests/iso_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/iso_lib.sh"

MARKER=/tmp/bench-running
MARKER_MINE=""
cache_cleanup() {
    [[ -z "$MARKER_MINE" ]] || rm -f "$MARKER"
    cleanup
}
trap cache_cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

log() { printf '[cache %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    printf '\n[cache] FAILED: %s\n\n' "$*" >&2
    exit 1
}

SIZES="${CACHE_SIZES:-4096 65536}"
SERVERS="${CACHE_SERVERS:-origin nginx-cache outpost-hit outpost-miss outpost-pass}"
PURGES="${CACHE_PURGES:-100}"
PURGE_MAX_S="${CACHE_PURGE_MAX_S:-60}"
SRC_BIN_DIR="${CACHE_BIN_DIR:-$ROOT/target/release}"
HOST=cache.test
ORIGIN_NAME=origin.bench.example
TENANT=acme
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RAW="$RESULTS_DIR/cache-raw-$STAMP"

[[ "${BASH_VERSINFO[0]}" -ge 5 ]] || die "needs bash >= 5 (EPOCHREALTIME)"
for s in $SERVERS; do
    case "$s" in
        origin | nginx-cache | outpost-hit | outpost-miss | outpost-pass) ;;
        *) die "unknown server '$s' in CACHE_SERVERS" ;;
    esac
done

# Tools -------------------------------------------------------------------

ensure_nginx() {
    if ! command -v nginx >/dev/null 2>&1 && [[ ! -x /usr/sbin/nginx ]]; then
        log "installing nginx-light (apt; its service is not started: nginx runs here with our own config only)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
    fi
    NGINX="$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)"
    [[ -x "$NGINX" ]] || die "nginx is not installed"
}

ensure_wrk
ensure_nginx
for tool in curl jq python3 awk sort; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done

if [[ -n "${CACHE_SKIP_BUILD:-}" ]]; then
    log "CACHE_SKIP_BUILD set: using the binaries in $SRC_BIN_DIR as they are"
else
    log "building edge-node and control-plane (release, -j2)"
    (cd "$ROOT" && cargo build --release -j2 -p outpost-edge-node -p outpost-control-plane) ||
        die "cargo build failed"
fi
# What the binaries were built from (when built here): HEAD, and whether
# the Rust code had local changes at that moment.
commit="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
dirty="$(cd "$ROOT" && git status --porcelain -- runtime edge-node control-plane serve proto Cargo.toml Cargo.lock 2>/dev/null | grep -q . &&
    echo ' (working tree had uncommitted Rust changes)' || true)"
BUILT_FROM="built from commit $commit$dirty"
[[ -z "${CACHE_SKIP_BUILD:-}" ]] ||
    BUILT_FROM="taken from $SRC_BIN_DIR (edge-node file dated $(date -u -r "$SRC_BIN_DIR/edge-node" +%FT%TZ); HEAD is $commit$dirty)"
BIN_DIR="$WORK/bin"
mkdir -p "$BIN_DIR"
for b in edge-node control-plane; do
    [[ -x "$SRC_BIN_DIR/$b" ]] || die "$SRC_BIN_DIR/$b was not built"
    cp "$SRC_BIN_DIR/$b" "$BIN_DIR/$b"
done
WASM="$WORK/proxy.wasm"
cp "$ROOT/guests/c/proxy/proxy.wasm" "$WASM" || die "guests/c/proxy/proxy.wasm not found"
# The worker processes run as root like the master, so they read $WORK.
chmod 755 "$WORK"

mkdir -p "$RESULTS_DIR" "$RAW"
NGINX_VERSION="$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
WRK_VERSION="$({ wrk -v 2>&1 || true; } | awk 'NR == 1 { print $2 }')"
log "RUST_BACKTRACE=$BACKTRACE; $NGINX_VERSION; wrk $WRK_VERSION; raw output in ${RAW#"$ROOT"/}"

# A free loopback port (nginx cannot take :0 and tell us): bound and
# released; nginx failing to bind it (a race) fails the start loudly.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# nginx -------------------------------------------------------------------

WWW="$WORK/www"
mkdir -p "$WWW"
for size in $SIZES; do
    head -c "$size" /dev/urandom >"$WWW/obj-$size.bin"
done
ORIGIN_PORT="$(free_port)"
ORIGIN_ADDR="127.0.0.1:$ORIGIN_PORT"
ORIGIN_LOG="$WORK/origin-access.log"

# nginx_common NAME: the top of an nginx.conf whose files all live in
# $WORK/NAME (pid, error log, temp paths). nginx's defaults plus sendfile;
# NOT `tcp_nopush on`: with it, proxy_cache HITs of the 64 KiB file stall
# 40 ms each (TCP_CORK against delayed ACKs on loopback: 800 req/s instead
# of ~80 000), which would flatter Outpost.
nginx_common() {
    local d="$WORK/$1"
    mkdir -p "$d"
    cat <<EOF
user root;
worker_processes auto;
pid $d/nginx.pid;
error_log $d/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
    default_type application/octet-stream;
    sendfile on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path $d/body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
EOF
}

nginx_common origin >"$WORK/origin.conf"
cat >>"$WORK/origin.conf" <<EOF
    access_log $ORIGIN_LOG combined buffer=64k flush=1s;
    server {
        listen $ORIGIN_ADDR;
        root $WWW;
        location / {
            add_header Cache-Control "public, max-age=3600" always;
        }
    }
}
EOF

NGX_CACHE_PORT="$(free_port)"
nginx_common nginx-cache >"$WORK/nginx-cache.conf"
cat >>"$WORK/nginx-cache.conf" <<EOF
    access_log off;
    proxy_cache_path $WORK/nginx-cache/cache levels=1:2 keys_zone=bench:16m max_size=256m inactive=60m use_temp_path=off;
    upstream origin {
        server $ORIGIN_ADDR;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NGX_CACHE_PORT;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $ORIGIN_NAME:$ORIGIN_PORT;
            proxy_cache bench;
            proxy_cache_lock on;
            add_header X-Cache-Status \$upstream_cache_status always;
        }
    }
}
EOF

# start_nginx NAME CONF ADDR PATH: starts nginx in the foreground of a
# child (its master's pid in CHILDREN) and waits (bounded) for a 200 on PATH.
start_nginx() {
    local name="$1" conf="$2" addr="$3" path="$4" code="" deadline=$((SECONDS + ISO_TIMEOUT_S))
    "$NGINX" -t -q -e "$WORK/$name/error.log" -c "$conf" || die "nginx refuses $conf"
    "$NGINX" -e "$WORK/$name/error.log" -c "$conf" >"$WORK/$name.out" 2>&1 &
    PROC_PID=$!
    CHILDREN+=("$PROC_PID")
    while [[ "$code" != 200 ]]; do
        if ! kill -0 "$PROC_PID" 2>/dev/null; then
            cat "$WORK/$name.out" "$WORK/$name/error.log" >&2 || true
            die "$name (nginx) exited at start"
        fi
        ((SECONDS < deadline)) || die "$name (nginx) did not answer 200 on $addr$path within ${ISO_TIMEOUT_S}s"
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H "Host: $HOST" "http://$addr$path" || true)"
        [[ "$code" == 200 ]] || sleep 0.05
    done
    log "$name (nginx, pid $PROC_PID) answering on $addr"
}

# nginx_pids MASTER: the master and its workers.
nginx_pids() { echo "$1" $(pgrep -P "$1" || true); }

# Origin requests logged so far for paths starting with $1 (the log is
# buffered for at most 1 s).
origin_requests() {
    sleep 1.2
    awk -v p="$1" 'index($7, p) == 1 { n++ } END { printf "%d", n }' "$ORIGIN_LOG" 2>/dev/null
}

# The edge node -----------------------------------------------------------

OUTBOUND="$ORIGIN_NAME:$ORIGIN_PORT"
node_sections() {
    cat <<EOF
[outbound]
allow_cidrs = ["127.0.0.0/8"]
hosts = { "$ORIGIN_NAME" = "127.0.0.1" }   # allow-lists take DNS names only

[cache]
enabled = true
budget_bytes = 268435456
tenant_budget_bytes = 67108864
max_object_bytes = 8388608
EOF
}
{
    printf 'http = "127.0.0.1:0"\nmetrics = "127.0.0.1:0"\n\n'
    node_sections
    cat <<EOF

[[app]]
routes = ["$HOST"]
tenant = "$TENANT"
wasm = "$WASM"
env = { UPSTREAM = "$OUTBOUND" }
allow_outbound = ["$OUTBOUND"]
EOF
} >"$WORK/node.toml"
cp "$WORK/node.toml" "$RAW/node.toml"
cp "$WORK/nginx-cache.conf" "$RAW/nginx-cache.conf"
cp "$WORK/origin.conf" "$RAW/origin.conf"

# cache_count ADDR RESULT: outpost_cache_requests_total of the tenant.
cache_count() {
    local v
    v="$(metric "$1" "outpost_cache_requests_total{result=\"$2\",tenant=\"$TENANT\"}")"
    echo "${v:-0}"
}
cache_lookups() { # ADDR: every verdict of the tenant, summed
    metric_sum "$1" "^outpost_cache_requests_total[{].*tenant=\"$TENANT\""
}

# verdict ADDR PATH HEADER: "status verdict" of one GET through ADDR.
verdict() {
    curl -s -o /dev/null -D - --max-time 10 -H "Host: $HOST" "http://$1$2" |
        awk -v h="$(tr 'A-Z' 'a-z' <<<"$3")" '
            NR == 1 { s = $2 }
            { line = tolower($0); sub(/\r$/, "", line) }
            index(line, h ":") == 1 { v = $2; sub(/\r$/, "", v) }
            END { printf "%s %s", (s == "" ? "000" : s), (v == "" ? "-" : v) }'
}

# wait_200 ADDR PATH: bounded wait for a 200 through ADDR.
wait_200() {
    local code="" deadline=$((SECONDS + ISO_TIMEOUT_S))
    while [[ "$code" != 200 ]]; do
        ((SECONDS < deadline)) || die "$1$2 did not answer 200 within ${ISO_TIMEOUT_S}s (last: $code)"
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Host: $HOST" "http://$1$2" || true)"
        [[ "$code" == 200 ]] || sleep 0.05
    done
}

# wrk ----------------------------------------------------------------------

RUN_N=0
# cache_wrk ADDR PATH UNIQUE TALLY DURATION OUT: one bounded wrk run.
cache_wrk() {
    local addr="$1" path="$2" unique="$3" tally="$4" dur="$5" out="$6" limit
    limit="$(awk -v d="$(duration_s "$dur")" 'BEGIN { printf "%d", d + 30 }')"
    RUN_N=$((RUN_N + 1))
    CACHE_PATH="$path" CACHE_UNIQUE="$unique" CACHE_TALLY="$tally" CACHE_RUN="$RUN_N" \
        timeout --signal=INT --kill-after=5 "$limit" \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$dur" --latency -s "$ROOT/loadtests/cache.lua" \
        -H "Host: $HOST" "http://$addr/" >"$out" 2>&1 ||
        {
            cat "$out" >&2
            die "wrk failed or overran ${limit}s against $addr"
        }
}

# check_tally NAME FILE WANT: every answer of the warm-up was 200 with
# verdict WANT ("-": no verdict header).
check_tally() {
    local name="$1" f="$2" want="$3" bad
    bad="$(awk -v w="$want" '$1 == "VERDICT" && !($2 == 200 && $3 == w) { print $2 "/" $3 ":" $4 }' "$f" | tr '\n' ' ')"
    if [[ -n "$bad" ]] || ! grep -q '^VERDICT ' "$f"; then
        cat "$f" >&2
        die "$name: warm-up answers other than 200 $want: ${bad:-none counted}"
    fi
}

# Load runs ------------------------------------------------------------------

declare -A R
run_server() { # SERVER SIZE
    local s="$1" size="$2" path="/obj-$size.bin" addr pids unique=0 want v
    local o0 o1 c0 c1 oc0 oc1 key="$1/$2" node_metrics="" origin_pids
    origin_pids="$(nginx_pids "$ORIGIN_PID")"
    wait_for_idle_cpu
    R[$key/busy]="$BUSY"
    case "$s" in
        origin)
            addr="$ORIGIN_ADDR"
            pids="$origin_pids"
            want="-"
            ;;
        nginx-cache)
            # A fresh cache for each size: the first request is its MISS.
            rm -rf "$WORK/nginx-cache/cache"
            o0="$(origin_requests "$path")"
            start_nginx nginx-cache "$WORK/nginx-cache.conf" "127.0.0.1:$NGX_CACHE_PORT" "$path"
            addr="127.0.0.1:$NGX_CACHE_PORT"
            pids="$(nginx_pids "$PROC_PID")"
            v="$(verdict "$addr" "$path" X-Cache-Status)"
            [[ "$v" == "200 HIT" ]] || die "nginx-cache: second request: '$v', want '200 HIT'"
            want=HIT
            ;;
        outpost-*)
            o0="$(origin_requests "$path")"
            local flags=()
            [[ "$s" != outpost-pass ]] || flags=(--cache false)
            start_proc "$s-$size-node" "$BIN_DIR/edge-node" --config "$WORK/node.toml" "${flags[@]}"
            addr="$PROC_ADDR"
            node_metrics="$PROC_METRICS"
            pids="$PROC_PID"
            wait_200 "$addr" "$path"
            v="$(verdict "$addr" "$path" x-cache)"
            case "$s" in
                outpost-hit)
                    [[ "$v" == "200 HIT" ]] || die "$s: second request: '$v', want '200 HIT'"
                    want=HIT
                    ;;
                outpost-miss)
                    [[ "$v" == "200 HIT" ]] || die "$s: second request: '$v', want '200 HIT'"
                    unique=1
                    want=MISS
                    ;;
                outpost-pass)
                    [[ "$v" == "200 -" ]] || die "$s: with --cache false: '$v', want 200 and no x-cache"
                    want="-"
                    ;;
            esac
            ;;
    esac
    log "$s, $size B: warm-up $WARMUP (verdicts tallied)"
    cache_wrk "$addr" "$path" "$unique" 1 "$WARMUP" "$RAW/$s-$size.warmup.txt"
    check_wrk "$s $size (warm-up)" "$RAW/$s-$size.warmup.txt"
    check_tally "$s $size" "$RAW/$s-$size.warmup.txt" "$want"
    R[$key/warm_req]="$REQUESTS"
    c0="$(cpu_sum $pids)"
    oc0="$(cpu_sum $origin_pids)"
    log "$s, $size B: measuring $DURATION"
    cache_wrk "$addr" "$path" "$unique" 0 "$DURATION" "$RAW/$s-$size.wrk.txt"
    c1="$(cpu_sum $pids)"
    oc1="$(cpu_sum $origin_pids)"
    check_wrk "$s $size" "$RAW/$s-$size.wrk.txt"
    R[$key/rps]="$RPS"
    R[$key/p50]="$P50_MS"
    R[$key/p99]="$P99_MS"
    R[$key/req]="$REQUESTS"
    R[$key/cpu]="$(awk -v a="$c0" -v b="$c1" -v n="$REQUESTS" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }')"
    if [[ "$s" == origin ]]; then
        R[$key/ocpu]="—"
    else
        R[$key/ocpu]="$(awk -v a="$oc0" -v b="$oc1" -v n="$REQUESTS" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }')"
    fi
    R[$key/rss]="—"
    [[ -z "$node_metrics" ]] || R[$key/rss]="$(hwm_mib "$PROC_PID")"
    local total=$((R[$key/warm_req] + REQUESTS))
    # What reached the origin, and what the cache says it did.
    case "$s" in
        nginx-cache | outpost-hit)
            o1="$(origin_requests "$path")"
            R[$key/origin]=$((o1 - o0))
            ((R[$key/origin] == 1)) || die "$s $size: the origin saw $((o1 - o0)) requests for $path, want 1"
            ;;
        outpost-miss | outpost-pass)
            o1="$(origin_requests "$path")"
            R[$key/origin]=$((o1 - o0))
            # wrk does not count requests still in flight when it stops.
            ((R[$key/origin] >= total)) || die "$s $size: the origin saw $((o1 - o0)) requests, wrk got $total answers"
            ;;
        origin) R[$key/origin]="(is the origin)" ;;
    esac
    if [[ -n "$node_metrics" ]]; then
        local hit miss
        hit="$(cache_count "$node_metrics" hit)"
        miss="$(cache_count "$node_metrics" miss)"
        R[$key/verdicts]="hit $hit, miss $miss"
        case "$s" in
            outpost-hit)
                ((miss == 1 && hit >= total + 1)) || die "$s $size: outpost_cache_requests_total hit=$hit miss=$miss; want miss=1, hit>=$((total + 1))"
                ;;
            outpost-miss)
                ((hit == 1 && miss >= total + 1)) || die "$s $size: outpost_cache_requests_total hit=$hit miss=$miss; want hit=1 (the curl check), miss>=$((total + 1))"
                R[$key/verdicts]="hit $hit (the curl check), miss $miss, evicted $(metric "$node_metrics" "outpost_cache_evictions_total{tenant=\"$TENANT\"}"), stored $(awk -v b="$(metric "$node_metrics" "outpost_cache_stored_bytes{tenant=\"$TENANT\"}")" 'BEGIN { printf "%.1f MiB", b / 1048576 }')"
                ;;
            outpost-pass)
                local any
                any="$(cache_lookups "$node_metrics")"
                ((any == 0)) || die "$s $size: $any cache lookups with --cache false"
                R[$key/verdicts]="no cache lookups"
                ;;
        esac
        kill -0 "$PROC_PID" 2>/dev/null || die "$s died during the run"
    else
        R[$key/verdicts]="—"
        [[ "$s" != nginx-cache ]] || R[$key/verdicts]="X-Cache-Status HIT (warm-up tally)"
    fi
    if [[ "$s" != origin ]]; then
        if [[ -n "$node_metrics" ]]; then stop_server "$PROC_PID"; else stop_server "${pids%% *}"; fi
    fi
    log "$s, $size B: ${R[$key/rps]} req/s, p50 ${R[$key/p50]} ms, p99 ${R[$key/p99]} ms; server CPU ${R[$key/cpu]} µs/req; origin requests ${R[$key/origin]}; ${R[$key/verdicts]}"
}

# CPU seconds of these pids together.
cpu_sum() {
    local p sum=0
    for p in "$@"; do sum="$(awk -v a="$sum" -v b="$(cpu_s "$p")" 'BEGIN { printf "%.3f", a + (b == "" ? 0 : b) }')"; done
    echo "$sum"
}

# Purges -------------------------------------------------------------------

# pctl FILE: "p50 p99 max" of a column of numbers (nearest rank).
pctl() {
    sort -g "$1" | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "? ? ?"; exit }
            i50 = int(NR * 0.50 + 0.999999); i99 = int(NR * 0.99 + 0.999999)
            printf "%s %s %s", v[i50], v[i99], v[NR]
        }'
}

run_purges() {
    local size="${SIZES%% *}" path url
    path="/obj-$size.bin"
    url="http://$OUTBOUND$path"
    control_plane cp "$WORK/cp-data"
    CP_ADDR="$PROC_ADDR"
    local token
    token="$(api POST /v1/tenants "$ADMIN_TOKEN" -H 'content-type: application/json' \
        -d "{\"name\":\"$TENANT\",\"domains\":[\"$HOST\"]}" | jq -er .token)" || die "no token for $TENANT"
    api POST /v1/apps "$token" -H 'content-type: application/json' \
        -d "{\"name\":\"web\",\"routes\":[\"$HOST\"],\"allow_outbound\":[\"$OUTBOUND\"]}" >/dev/null
    api PUT /v1/apps/web/env "$token" -H 'content-type: application/json' \
        -d "{\"UPSTREAM\":\"$OUTBOUND\"}" >/dev/null
    api POST /v1/apps/web/deployments "$token" -H 'content-type: application/wasm' \
        --data-binary "@$WASM" >/dev/null
    node_sections >"$WORK/sync-node.toml"
    cp "$WORK/sync-node.toml" "$RAW/sync-node.toml"
    local nodes=() n
    for n in edge-1 edge-2; do
        edge_node_sync "$n" "$CP_ADDR" "$WORK/$n-cache" --config "$WORK/sync-node.toml"
        nodes+=("$PROC_ADDR")
    done
    for n in "${nodes[@]}"; do
        wait_200 "$n" "$path" # the first answer through each node is its MISS
        local v
        v="$(verdict "$n" "$path" x-cache)"
        [[ "$v" == "200 HIT" ]] || die "purge setup: $n$path answers '$v', want '200 HIT'"
    done
    log "purges: both nodes serve $url from their cache (HIT); $PURGES purges by URL (at most ${PURGE_MAX_S}s)"
    wait_for_idle_cpu
    R[purge/busy]="$BUSY"
    : >"$RAW/purges.txt"
    local i answer code wall waited nodes_n applied lagging deadline=$((SECONDS + PURGE_MAX_S)) done_n=0
    for ((i = 1; i <= PURGES; i++)); do
        if ((SECONDS >= deadline)); then
            log "WARNING: purge time cap (${PURGE_MAX_S}s) reached after $done_n purges"
            break
        fi
        answer="$(curl -sS --max-time 30 -X POST -H "Authorization: Bearer $token" \
            -H 'content-type: application/json' -d "{\"by\":\"url\",\"url\":\"$url\"}" \
            -w '\n%{http_code} %{time_total}' "http://$CP_ADDR/v1/cache/purge?wait_ms=10000")" ||
            die "purge $i: curl failed"
        read -r code wall <<<"${answer##*$'\n'}"
        answer="${answer%$'\n'*}"
        [[ "$code" == 200 ]] || die "purge $i: HTTP $code: $answer"
        waited="$(jq -er .waited_ms <<<"$answer")" || die "purge $i: no waited_ms in $answer"
        nodes_n="$(jq -r .rollout.nodes <<<"$answer")"
        applied="$(jq -r .rollout.applied <<<"$answer")"
        lagging="$(jq -c '.rollout.lagging // []' <<<"$answer")"
        [[ "$nodes_n" == 2 && "$applied" == 2 && "$lagging" == "[]" ]] ||
            die "purge $i: not applied on both nodes: $answer"
        for n in "${nodes[@]}"; do
            v="$(verdict "$n" "$path" x-cache)"
            [[ "$v" == "200 MISS" ]] || die "purge $i: $n answers '$v' after the purge, want '200 MISS'"
            v="$(verdict "$n" "$path" x-cache)"
            [[ "$v" == "200 HIT" ]] || die "purge $i: $n answers '$v' after re-warming, want '200 HIT'"
        done
        awk -v w="$wall" -v m="$waited" -v r="$(jq -r .revision <<<"$answer")" \
            'BEGIN { printf "%.3f %s %s\n", w * 1000, m, r }' >>"$RAW/purges.txt"
        done_n=$i
    done
    ((done_n > 0)) || die "no purge was made"
    R[purge/n]="$done_n"
    awk '{ print $1 }' "$RAW/purges.txt" >"$WORK/wall.txt"
    awk '{ print $2 }' "$RAW/purges.txt" >"$WORK/waited.txt"
    R[purge/wall]="$(pctl "$WORK/wall.txt")"
    R[purge/waited]="$(pctl "$WORK/waited.txt")"
    log "purges: $done_n, client wall ms p50/p99/max ${R[purge/wall]}; waited_ms ${R[purge/waited]}"
}

# Main ----------------------------------------------------------------------

LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -e "$MARKER" ]]; then
    log "NOTE: $MARKER exists already (another benchmark?); going on, leaving it in place"
else
    echo "loadtests/cache.sh pid $$ since $(date -u +%FT%TZ)" >"$MARKER"
    MARKER_MINE=1
fi
wait_for_quiet_machine

start_nginx origin "$WORK/origin.conf" "$ORIGIN_ADDR" "/obj-${SIZES%% *}.bin"
ORIGIN_PID="$PROC_PID"

if [[ -z "${CACHE_SKIP_LOAD:-}" ]]; then
    for size in $SIZES; do
        for s in $SERVERS; do run_server "$s" "$size"; done
    done
fi
if [[ -z "${CACHE_SKIP_PURGE:-}" ]]; then run_purges; fi

# Report ----------------------------------------------------------------------

label() {
    case "$1" in
        origin) echo "origin nginx, direct (ceiling)" ;;
        nginx-cache) echo "nginx proxy_cache, HIT" ;;
        outpost-hit) echo "Outpost, cache HIT" ;;
        outpost-miss) echo "Outpost, cache MISS (new URL each request)" ;;
        outpost-pass) echo "Outpost, --cache false (pass-through)" ;;
    esac
}
ratio() { # A B: A's req/s over B's, when both ran
    if [[ -n "${R[$1/rps]:-}" && -n "${R[$2/rps]:-}" ]]; then
        awk -v a="${R[$1/rps]}" -v b="${R[$2/rps]}" 'BEGIN { printf "%.2f×", a / b }'
    else
        echo "n/a"
    fi
}
cpu_ratio() { # A B: A's server CPU per request over B's
    if [[ -n "${R[$1/cpu]:-}" && -n "${R[$2/cpu]:-}" ]]; then
        awk -v a="${R[$1/cpu]}" -v b="${R[$2/cpu]}" 'BEGIN { printf "%.1f×", a / b }'
    else
        echo "n/a"
    fi
}
{
    echo "## Edge cache: proxy worker hit / miss / pass-through vs nginx proxy_cache ($STAMP)"
    echo
    echo "- load: \`wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -s loadtests/cache.lua\` after a $WARMUP warm-up (verdicts tallied there), Host: $HOST, one server at a time"
    echo "- origin: $NGINX_VERSION on 127.0.0.1, static random files, \`Cache-Control: public, max-age=3600\`, ETag, Last-Modified; worker \`guests/c/proxy/proxy.wasm\` (tenant $TENANT)"
    echo "- edge-node and control-plane: release, $BUILT_FROM; RUST_BACKTRACE: \`$BACKTRACE\`; wrk $WRK_VERSION"
    echo "- machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r); load average at start $LOAD_AT_START"
    if [[ -z "${CACHE_SKIP_LOAD:-}" ]]; then
        for size in $SIZES; do
            echo
            echo "### $size-byte object"
            echo
            echo "| server | req/s | p50 ms | p99 ms | server CPU µs/req | origin CPU µs/req | origin requests | cache says | busy cores before |"
            echo "|---|---:|---:|---:|---:|---:|---:|---|---:|"
            for s in $SERVERS; do
                k="$s/$size"
                printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(label "$s")" \
                    "$(printf '%.0f' "${R[$k/rps]}")" "${R[$k/p50]}" "${R[$k/p99]}" "${R[$k/cpu]}" \
                    "${R[$k/ocpu]}" "${R[$k/origin]}" "${R[$k/verdicts]}" "${R[$k/busy]}"
            done
            echo
            echo "Ratios (req/s, same run): Outpost hit / nginx proxy_cache hit **$(ratio outpost-hit/"$size" nginx-cache/"$size")**, Outpost hit / Outpost miss **$(ratio outpost-hit/"$size" outpost-miss/"$size")**, Outpost hit / pass-through **$(ratio outpost-hit/"$size" outpost-pass/"$size")**, nginx proxy_cache / origin direct $(ratio nginx-cache/"$size" origin/"$size"). Server CPU per request, Outpost hit / nginx proxy_cache hit: $(cpu_ratio outpost-hit/"$size" nginx-cache/"$size")."
        done
    fi
    if [[ -z "${CACHE_SKIP_PURGE:-}" ]]; then
        read -r w50 w99 wmax <<<"${R[purge/wall]}"
        read -r m50 m99 mmax <<<"${R[purge/waited]}"
        echo
        echo "### Purge by URL across 2 nodes (control plane + 2 sync-mode edge nodes, sled, loopback)"
        echo
        echo "${R[purge/n]} purges, one after another; after each, both nodes answered MISS for the URL, then HIT (busy cores before: ${R[purge/busy]})."
        echo
        echo "| measure | p50 ms | p99 ms | max ms |"
        echo "|---|---:|---:|---:|"
        echo "| API call, wall time at the client (curl time_total) | $w50 | $w99 | $wmax |"
        echo "| \`waited_ms\` in the answer (purge recorded → both nodes applied it) | $m50 | $m99 | $mmax |"
    fi
} >"$WORK/table.md"

cp "$WORK/table.md" "$RESULTS_DIR/cache-latest.md"
cp "$WORK/table.md" "$RESULTS_DIR/cache-$STAMP.md"
echo
cat "$WORK/table.md"
echo
log "written to loadtests/results/cache-latest.md and cache-$STAMP.md"
