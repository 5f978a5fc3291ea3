#!/usr/bin/env bash
# HTTPS throughput of one edge node against the same worker over plain HTTP
# on the same node, in the same run (one node process, one scenario at a
# time, loopback only, every load run bounded by `timeout`).
#
#   bash loadtests/https.sh                    # builds edge-node (release) first
#   BENCH_SKIP_BUILD=1 bash loadtests/https.sh
#   HTTPS_SCENARIOS="http https close-full" BENCH_SKIP_BUILD=1 bash loadtests/https.sh
#
# Scenarios (HTTPS_SCENARIOS, in this order by default):
#   http           wrk keep-alive, plain HTTP: the reference row
#   https          wrk keep-alive, HTTPS, HTTP/1.1
#   h2             h2load keep-alive, HTTPS, HTTP/2, one stream per connection
#                  (-m 1; apt package nghttp2-client, installed if missing;
#                  skipped, with the reason, if it cannot be)
#   close-full     wrk -H 'Connection: close': a new TCP connection and a FULL
#                  TLS handshake per request (wrk_tls_shim.c: no resumption,
#                  no busy-polling during the handshake)
#   close-resumed  the same, but the TLS 1.3 session is resumed (PSK) as wrk
#                  does by default (shim: no busy-polling only)
#   close-stock    the same with wrk as shipped (resumes, and busy-polls while
#                  it waits for the server's handshake flight); the shim
#                  only counts
# Each close-* row is checked against the node's outpost_tls_handshakes_total:
# at least one new handshake per completed request, or the script fails.
#
# Every wrk run: -t$BENCH_THREADS -c$BENCH_CONNECTIONS -d$BENCH_DURATION
# --latency after a $BENCH_WARMUP warm-up, Host: hello.test, URL host
# hello.test (so SNI is hello.test) with the address forced to 127.0.0.1 by a
# Lua wrk.resolve override (no /etc/hosts). h2load gets the same SNI with
# --connect-to. The default certificate (--tls-cert/--tls-key) is a leaf for
# hello.test from a throwaway ECDSA P-256 CA made here with openssl.
#
# Before each row it waits for the other processes to keep at most
# BENCH_MAX_BUSY (here 0.2) cores busy; a row they disturbed anyway (more than
# HTTPS_MAX_OTHER, 0.15, cores during it) is measured again, at most
# HTTPS_ATTEMPTS (3) times.
#
# Writes loadtests/results/https-latest.md (+ a timestamped copy, raw tool
# output and the node's stderr under results/https-raw/). Knobs: HTTPS_SCENARIOS,
# HTTPS_H2_REQUESTS (default: the https row's req/s × BENCH_DURATION),
# BENCH_DURATION, BENCH_WARMUP, BENCH_THREADS, BENCH_CONNECTIONS,
# BENCH_SKIP_BUILD, BENCH_MAX_LOAD, BENCH_MAX_BUSY, BENCH_LOAD_WAIT_S,
# HTTPS_MAX_OTHER, HTTPS_ATTEMPTS.
set -euo pipefail

# Stricter than bench.sh's idle gate: the load generator shares the 2 cores,
# so a compile next door moves these rows a lot.
: "${BENCH_MAX_BUSY:=0.2}"
# shellcheck source=loadtests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

SCENARIOS="${HTTPS_SCENARIOS:-http https h2 close-full close-resumed close-stock}"
H2_REQUESTS="${HTTPS_H2_REQUESTS:-}"
# A row during which other processes kept more than MAX_OTHER cores busy is
# measured again, up to ATTEMPTS times in all (the table says which try it is).
MAX_OTHER="${HTTPS_MAX_OTHER:-0.15}"
ATTEMPTS="${HTTPS_ATTEMPTS:-3}"
RAW_DIR="$RESULTS_DIR/https-raw"
CLK_TCK="$(getconf CLK_TCK)"
DUR_S="$(duration_s "$DURATION")"
# A wrk or h2load run may take at most this long (wrk stops by itself).
LIMIT_S="$(awk -v d="$DUR_S" 'BEGIN { printf "%d", d * 3 + 30 }')"

for tool in curl openssl; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
ensure_wrk

# h2load: install it (apt) only if missing; skip the h2 row if that fails.
H2_SKIP=""
if [[ " $SCENARIOS " == *" h2 "* ]] && ! command -v h2load >/dev/null 2>&1; then
    log "installing nghttp2-client (apt) for h2load"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null; }; then
        log "WARNING: could not install nghttp2-client"
    fi
