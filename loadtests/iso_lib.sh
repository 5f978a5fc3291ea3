# Shared helpers for the isolation-under-load scripts (noisy.sh, many.sh,
# soak.sh). Source it after lib.sh; do not run it.
#
# Everything talks only to 127.0.0.1 with kernel-picked ports; every wait
# is bounded; processes started here go into CHILDREN, which lib.sh's
# cleanup (the EXIT trap) stops.

# shellcheck shell=bash
# Globals set here (and by parse_wrk) are read by the scripts that source it.
# shellcheck disable=SC2034

BIN_DIR="${ISO_BIN_DIR:-$ROOT/target/release}"
C_HELLO="$ROOT/guests/c/hello/hello.wasm"
FIXTURES_DIR="$RESULTS_DIR/fixtures"
BACKTRACE="${RUST_BACKTRACE-<unset>}"
ISO_TIMEOUT_S="${ISO_TIMEOUT_S:-120}"

# Fresh random tokens (>= 16 characters), handed to the children through
# the environment, never on a command line.
rand_hex() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }
ADMIN_TOKEN="admin-$(rand_hex)"
NODE_TOKEN="node-$(rand_hex)"

# Milliseconds between two EPOCHREALTIME values.
ms_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }

build_binaries() {
    if [[ -n "${ISO_SKIP_BUILD:-}" ]]; then
        log "ISO_SKIP_BUILD set: using the binaries in $BIN_DIR as they are"
    else
        log "building edge-node, control-plane and outpost (release)"
        (cd "$ROOT" && cargo build --release -j2 -p outpost-edge-node -p outpost-control-plane -p outpost-cli) ||
            die "cargo build failed"
    fi
    local b
    for b in edge-node control-plane outpost; do
        [[ -x "$BIN_DIR/$b" ]] || die "$BIN_DIR/$b was not built"
    done
}

# Writes the WAT fixtures (hello, infinite_loop, memory_bomb, slow, trap,
# echo) to results/fixtures/ with the throwaway loadtests/fixture-dump
# program (not a workspace member; shares target/). $1: the slow fixture's
# sleep in ms.
dump_fixtures() {
    local slow_ms="${1:-2000}"
    log "building and running loadtests/fixture-dump (slow = $slow_ms ms)"
    (cd "$ROOT/loadtests/fixture-dump" &&
        CARGO_TARGET_DIR="$ROOT/target" cargo build --release -j2 -q) ||
        die "building loadtests/fixture-dump failed"
    "$ROOT/target/release/outpost-fixture-dump" "$FIXTURES_DIR" "$slow_ms" >"$WORK/fixtures.txt" ||
        die "fixture-dump failed"
}

# write_variants SRC OUTDIR NAME...: for each NAME, OUTDIR/NAME.wasm: the
# component SRC with a custom section `outpost-variant` holding NAME
# appended (custom sections may come anywhere in a component and change
# nothing it does), so each has its own digest and compiled module.
write_variants() {
    local src="$1" out="$2"
    shift 2
    mkdir -p "$out"
    python3 - "$src" "$out" "$@" <<'PY'
import sys

def leb(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)

src, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
base = open(src, "rb").read()
label = b"outpost-variant"
for name in names:
    payload = leb(len(label)) + label + name.encode()
    with open(f"{out}/{name}.wasm", "wb") as f:
        f.write(base + b"\x00" + leb(len(payload)) + payload)
PY
}

# describe_commit: "abc1234" plus a note when the Rust code has local changes.
describe_commit() {
    local commit dirty
    commit="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
    dirty="$(cd "$ROOT" && git status --porcelain -- edge-node control-plane cli proto Cargo.toml Cargo.lock 2>/dev/null | grep -q . &&
        echo ' (working tree has uncommitted Rust changes)' || true)"
    echo "$commit$dirty"
}

# start_proc NAME CMD...: starts CMD (stdout/stderr to $WORK/NAME.{out,err}),
# waits (bounded: ISO_TIMEOUT_S) for its `Listening on http://ADDR/` banner.
# Sets PROC_PID, PROC_ADDR, PROC_METRICS (edge nodes print it) and
# PROC_BANNER_MS (process start -> banner, polled every 10 ms).
start_proc() {
    local name="$1"
    shift
    local out="$WORK/$name.out" err="$WORK/$name.err" t0
    t0="$EPOCHREALTIME"
    (cd "$ROOT" && exec "$@") >"$out" 2>"$err" &
    PROC_PID=$!
    CHILDREN+=("$PROC_PID")
    PROC_ADDR=""
    local deadline=$((SECONDS + ISO_TIMEOUT_S))
    while [[ -z "$PROC_ADDR" ]]; do
        PROC_ADDR="$(grep -oE 'Listening on http://127\.0\.0\.1:[0-9]+' "$out" 2>/dev/null | head -1 | grep -oE '127\.0\.0\.1:[0-9]+' || true)"
        [[ -n "$PROC_ADDR" ]] && break
        if ! kill -0 "$PROC_PID" 2>/dev/null; then
            tail -20 "$out" "$err" >&2
            die "$name exited before it was listening"
        fi
        ((SECONDS < deadline)) || {
            tail -20 "$out" "$err" >&2
            die "$name printed no banner within ${ISO_TIMEOUT_S}s"
        }
        sleep 0.01
    done
    PROC_BANNER_MS="$(ms_between "$t0" "$EPOCHREALTIME")"
    PROC_METRICS=""
    for _ in $(seq 100); do # printed right after the banner (bounded: 1 s)
        PROC_METRICS="$(grep -oE 'Metrics on http://127\.0\.0\.1:[0-9]+' "$out" 2>/dev/null | grep -oE '127\.0\.0\.1:[0-9]+' || true)"
        [[ -n "$PROC_METRICS" ]] && break
        [[ "$name" == *node* ]] || break
        sleep 0.01
    done
    log "$name (pid $PROC_PID) listening on $PROC_ADDR after ${PROC_BANNER_MS} ms${PROC_METRICS:+, metrics on $PROC_METRICS}"
}