fi
if [[ " $SCENARIOS " == *" h2 "* ]] && ! command -v h2load >/dev/null 2>&1; then
    H2_SKIP="h2load not available (apt-get install nghttp2-client failed)"
fi

# The wrk shim (counts handshakes; optionally no resumption / no busy-poll).
SHIM=""
SHIM_SKIP=""
if command -v cc >/dev/null 2>&1; then
    SHIM="$WORK/wrk_tls_shim.so"
    cc -O2 -Wall -Wextra -shared -fPIC -o "$SHIM" "$ROOT/loadtests/wrk_tls_shim.c" ||
        die "could not build loadtests/wrk_tls_shim.c"
else
    SHIM_SKIP="no C compiler to build wrk_tls_shim.c"
fi

[[ -n "${BENCH_SKIP_BUILD:-}" ]] || build_edge_node
[[ -x "$ROOT/target/release/edge-node" ]] || die "no target/release/edge-node (build it or unset BENCH_SKIP_BUILD)"
mkdir -p "$RESULTS_DIR" "$RAW_DIR"
# What was built (other people edit the tree meanwhile).
commit="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
dirty="$(cd "$ROOT" && git status --porcelain --untracked-files=no -- '*.rs' '*Cargo.toml' Cargo.lock 2>/dev/null | awk '{ printf "%s%s", (NR > 1 ? ", " : ""), $2 }')"
[[ -z "$dirty" ]] || dirty=" + uncommitted changes in $dirty"
[[ -z "${BENCH_SKIP_BUILD:-}" ]] || dirty="$dirty (not rebuilt: BENCH_SKIP_BUILD; the binary may be older than this tree)"
built="$(date -u -r "$ROOT/target/release/edge-node" '+%Y-%m-%d %H:%M UTC')"
BACKTRACE="${RUST_BACKTRACE-<unset>}"
log "RUST_BACKTRACE=$BACKTRACE"

# Certificates: a throwaway CA and a leaf for $HOST_HEADER, ECDSA P-256.
log "issuing a leaf for $HOST_HEADER from a throwaway CA"
(
    cd "$WORK"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=outpost-bench-ca -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=$HOST_HEADER" -keyout leaf.key -out leaf.csr 2>/dev/null
    openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile <(printf 'subjectAltName=DNS:%s' "$HOST_HEADER") -out leaf.pem 2>/dev/null
) || die "openssl could not issue the certificates"

# wrk resolves the URL host itself; this keeps hello.test in the URL (hence in
# SNI) but connects to 127.0.0.1. No request/response hooks: wrk stays on its
# static-request fast path.
LUA="$WORK/loopback.lua"
cat >"$LUA" <<'EOF'
wrk.resolve = function(host, service)
   wrk.addrs = wrk.lookup("127.0.0.1", service)
end
EOF

wait_for_quiet_machine

NODE_CMD=("$ROOT/target/release/edge-node" --http 127.0.0.1:0 --https 127.0.0.1:0
    --metrics 127.0.0.1:0 --tls-cert "$WORK/leaf.pem" --tls-key "$WORK/leaf.key"
    --app "$HOST_HEADER=$WASM")
start_server node 'Listening on http://127\.0\.0\.1:[0-9]+' "${NODE_CMD[@]}"
NODE_PID="$SERVER_PID"
HTTP_PORT="${SERVER_ADDR##*:}"
HTTPS_ADDR="$(grep -oE 'Listening on https://127\.0\.0\.1:[0-9]+' "$WORK/node.out" | grep -oE '127\.0\.0\.1:[0-9]+' || true)"
METRICS_ADDR="$(grep -oE 'Metrics on http://127\.0\.0\.1:[0-9]+' "$WORK/node.out" | grep -oE '127\.0\.0\.1:[0-9]+' || true)"
[[ -n "$HTTPS_ADDR" && -n "$METRICS_ADDR" ]] || {
    cat "$WORK/node.out" "$WORK/node.err" >&2
    die "the node printed no https or metrics address"
}
HTTPS_PORT="${HTTPS_ADDR##*:}"
log "node: http :$HTTP_PORT, https :$HTTPS_PORT, metrics $METRICS_ADDR"

# HTTPS must work, with our certificate, before anything is measured.
for v in --http1.1 --http2; do
    got="$(curl -sS --max-time 10 --cacert "$WORK/ca.pem" \
        --resolve "$HOST_HEADER:$HTTPS_PORT:127.0.0.1" -o /dev/null \
        -w '%{http_code} %{http_version}' "$v" "https://$HOST_HEADER:$HTTPS_PORT/")" ||
        die "curl $v over HTTPS failed"
    [[ "$got" == 200\ * ]] || die "curl $v over HTTPS answered '$got'"
done
TLS_PARAMS="$(timeout 10 openssl s_client -connect "$HTTPS_ADDR" -servername "$HOST_HEADER" \
    -CAfile "$WORK/ca.pem" -brief </dev/null 2>&1 |
    awk -F': ' '/^(Protocol version|Ciphersuite|Server Temp Key|Verification):/ { printf "%s%s: %s", sep, $1, $2; sep = "; " }')"
[[ "$TLS_PARAMS" == *"Verification: OK"* ]] || die "openssl s_client: '$TLS_PARAMS'"
log "TLS (OpenSSL defaults, as wrk): $TLS_PARAMS"

# --- measurement helpers -----------------------------------------------------

# From the node's metrics: "OK OTHER SUM" — outpost_tls_handshakes_total
# summed over versions (OTHER = error + timeout) and the seconds the ok ones
# took (outpost_tls_handshake_duration_seconds_sum: accept to finished).
tls_counts() {
    curl -sS --max-time 5 "http://$METRICS_ADDR/metrics" |
        awk '/^outpost_tls_handshakes_total\{/ {
                if ($1 ~ /result="ok"/) ok += $2; else bad += $2
             }
             /^outpost_tls_handshake_duration_seconds_sum / { sum = $2 }
             END { printf "%d %d %.6f\n", ok, bad, sum }'
}
node_ticks() { awk '{ print $14 + $15 }' "/proc/$NODE_PID/stat"; }
# CPU seconds (user + system) of this shell's reaped children so far: the
# load generator's share, taken around a run (bash's `times`, second line).
# `times` must run in this shell (not in $(…)), hence the file; sets GEN_CPU_S.
children_cpu() {
    times >"$WORK/times"
    GEN_CPU_S="$(awk 'NR == 2 {
        s = 0
        for (i = 1; i <= 2; i++) { split($i, p, /[ms]/); s += p[1] * 60 + p[2] }
        printf "%.3f\n", s
    }' "$WORK/times")"
}
cpu_line() { head -1 /proc/stat; }
# busy_between LINE_A LINE_B: cores busy machine-wide between two /proc/stat lines.
busy_between() {
    awk -v a="$1" -v b="$2" -v n="$(nproc)" 'BEGIN {
        split(a, x); split(b, y); tot = 0
        for (i = 2; i <= 9; i++) tot += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.2f", (tot > 0 ? n * (tot - idle) / tot : 0)
    }'
}

# set_run NAME PHASE DURATION: RUN = the command line of one load run.
set_run() {
    local s="$1" phase="$2" dur="$3"
    local wrk=(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$dur" --latency -s "$LUA" -H "Host: $HOST_HEADER")
    local url="https://$HOST_HEADER:$HTTPS_PORT/"
    local stats="$WORK/$s.$phase.shim"
    case "$s" in
        http) RUN=("${wrk[@]}" "http://$HOST_HEADER:$HTTP_PORT/") ;;
        https) RUN=("${wrk[@]}" "$url") ;;
        close-full)
            RUN=(env LD_PRELOAD="$SHIM" WRK_TLS_SHIM_STATS="$stats" WRK_TLS_SHIM_NO_RESUME=1
                WRK_TLS_SHIM_NO_SPIN=1 "${wrk[@]}" -H 'Connection: close' "$url")
            ;;
        close-resumed)
            RUN=(env LD_PRELOAD="$SHIM" WRK_TLS_SHIM_STATS="$stats" WRK_TLS_SHIM_NO_SPIN=1
                "${wrk[@]}" -H 'Connection: close' "$url")
            ;;
        close-stock)
            RUN=(env LD_PRELOAD="$SHIM" WRK_TLS_SHIM_STATS="$stats" "${wrk[@]}" -H 'Connection: close' "$url")
            ;;
        h2)
            local n
            n="$(awk -v r="$H2_RATE" -v d="$(duration_s "$dur")" 'BEGIN { printf "%d", r * d }')"
            ((n >= CONNECTIONS)) || n="$CONNECTIONS"
            RUN=(h2load -n "$n" -c "$CONNECTIONS" -m 1 -t "$THREADS" --connect-to="$HTTPS_ADDR"
                -H "Host: $HOST_HEADER" --log-file="$WORK/$s.$phase.log" "$url")
            ;;
        *) die "unknown scenario '$s' (want http https h2 close-full close-resumed close-stock)" ;;
    esac
}