# edge_node_sync NAME CP_ADDR CACHE_DIR [extra flags...]: a sync-mode node.
edge_node_sync() {
    local name="$1" cp="$2" cache="$3"
    shift 3
    start_proc "$name" env OUTPOST_NODE_TOKEN="$NODE_TOKEN" "$BIN_DIR/edge-node" \
        --control-plane "http://$cp" --cache-dir "$cache" --node-id "$name" \
        --http 127.0.0.1:0 --metrics 127.0.0.1:0 "$@"
}

# control_plane NAME DATA_DIR: a control plane with this run's tokens, and
# quotas with room for the scenarios (thousands of apps per tenant).
control_plane() {
    mkdir -p "$2"
    printf '[quotas]\napps = 100000\nhosts = 100000\n' >"$2.toml"
    start_proc "$1" env OUTPOST_ADMIN_TOKEN="$ADMIN_TOKEN" OUTPOST_NODE_TOKEN="$NODE_TOKEN" \
        "$BIN_DIR/control-plane" --config "$2.toml" --listen 127.0.0.1:0 --data-dir "$2"
}

# api METHOD PATH TOKEN CURL_ARGS...: a control-plane call to $CP_ADDR;
# fails loudly on a non-2xx answer; prints the body.
api() {
    local method="$1" path="$2" token="$3"
    shift 3
    local body code
    body="$(curl -sS --max-time "$ISO_TIMEOUT_S" -X "$method" -H "Authorization: Bearer $token" \
        -w '\n%{http_code}' "$@" "http://$CP_ADDR$path")" || die "$method $path: curl failed"
    code="${body##*$'\n'}"
    body="${body%$'\n'*}"
    [[ "$code" == 2?? ]] || die "$method $path: HTTP $code: $body"
    printf '%s' "$body"
}

# metric ADDR NAME: the value of one sample (NAME with its labels exactly as
# exported, e.g. 'outpost_runtime_apps_loaded'), or "" if absent.
metric() {
    curl -s --max-time 5 "http://$1/metrics" 2>/dev/null |
        awk -v n="$2" '$1 == n { v = $2 } END { print v }'
}

# metric_sum ADDR REGEX: the sum of every sample whose name+labels match REGEX.
metric_sum() {
    curl -s --max-time 5 "http://$1/metrics" 2>/dev/null |
        awk -v r="$2" '$1 ~ r { s += $2 } END { printf "%d", s }'
}

# compile_cache ADDR: "hit/miss/invalid" lookups.
compile_cache() {
    local text r vals=()
    text="$(curl -s --max-time 5 "http://$1/metrics" || true)"
    for r in hit miss invalid; do
        vals+=("$(awk -v r="$r" '$1 == "outpost_runtime_compile_cache_lookups_total{result=\"" r "\"}" { v = $2 } END { print (v == "" ? 0 : v) }' <<<"$text")")
    done
    local IFS=/
    echo "${vals[*]}"
}

rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null; }
hwm_mib() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null; }
# The process's proportional set size: each page it maps counted as 1/n
# when n processes or mappings share it, so a file page mapped in many
# pool slots counts once, as the memory it really takes.
pss_mib() { awk '/^Pss:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/smaps_rollup" 2>/dev/null; }

# CPU seconds (user + system) PID has used so far.
cpu_s() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null
}

# cpu_mark PID...: "wall machine_busy_s self_s pids_s": the wall clock, the
# CPU seconds every core has spent busy, this shell's own CPU plus that of
# its reaped children (wrk, curl, ...), and the CPU of the live PIDs (the
# servers under test). other_cores takes two marks and says how many cores
# something else (other sessions on the machine) kept busy in between.
cpu_mark() {
    local hz p sum=0
    hz="$(getconf CLK_TCK)"
    for p in "$@"; do sum="$(awk -v a="$sum" -v b="$(cpu_s "$p")" 'BEGIN { printf "%.2f", a + b }')"; done
    printf '%s %s %s %s\n' "$EPOCHREALTIME" \
        "$(awk -v hz="$hz" '/^cpu / { printf "%.2f", ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat)" \
        "$(awk -v hz="$hz" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13 + $14 + $15) / hz }' "/proc/$$/stat")" \
        "$sum"
}