# run_load NAME PHASE DURATION OUTFILE: one bounded run.
run_load() {
    local s="$1" phase="$2" dur="$3" out="$4"
    set_run "$s" "$phase" "$dur"
    timeout --signal=INT --kill-after=5 "$LIMIT_S" "${RUN[@]}" >"$out" 2>&1 || {
        cat "$out" >&2
        die "$s ($phase): ${RUN[*]} failed or overran ${LIMIT_S}s"
    }
}

# check_wrk_row NAME FILE ALLOW_READ_ERRORS: like lib.sh's check_wrk, but a
# close-* row may show "read" socket errors (a connection the server closed
# under wrk; at most 1% of the requests), never connect/write/timeout ones.
# Sets RPS P50_MS P99_MS REQUESTS ERRORS.
check_wrk_row() {
    local name="$1" f="$2" allow_read="$3"
    local non2xx sock c r w t
    non2xx="$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$f")"
    sock="$(grep -E '^ *Socket errors:' "$f" || true)"
    REQUESTS="$(awk '/requests in/ { print $1 }' "$f")"
    RPS="$(awk '/^Requests\/sec:/ { print $2 }' "$f")"
    P50_MS="$(to_ms "$(awk '$1 == "50%" { print $2 }' "$f")")"
    P99_MS="$(to_ms "$(awk '$1 == "99%" { print $2 }' "$f")")"
    ERRORS=0
    if [[ -n "$sock" ]]; then
        read -r c r w t < <(sed -E 's/.*connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+).*/\1 \2 \3 \4/' <<<"$sock")
        ERRORS="read $r"
        if [[ "$allow_read" != 1 || "$c$w$t" != 000 ]] ||
            awk -v r="$r" -v n="${REQUESTS:-0}" 'BEGIN { exit !(r > n / 100) }'; then
            cat "$f" >&2
            die "$name: socket errors under load: $sock"
        fi
    fi
    if [[ -n "$non2xx" && "$non2xx" != "0" ]] || [[ -z "$RPS" || -z "$REQUESTS" || "$REQUESTS" == "0" ]]; then
        cat "$f" >&2
        die "$name: errors under load (non-2xx/3xx: ${non2xx:-0}; requests: ${REQUESTS:-?})"
    fi
}

# check_h2_row NAME OUT LOG: every request must have succeeded with a 2xx over
# h2. Sets RPS P50_MS P99_MS REQUESTS ERRORS RUNTIME_S H2_TLS.
check_h2_row() {
    local name="$1" f="$2" logf="$3" total ok twoxx
    read -r total ok < <(awk '/^requests:/ { gsub(",", ""); print $2, $8 }' "$f")
    twoxx="$(awk '/^status codes:/ { print $3 }' "$f")"
    RUNTIME_S="$(awk '/^finished in/ {
        v = $3; sub(",", "", v)
        if (v ~ /ms$/) { sub("ms", "", v); v /= 1000 } else if (v ~ /us$/) { sub("us", "", v); v /= 1e6 } else sub("s", "", v)
        print v }' "$f")"
    RPS="$(awk '/^finished in/ { print $4 }' "$f")"
    H2_TLS="$(awk -F': ' '/^(TLS Protocol|Cipher|Server Temp Key|Application protocol):/ { printf "%s%s", sep, $2; sep = ", " }' "$f")"
    if [[ -z "$total" || "$total" == 0 || "$ok" != "$total" || "$twoxx" != "$total" ]] ||
        ! grep -q '^Application protocol: h2$' "$f"; then
        cat "$f" >&2
        die "$name: h2load: $total requests, $ok succeeded, ${twoxx:-?} 2xx (want all, over h2)"
    fi
    REQUESTS="$total"
    ERRORS=0
    # Third column of the log: µs from the request's start to the end of its response.
    read -r P50_MS P99_MS < <(cut -f3 "$logf" | sort -n | awk '{ v[NR] = $1 } END {
        i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
        i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
        printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000 }')
}

tries_note() {
    local t="${R_TRIES[$1]:-1}"
    if ((t > 1)); then printf ' (try %s)' "$t"; fi
    if awk -v o="${R_OTHER[$1]}" -v m="$MAX_OTHER" 'BEGIN { exit !(o > m) }'; then printf ' **disturbed**'; fi
    return 0
}

label() {
    case "$1" in
        http) echo "plain HTTP/1.1 keep-alive (wrk)" ;;
        https) echo "HTTPS HTTP/1.1 keep-alive (wrk)" ;;
        h2) echo "HTTPS HTTP/2 keep-alive (h2load -m 1)" ;;
        close-full) echo "HTTPS new connection + full handshake per request (wrk + shim)" ;;
        close-resumed) echo "HTTPS new connection + resumed TLS 1.3 handshake per request (wrk + shim)" ;;
        close-stock) echo "HTTPS new connection per request, stock wrk (resumes, busy-polls)" ;;
    esac
}

# --- the scenarios -----------------------------------------------------------

declare -A R_TRIES R_GEN R_HSMS R_RPS R_P50 R_P99 R_REQ R_ERR R_HS R_HSERR R_CPU R_CORES R_OTHER R_NOTE R_HSPS R_BUSY
RAN=()
H2_RATE="${H2_REQUESTS:+$(awk -v n="$H2_REQUESTS" -v d="$DUR_S" 'BEGIN { print n / d }')}"