other_cores() { # MARK0 MARK1
    awk -v a="$1" -v b="$2" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        w = y[1] - x[1]; o = (y[2] - x[2]) - (y[3] - x[3]) - (y[4] - x[4])
        if (o < 0) o = 0
        printf "%.2f", (w > 0 ? o / w : 0)
    }'
}

# du of a directory in MiB (one decimal).
du_mib() { du -sk "$1" 2>/dev/null | awk '{ printf "%.1f", $1 / 1024 }'; }

# wrk scripts: tally.lua counts answers by status and x-outpost-error,
# printed at the end as `STATUS <code> <error|-> <count>` lines (plus
# `TIMEOUTS n`); rotate.lua does the same and also rotates the Host header
# request by request over the lines of the file named by $HOSTS_FILE.
write_wrk_lua() {
    cat >"$WORK/tally.lua" <<'EOF2'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} end
function response(status, headers, body)
  local k = status .. " " .. (headers["x-outpost-error"] or "-")
  counts[k] = (counts[k] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for k, v in pairs(c) do total[k] = (total[k] or 0) + v end
  end
  for k, v in pairs(total) do io.write(string.format("STATUS %s %d\n", k, v)) end
  io.write(string.format("TIMEOUTS %d\n", summary.errors.timeout))
end
EOF2
    sed 's/^function init(args) counts = {} end$//' "$WORK/tally.lua" >"$WORK/rotate.lua"
    cat >>"$WORK/rotate.lua" <<'EOF2'
function init(args)
  counts = {}
  hosts = {}
  for line in io.lines(os.getenv("HOSTS_FILE")) do table.insert(hosts, line) end
  i = math.random(1, #hosts) -- each thread starts somewhere else
end
function request()
  i = i % #hosts + 1
  return wrk.format(nil, nil, { Host = hosts[i] })
end
EOF2
}

# wrk_run OUT DURATION_S CONNECTIONS HOST [extra wrk args...]: one bounded
# wrk run (1 thread) against $NODE_ADDR; extra args may add `-s SCRIPT`.
wrk_run() {
    local out="$1" dur="$2" conns="$3" host="$4"
    shift 4
    timeout --signal=INT --kill-after=5 $((dur + 60)) \
        wrk -t1 -c"$conns" -d"${dur}s" --latency \
        -H "Host: $host" "$@" "http://$NODE_ADDR/" >"$out" 2>&1 || true
}

# reap PID...: waits for these (already ending) children and drops them
# from CHILDREN, so the EXIT trap never signals a reused pid.
reap() {
    local p keep=() q
    for p in "$@"; do wait "$p" 2>/dev/null || true; done
    for q in "${CHILDREN[@]}"; do
        for p in "$@"; do [[ "$q" != "$p" ]] || continue 2; done
        keep+=("$q")
    done
    CHILDREN=("${keep[@]}")
}

# wrk_bg: the same arguments as wrk_run, in the background; sets WRK_PID
# (the `timeout` wrapping wrk, which passes a SIGTERM on to wrk) and adds it
# to CHILDREN. Call it directly, not in a subshell.
wrk_bg() {
    local out="$1" dur="$2" conns="$3" host="$4"
    shift 4
    timeout --signal=INT --kill-after=5 $((dur + 60)) \
        wrk -t1 -c"$conns" -d"${dur}s" --latency \
        -H "Host: $host" "$@" "http://$NODE_ADDR/" >"$out" 2>&1 &
    WRK_PID=$!
    CHILDREN+=("$WRK_PID")
}

# parse_wrk FILE: sets W_RPS W_P50 W_P99 W_REQ W_NON2XX W_SOCK (socket
# errors, text) W_STATUS ("200:n 503/fuel:n …") W_OK (2xx count).
parse_wrk() {
    local f="$1"
    W_REQ="$(awk '/requests in/ { print $1 }' "$f")"
    W_RPS="$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$f")"
    W_P50="$(to_ms "$(awk '$1 == "50%" { print $2 }' "$f")")"
    W_P99="$(to_ms "$(awk '$1 == "99%" { print $2 }' "$f")")"
    W_NON2XX="$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$f")"
    W_NON2XX="${W_NON2XX:-0}"
    W_SOCK="$(sed -nE 's/^ *Socket errors: *//p' "$f")"
    W_STATUS="$(awk '$1 == "STATUS" { printf "%s%s%s:%s", sep, $2, ($3 == "-" ? "" : "/" $3), $4; sep = " " }' "$f")"
    W_OK="$(awk '$1 == "STATUS" && $2 ~ /^2/ { s += $4 } END { printf "%d", s }' "$f")"
}