# measure_row NAME: idle wait, warm-up, the measured run and every check;
# fills the R_* entries of NAME.
measure_row() {
    local s="$1"
    wait_for_idle_cpu
    R_BUSY[$s]="$BUSY"
    if awk -v b="$BUSY" -v m="$MAX_BUSY" 'BEGIN { exit !(b > m) }'; then
        R_BUSY[$s]="**$BUSY** (gave up waiting)"
    fi
    log "$s: warming up ($WARMUP; other processes: $BUSY cores busy)"
    run_load "$s" warmup "$WARMUP" "$WORK/$s.warmup.txt"
    read -r hs0 hsbad0 hsdur0 < <(tls_counts)
    t0="$(node_ticks)"
    children_cpu
    g0="$GEN_CPU_S"
    c0="$(cpu_line)"
    log "$s: measuring $DURATION"
    run_load "$s" run "$DURATION" "$WORK/$s.txt"
    c1="$(cpu_line)"
    children_cpu
    g1="$GEN_CPU_S"
    t1="$(node_ticks)"
    read -r hs1 hsbad1 hsdur1 < <(tls_counts)
    kill -0 "$NODE_PID" 2>/dev/null || die "the node died during $s"
    cp "$WORK/$s.txt" "$RAW_DIR/$s.txt"

    allow_read=0
    [[ "$s" == close-* ]] && allow_read=1
    if [[ "$s" == h2 ]]; then
        check_h2_row "$s" "$WORK/$s.txt" "$WORK/$s.run.log"
        R_NOTE[$s]="$H2_TLS; -n $REQUESTS"
    else
        check_wrk_row "$s" "$WORK/$s.txt" "$allow_read"
        RUNTIME_S="$(awk -v n="$REQUESTS" -v r="$RPS" 'BEGIN { printf "%.3f", n / r }')"
    fi
    hs=$((hs1 - hs0))
    hsbad=$((hsbad1 - hsbad0))
    ticks=$((t1 - t0))
    R_RPS[$s]="$RPS"
    R_P50[$s]="$P50_MS"
    R_P99[$s]="$P99_MS"
    R_REQ[$s]="$REQUESTS"
    R_ERR[$s]="$ERRORS"
    R_HS[$s]="$hs"
    R_HSERR[$s]="$hsbad"
    R_CPU[$s]="$(awk -v t="$ticks" -v k="$CLK_TCK" -v n="$REQUESTS" 'BEGIN { printf "%.1f", t / k * 1e6 / n }')"
    R_CORES[$s]="$(awk -v t="$ticks" -v k="$CLK_TCK" -v d="$RUNTIME_S" 'BEGIN { printf "%.2f", t / k / d }')"
    R_GEN[$s]="$(awk -v a="$g0" -v b="$g1" -v d="$RUNTIME_S" 'BEGIN { printf "%.2f", (b - a) / d }')"
    R_OTHER[$s]="$(awk -v b="$(busy_between "$c0" "$c1")" -v n="${R_CORES[$s]}" -v g="${R_GEN[$s]}" 'BEGIN { o = b - n - g; printf "%.2f", (o < 0 ? 0 : o) }')"

    # The node's handshake counter must show what the row claims.
    if [[ "$s" == http ]]; then
        ((hs == 0)) || die "$s: $hs TLS handshakes during a plain-HTTP run"
    elif [[ "$s" == close-* ]]; then
        # One new handshake per completed request, plus at most one per
        # connection wrk had open when it stopped and one per read error.
        rerr="${ERRORS#read }"
        max=$((REQUESTS + 2 * CONNECTIONS + rerr))
        ((hs >= REQUESTS && hs <= max)) ||
            die "$s: $hs TLS handshakes for $REQUESTS requests (want $REQUESTS..$max): wrk did not reconnect for every request"
        ((hsbad <= CONNECTIONS)) ||
            die "$s: $hsbad failed TLS handshakes on the node (want at most $CONNECTIONS: the ones wrk abandons when it stops)"
        R_HSPS[$s]="$(awk -v h="$hs" -v d="$RUNTIME_S" 'BEGIN { printf "%.0f", h / d }')"
        R_HSMS[$s]="$(awk -v a="$hsdur0" -v b="$hsdur1" -v h="$hs" 'BEGIN { printf "%.2f", (h > 0 ? (b - a) * 1000 / h : 0) }')"
        [[ -s "$WORK/$s.run.shim" ]] || die "$s: wrk wrote no shim counts ($WORK/$s.run.shim)"
        read -r full resumed calls < <(awk '{ v[$1] = $2 } END { print v["full"], v["resumed"], v["connect_calls"] }' "$WORK/$s.run.shim")
        R_NOTE[$s]="wrk handshakes: $full full, $resumed resumed; $(awk -v c="$calls" -v h="$((full + resumed))" 'BEGIN { printf "%.1f", (h > 0 ? c / h : 0) }') SSL_connect calls per handshake"
        if [[ "$s" == close-full && "$resumed" != 0 ]]; then
            die "$s: wrk resumed $resumed sessions although the shim forbids it"
        fi
        if [[ "$s" == close-resumed ]] && awk -v r="$resumed" -v n="$((full + resumed))" 'BEGIN { exit !(r < 0.9 * n) }'; then
            log "WARNING: $s: only $resumed of $((full + resumed)) handshakes were resumed"
        fi
    else
        ((hsbad == 0)) || die "$s: $hsbad failed TLS handshakes on the node during a keep-alive run"
    fi
    log "$s: $RPS req/s, p50 $P50_MS ms, p99 $P99_MS ms; node ${R_CORES[$s]} cores, ${R_CPU[$s]} µs CPU/req; load generator ${R_GEN[$s]} cores, others ${R_OTHER[$s]}; TLS handshakes $hs ok, $hsbad failed"
}

for s in $SCENARIOS; do
    case "$s" in
        close-*) if [[ -n "$SHIM_SKIP" ]]; then
            R_NOTE[$s]="skipped: $SHIM_SKIP"
            RAN+=("$s")
            log "$s: skipped ($SHIM_SKIP)"
            continue
        fi ;;
        h2) if [[ -n "$H2_SKIP" ]]; then
            R_NOTE[$s]="skipped: $H2_SKIP"
            RAN+=("$s")
            log "$s: skipped ($H2_SKIP)"
            continue
        fi
            # N for h2load -n: as many requests as the HTTP/1.1 HTTPS row
            # served in BENCH_DURATION (~the same run length), else 20 000/s.
            [[ -n "$H2_RATE" ]] || H2_RATE="${R_RPS[https]:-20000}" ;;
    esac
    attempt=1
    while :; do
        measure_row "$s"
        if ((attempt < ATTEMPTS)) &&
            awk -v o="${R_OTHER[$s]}" -v m="$MAX_OTHER" 'BEGIN { exit !(o > m) }'; then
            attempt=$((attempt + 1))
            log "$s: disturbed (${R_OTHER[$s]} cores of other work during the run > $MAX_OTHER): measuring again ($attempt/$ATTEMPTS)"
            continue
        fi
        break
    done
    R_TRIES[$s]="$attempt"
    RAN+=("$s")
done

kill -0 "$NODE_PID" 2>/dev/null || die "the node died"
RSS="$(peak_rss_mib "$NODE_PID")"
stop_server "$NODE_PID"
cp "$WORK/node.err" "$RAW_DIR/node.err"
# tracing colours its level; strip the escapes before counting.
NODE_WARN="$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/node.err" | grep -cE '^[^ ]+ +(WARN|ERROR) ' || true)"

# --- the table ----------------------------------------------------------------

base="${R_RPS[http]:-}"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
{
    echo "## HTTPS vs plain HTTP on one edge node — C hello ($stamp)"
    echo
    echo "- RUST_BACKTRACE: \`$BACKTRACE\`; commit $commit$dirty; \`target/release/edge-node\` built $built"
    echo "- machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r); load generator on the same cores"
    echo "- wrk: \`wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -H 'Host: $HOST_HEADER'\` after a $WARMUP warm-up, URL host $HOST_HEADER (SNI $HOST_HEADER) resolved to 127.0.0.1 by a Lua \`wrk.resolve\`"
    echo "- TLS as wrk negotiates it (OpenSSL $(openssl version | awk '{ print $2 }') defaults, checked with s_client): $TLS_PARAMS; default certificate: ECDSA P-256 leaf for $HOST_HEADER from a throwaway CA"
    echo "- node peak RSS (VmHWM) after all rows: $RSS MiB; WARN/ERROR lines in the node's stderr: $NODE_WARN"
    echo
    echo "| scenario | req/s | p50 (ms) | p99 (ms) | req/s vs plain HTTP | node CPU µs/req | node cores | load-gen cores | other cores before / during | TLS handshakes ok / failed (node) | client errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for s in "${RAN[@]}"; do
        if [[ -z "${R_RPS[$s]:-}" ]]; then
            printf '| %s | — | — | — | — | — | — | — | — | — | %s |\n' "$(label "$s")" "${R_NOTE[$s]}"
            continue
        fi
        ratio="n/a"
        [[ -z "$base" ]] || ratio="$(awk -v a="${R_RPS[$s]}" -v b="$base" 'BEGIN { printf "%.2f×", a / b }')"
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s | %s |\n' \
            "$(label "$s")" "$(printf '%.0f' "${R_RPS[$s]}")" "${R_P50[$s]}" "${R_P99[$s]}" "$ratio" \
            "${R_CPU[$s]}" "${R_CORES[$s]}" "${R_GEN[$s]}" "${R_BUSY[$s]}" "${R_OTHER[$s]}$(tries_note "$s")" \
            "${R_HS[$s]}" "${R_HSERR[$s]}" "${R_ERR[$s]}"
    done
    echo
    for s in "${RAN[@]}"; do
        if [[ -n "${R_HSPS[$s]:-}" ]]; then
            echo "- $(label "$s"): ${R_HSPS[$s]} TLS handshakes/s on the node (${R_HS[$s]} for ${R_REQ[$s]} requests), mean ${R_HSMS[$s]} ms from accept to handshake done (node); ${R_NOTE[$s]}"
        elif [[ "$s" == h2 && -n "${R_NOTE[$s]:-}" ]]; then
            echo "- $(label "$s"): ${R_NOTE[$s]}"
        fi
    done
    echo
    echo "p50/p99: wrk's latency runs from the first byte of the request to the end of the response, so it leaves out connect and TLS handshake in the close rows (h2load's per-request time likewise). node and load-gen cores: CPU time of the node process and of wrk/h2load over the measured run. \"other cores\": what other processes kept busy in the 3 s idle check just before the row, and during it (machine-wide busy cores minus node and load generator); a row with more than $MAX_OTHER during is measured again (up to $ATTEMPTS tries; \"try N\" says which one is shown) and marked disturbed if it stays so."
} >"$WORK/table.md"

cp "$WORK/table.md" "$RESULTS_DIR/https-latest.md"
cp "$WORK/table.md" "$RESULTS_DIR/https-$stamp-bt${RUST_BACKTRACE-unset}.md"
echo
cat "$WORK/table.md"
echo
((NODE_WARN == 0)) || {
    log "WARN/ERROR lines in the node's stderr:"
    sed 's/\x1b\[[0-9;]*m//g' "$WORK/node.err" | grep -E '^[^ ]+ +(WARN|ERROR) ' | head -20 >&2
}
log "written to loadtests/results/https-latest.md (raw output in results/https-raw/)"
