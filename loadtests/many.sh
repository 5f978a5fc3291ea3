#!/usr/bin/env bash
# Many tenants: one control plane and one sync-mode edge node with
# MANY_APPS apps (default 1000: MANY_TENANTS = 10 tenants x 100 apps), every
# app deploying the same C hello component.
#
# Usage:  bash loadtests/many.sh
#         MANY_APPS=3000 bash loadtests/many.sh
#         MANY_DISTINCT=1 bash loadtests/many.sh   # every app its own module
#
# 1. Starts a control plane (sled in a temp dir) and an edge node following
#    it (empty --cache-dir), both on 127.0.0.1:0.
# 2. Creates the tenants, then the apps and their deployments through the
#    REST API with curl (MANY_PARALLEL tenants at once, each tenant's apps
#    one after another), while a sampler records the node's
#    outpost_runtime_apps_loaded and outpost_sync_applied_revision every
#    second. Bounded: creation stops after MANY_MAX_S (600 s) and the run
#    reports how far it got.
# 3. Time until the node serves them all: apps_loaded = N and
#    applied_revision = the control plane's revision (GET /v1/rollout).
# 4. Node RSS, cache disk use (du of the cache dir, modules/, compiled/),
#    compile-cache lookups (hit/miss/invalid), size of /metrics.
# 5. First request to every app (never requested since it was loaded) vs
#    the second: one curl process over all N hosts, keep-alive,
#    time_total per request; then MANY_FRESH (5) new apps, each timed from
#    its deploy call to the first 200 and its first request vs later ones.
# 6. Steady load (after the idle-CPU gate each time): wrk -t1 -c16 -d10s
#    with a Lua script rotating the Host header over all N hosts, over 100,
#    over 10, over 1 (the same script: wrk's own Lua cost), and plain wrk on
#    one host; with the node's CPU per request (from /proc). Then the same
#    10 hosts on a node holding only those 10 apps (standalone, --app).
# 7. A second node with an empty cache started against the full control
#    plane: time until it serves all N (the snapshot path).
# 8. The control plane and nodes stopped, the first node restarted from its
#    cache: process start -> banner (the cached snapshot is applied before
#    the banner) and -> its first request answered, apps_loaded, lookups,
#    RSS; then every app's first request on it (each loads its compiled
#    code cold), with RSS, resident code and /metrics after it.
# Writes results/many-N[-distinct]-latest.md (+ timestamped copy); logs in
# results/many-N[-distinct]-raw/.
#
# With MANY_DISTINCT=1 every app deploys its own variant of the component
# (the same code plus a custom section naming the app), so each has its own
# digest and compiled code, as real tenants' apps do; by default they all
# share one module.
#
# Knobs (env): MANY_APPS (1000) MANY_DISTINCT (unset) MANY_MODULE (the C hello) MANY_TENANTS (10) MANY_PARALLEL (4)
# MANY_MAX_S (600) MANY_FRESH (5) MANY_DURATION (10) MANY_CONNS (16)
# MANY_SKIP_FRESH_NODE (unset) MANY_NODE_CONFIG (unset) ISO_SKIP_BUILD ISO_BIN_DIR ISO_TIMEOUT_S
# (120: banners, API calls) BENCH_MAX_BUSY (0.5) BENCH_LOAD_WAIT_S (600).
set -euo pipefail
export LC_ALL=C

# shellcheck source=loadtests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=loadtests/iso_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/iso_lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

log() { printf '[many %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    printf '\n[many] FAILED: %s\n\n' "$*" >&2
    exit 1
}

N="${MANY_APPS:-1000}"
# MANY_MODULE: the component every app deploys (or varies, with
# MANY_DISTINCT=1); default the C hello. E.g. guests/out/js-hello.wasm.
MODULE="${MANY_MODULE:-$C_HELLO}"
MODULE_NAME="${MODULE#"$ROOT"/}"
# MANY_NODE_CONFIG: a TOML file for the nodes (e.g. [pool] settings).
NODE_ARGS=()
[[ -z "${MANY_NODE_CONFIG:-}" ]] || NODE_ARGS=(--config "$MANY_NODE_CONFIG")
TENANTS="${MANY_TENANTS:-10}"
PARALLEL="${MANY_PARALLEL:-4}"
MAX_S="${MANY_MAX_S:-600}"
FRESH="${MANY_FRESH:-5}"
DUR="${MANY_DURATION:-10}"
CONNS="${MANY_CONNS:-16}"
PER=$(((N + TENANTS - 1) / TENANTS))
# A distinct-module run writes its own results beside the shared one's.
KIND="$N${MANY_DISTINCT:+-distinct}"
[[ -z "${MANY_MODULE:-}" ]] || KIND="$KIND-$(basename "$MODULE" .wasm)"
MODULES="all deploying one module"
[[ -z "${MANY_DISTINCT:-}" ]] || MODULES="each with its own module"
RAW="$RESULTS_DIR/many-$KIND-raw"

[[ "${BASH_VERSINFO[0]}" -ge 5 ]] || die "needs bash >= 5 (EPOCHREALTIME)"
for tool in curl wrk jq du od awk sort; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
[[ -f "$MODULE" ]] || die "$MODULE not found"

build_binaries
write_wrk_lua
rm -rf "$RAW"
mkdir -p "$RESULTS_DIR" "$RAW"
log "RUST_BACKTRACE=$BACKTRACE; $N apps = $TENANTS tenants x $PER"
LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg)"
wait_for_quiet_machine
declare -A R

# running PID...: how many of these processes are still alive.
running() {
    local p n=0
    for p in "$@"; do
        if kill -0 "$p" 2>/dev/null; then n=$((n + 1)); fi
    done
    echo "$n"
}

host_of() { echo "app-$2.t$1.many.test"; } # tenant index, app index

# module_of APP: the component APP deploys: the shared one, or with
# MANY_DISTINCT=1 its own variant (written by iso_lib.sh's write_variants).
module_of() {
    if [[ -n "${MANY_DISTINCT:-}" ]]; then echo "$WORK/variants/$1.wasm"; else echo "$MODULE"; fi
}

# percentiles FILE COLUMN: "p50 p90 p99 max" (ms) of a column in seconds.
percentiles() {
    awk -v c="$2" '{ print $c * 1000 }' "$1" | sort -n | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "? ? ? ?"; exit }
            i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
            i90 = int(NR * 0.90); if (i90 < 1) i90 = 1
            i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
            printf "%.2f %.2f %.2f %.2f", v[i50], v[i90], v[i99], v[NR]
        }'
}

cp_revision() { api GET /v1/rollout "${TOKENS[0]}" | jq -r .revision; }

# wait_served METRICS N LABEL: waits (bounded: MAX_S) until the node serves N
# apps at the control plane's current revision; sets SERVED_MS (since
# WAIT_T0) and leaves the sampler's timeline alone.
wait_served() {
    local metrics="$1" want="$2" label="$3" rev loaded applied deadline=$((SECONDS + MAX_S))
    rev="$(cp_revision)"
    while :; do
        loaded="$(metric "$metrics" outpost_runtime_apps_loaded)"
        applied="$(metric "$metrics" outpost_sync_applied_revision)"
        if [[ "$loaded" == "$want" && -n "$applied" && "$applied" -ge "$rev" ]]; then
            SERVED_MS="$(ms_between "$WAIT_T0" "$EPOCHREALTIME")"
            log "$label: serves $loaded apps at revision $applied after ${SERVED_MS} ms"
            return 0
        fi
        if ((SECONDS >= deadline)); then
            SERVED_MS=">${MAX_S}000"
            log "WARNING: $label: only $loaded apps loaded (revision ${applied:-?} of $rev) after ${MAX_S}s"
            return 1
        fi
        sleep 0.2
    done
}

# resident_code METRICS: "BYTES bytes in N modules", the compiled code the
# node at METRICS has loaded.
resident_code() {
    echo "$(metric "$1" outpost_runtime_code_resident_bytes) bytes in $(metric "$1" outpost_runtime_code_resident_modules) modules"
}

# sampler METRICS FILE: every second, "elapsed_s apps_loaded applied_revision rss_mib".
sampler() {
    local metrics="$1" file="$2" pid="$3" t0="$EPOCHREALTIME"
    while kill -0 "$pid" 2>/dev/null; do
        printf '%s %s %s %s\n' "$(ms_between "$t0" "$EPOCHREALTIME")" \
            "$(metric "$metrics" outpost_runtime_apps_loaded)" \
            "$(metric "$metrics" outpost_sync_applied_revision)" "$(rss_mib "$pid")" >>"$file"
        sleep 1
    done
}

# create_tenant_apps T: creates and deploys tenant T's apps one after
# another; one line per app in $WORK/create-T.txt: "i create_ms deploy_ms
# status". Stops at the creation deadline.
create_tenant_apps() {
    local t="$1" token="${TOKENS[$1]}" i code t0 t1 t2 first last
    first=$((t * PER))
    last=$((first + PER))
    ((last <= N)) || last=$N
    for ((i = first; i < last; i++)); do
        if ((EPOCHSECONDS >= CREATE_DEADLINE)); then
            echo "$i - - deadline" >>"$WORK/create-$t.txt"
            break
        fi
        t0="$EPOCHREALTIME"
        code="$(curl -s -o "$WORK/c-$t.json" -w '%{http_code}' --max-time "$ISO_TIMEOUT_S" -X POST \
            -H "Authorization: Bearer $token" -H 'content-type: application/json' \
            -d "{\"name\":\"app-$i\",\"routes\":[\"$(host_of "$t" "$i")\"]}" "http://$CP_ADDR/v1/apps" || echo 000)"
        t1="$EPOCHREALTIME"
        if [[ "$code" == 2?? ]]; then
            # A tenant past its validation-time budget is told when to come
            # back (429 upload_budget, Retry-After): a client that waits, as
            # the CLI does, gets through; each wait is counted.
            while :; do
                code="$(curl -s -o "$WORK/d-$t.json" -D "$WORK/d-$t.head" -w '%{http_code}' --max-time "$ISO_TIMEOUT_S" -X POST \
                    -H "Authorization: Bearer $token" -H 'content-type: application/wasm' \
                    --data-binary "@$(module_of "app-$i")" "http://$CP_ADDR/v1/apps/app-$i/deployments" || echo 000)"
                [[ "$code" == 429 ]] && ((EPOCHSECONDS < CREATE_DEADLINE)) || break
                echo "$i" >>"$WORK/retries-$t.txt"
                sleep "$(awk 'tolower($1) == "retry-after:" { print $2 + 0; exit }' "$WORK/d-$t.head" | grep -E '^[0-9]+$' || echo 5)"
            done
        else
            code="create-$code:$(head -c 200 "$WORK/c-$t.json")"
        fi
        t2="$EPOCHREALTIME"
        echo "$i $(ms_between "$t0" "$t1") $(ms_between "$t1" "$t2") $code" >>"$WORK/create-$t.txt"
    done
}

# Control plane, tenants, node ------------------------------------------

control_plane cp "$WORK/cp-data"
CP_PID="$PROC_PID"
CP_ADDR="$PROC_ADDR"
TOKENS=()
for ((t = 0; t < TENANTS; t++)); do
    TOKENS[t]="$(api POST /v1/tenants "$ADMIN_TOKEN" -H 'content-type: application/json' \
        -d "{\"name\":\"t$t\",\"domains\":[\"t$t.many.test\"]}" | jq -er .token)" || die "no token for tenant t$t"
done
edge_node_sync node1 "$CP_ADDR" "$WORK/node1-cache" "${NODE_ARGS[@]}"
NODE_PID="$PROC_PID"
NODE_ADDR="$PROC_ADDR"
NODE_METRICS="$PROC_METRICS"
R[rss0]="$(rss_mib "$NODE_PID")"
sampler "$NODE_METRICS" "$RAW/timeline-create.txt" "$NODE_PID" &
SAMPLER=$!
CHILDREN+=("$SAMPLER")

# Creation ---------------------------------------------------------------

wait_for_idle_cpu
R[busy_create]="$BUSY"
if [[ -n "${MANY_DISTINCT:-}" ]]; then
    names=()
    for ((i = 0; i < N; i++)); do names+=("app-$i"); done
    for ((f = 0; f < FRESH; f++)); do names+=("fresh-$f"); done
    write_variants "$MODULE" "$WORK/variants" "${names[@]}"
    log "MANY_DISTINCT: ${#names[@]} variants of $MODULE, one module per app"
fi
log "creating $N apps ($PARALLEL tenants at once; stops after ${MAX_S}s)"
CREATE_DEADLINE=$((EPOCHSECONDS + MAX_S))
T_CREATE0="$EPOCHREALTIME"
MARK0="$(cpu_mark "$NODE_PID" "$CP_PID")"
cpu_node0="$(cpu_s "$NODE_PID")"
cpu_cp0="$(cpu_s "$CP_PID")"
CREATE_PIDS=()
for ((t = 0; t < TENANTS; t++)); do
    create_tenant_apps "$t" &
    CREATE_PIDS+=($!)
    CHILDREN+=($!)
    # At most PARALLEL at once (each job ends by itself: every curl is bounded
    # and the jobs stop at the creation deadline).
    while (($(running "${CREATE_PIDS[@]}") >= PARALLEL)); do sleep 0.1; done
done
while (($(running "${CREATE_PIDS[@]}") > 0)); do sleep 0.1; done
reap "${CREATE_PIDS[@]}"
R[other_create]="$(other_cores "$MARK0" "$(cpu_mark "$NODE_PID" "$CP_PID")")"
T_CREATED="$EPOCHREALTIME"
R[create_ms]="$(ms_between "$T_CREATE0" "$T_CREATED")"
cat "$WORK"/create-*.txt >"$RAW/create.txt"
R[retries]="$({ cat "$WORK"/retries-*.txt 2>/dev/null || true; } | wc -l)"
CREATED="$(awk '$4 ~ /^2/' "$RAW/create.txt" | wc -l)"
R[create_fail]="$(awk '$4 !~ /^2/ && $4 != "deadline"' "$RAW/create.txt" | wc -l)"
R[create_p]="$(percentiles <(awk '$4 ~ /^2/ { print $2 / 1000 }' "$RAW/create.txt") 1)"
R[deploy_p]="$(percentiles <(awk '$4 ~ /^2/ { print $3 / 1000 }' "$RAW/create.txt") 1)"
log "created and deployed $CREATED apps in ${R[create_ms]} ms (failures: ${R[create_fail]}); per call p50/p90/p99/max: create ${R[create_p]} ms, deploy ${R[deploy_p]} ms"
((R[create_fail] == 0)) || awk '$4 !~ /^2/' "$RAW/create.txt" | head -5 >&2
((CREATED > 0)) || die "no app was created"

WAIT_T0="$T_CREATE0"
wait_served "$NODE_METRICS" "$CREATED" "node1 (incremental)" || true
R[served_ms]="$SERVED_MS"
R[after_last_ms]="$(awk -v s="${SERVED_MS#>}" -v c="${R[create_ms]}" 'BEGIN { printf "%d", s - c }')"
R[cpu_node]="$(awk -v a="$cpu_node0" -v b="$(cpu_s "$NODE_PID")" 'BEGIN { printf "%.1f", b - a }')"
R[cpu_cp]="$(awk -v a="$cpu_cp0" -v b="$(cpu_s "$CP_PID")" 'BEGIN { printf "%.1f", b - a }')"
R[revision]="$(cp_revision)"
kill "$SAMPLER" 2>/dev/null || true
reap "$SAMPLER"

# State after loading ----------------------------------------------------

sleep 2
R[rss]="$(rss_mib "$NODE_PID")"
R[hwm]="$(hwm_mib "$NODE_PID")"
R[cp_rss]="$(rss_mib "$CP_PID")"
R[lookups]="$(compile_cache "$NODE_METRICS")"
R[du]="$(du_mib "$WORK/node1-cache")"
R[du_modules]="$(du_mib "$WORK/node1-cache/modules")"
R[du_compiled]="$(du_mib "$WORK/node1-cache/compiled")"
R[n_modules]="$(find "$WORK/node1-cache/modules" -type f 2>/dev/null | wc -l)"
R[n_compiled]="$(find "$WORK/node1-cache/compiled" -type f 2>/dev/null | wc -l)"
R[du_cp]="$(du_mib "$WORK/cp-data")"
curl -s --max-time 30 -o "$WORK/metrics.txt" -w '%{time_total}' "http://$NODE_METRICS/metrics" >"$WORK/mt" || true
R[metrics_kib]="$(awk -v b="$(stat -c %s "$WORK/metrics.txt")" 'BEGIN { printf "%.0f", b / 1024 }')"
R[metrics_lines]="$(wc -l <"$WORK/metrics.txt")"
R[metrics_ms]="$(awk '{ printf "%.0f", $1 * 1000 }' "$WORK/mt")"
log "node RSS ${R[rss]} MiB (peak ${R[hwm]}, ${R[rss0]} empty); cache ${R[du]} MiB (modules ${R[du_modules]} in ${R[n_modules]} files, compiled ${R[du_compiled]} in ${R[n_compiled]}); lookups hit/miss/invalid ${R[lookups]}; /metrics ${R[metrics_kib]} KiB, ${R[metrics_lines]} lines, ${R[metrics_ms]} ms"

# First vs second request ------------------------------------------------

awk '$4 ~ /^2/ { print $1 }' "$RAW/create.txt" | while read -r i; do
    echo "app-$i.t$((i / PER)).many.test"
done >"$WORK/hosts.txt"
port="${NODE_ADDR##*:}"
first_pass() { # $1: output file ("code time_total" per line)
    awk -v p="$port" '{ printf "url = \"http://%s:%s/\"\noutput = \"/dev/null\"\n", $1, p }' "$WORK/hosts.txt" >"$WORK/curl.cfg"
    timeout 600 curl -s --resolve "*:$port:127.0.0.1" -K "$WORK/curl.cfg" -w '%{http_code} %{time_total}\n' >"$1" || true
}
wait_for_idle_cpu
R[busy_first]="$BUSY"
first_pass "$RAW/first.txt"
first_pass "$RAW/second.txt"
R[first_ok]="$(awk '$1 == 200' "$RAW/first.txt" | wc -l)"
R[second_ok]="$(awk '$1 == 200' "$RAW/second.txt" | wc -l)"
R[first_p]="$(percentiles "$RAW/first.txt" 2)"
R[second_p]="$(percentiles "$RAW/second.txt" 2)"
log "first request to each app: ${R[first_ok]}/$CREATED 200, p50/p90/p99/max ${R[first_p]} ms; second: ${R[second_ok]} 200, ${R[second_p]} ms"

# Freshly deployed apps: deploy -> first 200, first vs later requests.
: >"$RAW/fresh.txt"
for ((f = 0; f < FRESH; f++)); do
    h="fresh-$f.t0.many.test"
    api POST /v1/apps "${TOKENS[0]}" -H 'content-type: application/json' \
        -d "{\"name\":\"fresh-$f\",\"routes\":[\"$h\"]}" >/dev/null
    t0="$EPOCHREALTIME"
    api POST "/v1/apps/fresh-$f/deployments" "${TOKENS[0]}" -H 'content-type: application/wasm' \
        --data-binary "@$(module_of "fresh-$f")" >/dev/null
    t1="$EPOCHREALTIME"
    code=""
    deadline=$((SECONDS + 60))
    while [[ "$code" != 200 ]] && ((SECONDS < deadline)); do
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Host: $h" "http://$NODE_ADDR/" || true)"
        [[ "$code" == 200 ]] || sleep 0.005
    done
    t2="$EPOCHREALTIME"
    [[ "$code" == 200 ]] || die "fresh-$f was not served within 60 s"
    # The 200 above was its first request; time a few more on one connection.
    later="$(curl -s --max-time 30 -H "Host: $h" -w '%{time_total}\n' -o /dev/null -o /dev/null -o /dev/null -o /dev/null -o /dev/null \
        "http://$NODE_ADDR/" "http://$NODE_ADDR/" "http://$NODE_ADDR/" "http://$NODE_ADDR/" "http://$NODE_ADDR/" |
        sort -n | awk '{ v[NR] = $1 * 1000 } END { printf "%.2f", v[int((NR + 1) / 2)] }')"
    echo "fresh-$f upload_ms=$(ms_between "$t0" "$t1") upload_to_first_200_ms=$(ms_between "$t0" "$t2") after_upload_returned_ms=$(ms_between "$t1" "$t2") later_median_ms=$later" >>"$RAW/fresh.txt"
done
R[fresh_upload]="$(awk '{ split($2, a, "="); print a[2] }' "$RAW/fresh.txt" | sort -n | paste -sd/)"
R[fresh_served]="$(awk '{ split($3, a, "="); print a[2] }' "$RAW/fresh.txt" | sort -n | paste -sd/)"
R[fresh_later]="$(awk '{ split($5, a, "="); print a[2] }' "$RAW/fresh.txt" | sort -n | paste -sd/)"
log "fresh apps: upload ${R[fresh_upload]} ms; upload start -> first 200 ${R[fresh_served]} ms; later requests median ${R[fresh_later]} ms"
N_ALL=$((CREATED + FRESH))

# Steady load ------------------------------------------------------------

# steady NAME HOSTS_FILE|"" : one wrk run (rotating over the file's hosts,
# or plain on the first host); appends a table row to STEADY_ROWS with the
# node's CPU per request.
STEADY_ROWS=()
steady() {
    local name="$1" hosts="$2" m0 m1 c0 c1 us
    wait_for_idle_cpu
    local busy="$BUSY"
    c0="$(cpu_s "$NODE_PID")"
    m0="$(cpu_mark "$NODE_PID" "$CP_PID")"
    if [[ -n "$hosts" ]]; then
        HOSTS_FILE="$hosts" wrk_run "$RAW/wrk-$name.txt" "$DUR" "$CONNS" "$(head -1 "$WORK/hosts.txt")" -s "$WORK/rotate.lua"
    else
        wrk_run "$RAW/wrk-$name.txt" "$DUR" "$CONNS" "$(head -1 "$WORK/hosts.txt")" -s "$WORK/tally.lua"
    fi
    m1="$(cpu_mark "$NODE_PID" "$CP_PID")"
    c1="$(cpu_s "$NODE_PID")"
    parse_wrk "$RAW/wrk-$name.txt"
    us="$(awk -v a="$c0" -v b="$c1" -v n="${W_REQ:-0}" 'BEGIN { printf "%.0f", (n > 0 ? (b - a) * 1e6 / n : 0) }')"
    STEADY_ROWS+=("| $3 | $W_RPS | $W_P50 | $W_P99 | $us | ${W_STATUS:-?}${W_SOCK:+ (socket: $W_SOCK)} | $busy / $(other_cores "$m0" "$m1") |")
    log "steady $name: $W_RPS req/s, p50 $W_P50 ms, p99 $W_P99 ms, node $us µs CPU per request"
}
head -1 "$WORK/hosts.txt" >"$WORK/hosts-1.txt"
head -10 "$WORK/hosts.txt" >"$WORK/hosts-10.txt"
head -100 "$WORK/hosts.txt" >"$WORK/hosts-100.txt"
steady spread "$WORK/hosts.txt" "rotating over all $CREATED hosts"
steady spread100 "$WORK/hosts-100.txt" "rotating over 100 hosts"
steady spread10 "$WORK/hosts-10.txt" "rotating over 10 hosts"
steady rotate1 "$WORK/hosts-1.txt" "one host, through the same rotating script"
steady one "" "one host, plain"
R[rss_load]="$(rss_mib "$NODE_PID")"
R[hwm_load]="$(hwm_mib "$NODE_PID")"
R[pss_load]="$(pss_mib "$NODE_PID")"
R[code_load]="$(resident_code "$NODE_METRICS")"

# The hot set alone: a node holding only the first 10 apps (standalone,
# one --app per app, the same modules and node config), under the same
# rotating load; its row beside "rotating over 10 hosts" shows what the
# other apps on the node cost the hot ones.
awk '$4 ~ /^2/ { print $1 }' "$RAW/create.txt" | head -10 >"$WORK/hot-apps.txt"
HOT_ARGS=()
while read -r i; do
    HOT_ARGS+=(--app "app-$i.t$((i / PER)).many.test=$(module_of "app-$i")")
done <"$WORK/hot-apps.txt"
start_proc hot-only "$BIN_DIR/edge-node" --http 127.0.0.1:0 --metrics 127.0.0.1:0 "${NODE_ARGS[@]}" "${HOT_ARGS[@]}"
read -r HOT_PID HOT_ADDR <<<"$PROC_PID $PROC_ADDR"
read -r MAIN_PID MAIN_ADDR <<<"$NODE_PID $NODE_ADDR"
NODE_PID="$HOT_PID" NODE_ADDR="$HOT_ADDR"
steady hot-only "$WORK/hosts-10.txt" "rotating over the same 10 hosts, on a node holding only those 10 apps"
R[hot_rss]="$(rss_mib "$HOT_PID") / $(hwm_mib "$HOT_PID")"
NODE_PID="$MAIN_PID" NODE_ADDR="$MAIN_ADDR"
stop_server "$HOT_PID"

# A second node, empty cache, against the full control plane --------------

if [[ -z "${MANY_SKIP_FRESH_NODE:-}" ]]; then
    wait_for_idle_cpu
    R[busy_node2]="$BUSY"
    WAIT_T0="$EPOCHREALTIME"
    edge_node_sync node2 "$CP_ADDR" "$WORK/node2-cache" "${NODE_ARGS[@]}"
    N2_PID="$PROC_PID"
    N2_METRICS="$PROC_METRICS"
    sampler "$N2_METRICS" "$RAW/timeline-node2.txt" "$N2_PID" &
    S2=$!
    CHILDREN+=("$S2")
    wait_served "$N2_METRICS" "$N_ALL" "node2 (first sync, empty cache)" || true
    R[node2_ms]="$SERVED_MS"
    R[node2_lookups]="$(compile_cache "$N2_METRICS")"
    R[node2_rss]="$(rss_mib "$N2_PID") / $(hwm_mib "$N2_PID")"
    R[node2_cpu]="$(cpu_s "$N2_PID")"
    kill "$S2" 2>/dev/null || true
    reap "$S2"
    stop_server "$N2_PID"
fi

# Restart from the cache, control plane down ------------------------------

stop_server "$NODE_PID"
stop_server "$CP_PID"
wait_for_idle_cpu
R[busy_restart]="$BUSY"
probe="$(shuf -n 1 "$WORK/hosts.txt")"
t0="$EPOCHREALTIME"
edge_node_sync node1-restart "$CP_ADDR" "$WORK/node1-cache" "${NODE_ARGS[@]}"
R[restart_ms]="$PROC_BANNER_MS"
NODE_PID="$PROC_PID"
NODE_ADDR="$PROC_ADDR"
# The first request right after the banner: start -> first 200 is what a
# restarted node's clients wait (its code is loaded for this request).
R[restart_probe]="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Host: $probe" "http://$NODE_ADDR/" || true)"
R[restart_first_ms]="$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b - a) * 1000 }')"
R[restart_loaded]="$(metric "$PROC_METRICS" outpost_runtime_apps_loaded)"
R[restart_lookups]="$(compile_cache "$PROC_METRICS")"
R[restart_rss]="$(rss_mib "$NODE_PID") / $(hwm_mib "$NODE_PID")"
R[restart_cpu]="$(cpu_s "$NODE_PID")"
log "restart from cache: banner after ${R[restart_ms]} ms with ${R[restart_loaded]} apps; $probe -> ${R[restart_probe]}, ${R[restart_first_ms]} ms after start; lookups ${R[restart_lookups]}; RSS ${R[restart_rss]}"
# Every app's first request on the restarted node: each loads its code
# from the compile cache (cold), within the code budget.
port="${NODE_ADDR##*:}"
first_pass "$RAW/restart-cold.txt"
R[cold_ok]="$(awk '$1 == 200' "$RAW/restart-cold.txt" | wc -l)"
R[cold_p]="$(percentiles "$RAW/restart-cold.txt" 2)"
R[cold_rss]="$(rss_mib "$NODE_PID") / $(hwm_mib "$NODE_PID")"
R[cold_pss]="$(pss_mib "$NODE_PID")"
R[cold_split]="$(awk '/^(RssAnon|RssFile):/ { printf "%s %.1f ", $1, $2 / 1024 }' "/proc/$NODE_PID/status")"
R[cold_code]="$(resident_code "$PROC_METRICS") (budget $(metric "$PROC_METRICS" outpost_runtime_code_budget_bytes)); loads $(metric "$PROC_METRICS" 'outpost_runtime_code_loads_total{result="ok"}'), evictions $(metric "$PROC_METRICS" outpost_runtime_code_evictions_total)"
R[cold_metrics_kib]="$({ curl -s --max-time 30 "http://$PROC_METRICS/metrics" || true; } | wc -c | awk '{ printf "%.0f", $1 / 1024 }')"
log "restarted node, every app's first request: ${R[cold_ok]} × 200, p50/p90/p99/max ${R[cold_p]} ms; RSS/peak ${R[cold_rss]} MiB (${R[cold_split]}MiB); code ${R[cold_code]}; /metrics ${R[cold_metrics_kib]} KiB"
stop_server "$NODE_PID"
for f in "$WORK"/*.out "$WORK"/*.err; do
    sed -E $'s/\x1b\\[[0-9;]*m//g' "$f" >"$RAW/$(basename "$f").log" 2>/dev/null || true
done
R[warn]="$(cat "$RAW"/*.err.log 2>/dev/null | grep -cE ' (WARN|ERROR) ' || true)"

# Report ------------------------------------------------------------------

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
{
    echo "## Many tenants: $N apps on one node, $MODULES ($stamp)"
    echo
    echo "RUST_BACKTRACE=$BACKTRACE; commit $(describe_commit); $(nproc) cores; load average at start $LOAD_AT_START."
    if [[ -n "${MANY_DISTINCT:-}" ]]; then
        echo "$TENANTS tenants × $PER apps, each deploying its own variant of \`$MODULE_NAME\` (a custom section naming the app: one digest and one compiled module per app); created through the REST API with curl, $PARALLEL tenants at once."
    else
        echo "$TENANTS tenants × $PER apps, each deploying \`$MODULE_NAME\` (same digest); created through the REST API with curl, $PARALLEL tenants at once."
    fi
    echo
    echo "| measure | value |"
    echo "|---|---|"
    echo "| apps created and deployed | $CREATED of $N (API failures: ${R[create_fail]}; deploys that waited out a 429 upload_budget first: ${R[retries]}) |"
    echo "| creation wall time (all API calls) | ${R[create_ms]} ms; per call p50/p90/p99/max: create app ${R[create_p]} ms, deploy ${R[deploy_p]} ms |"
    echo "| first create → node serves all (apps_loaded = $CREATED, applied_revision = ${R[revision]}) | ${R[served_ms]} ms (${R[after_last_ms]} ms after the last API call returned) |"
    echo "| CPU used meanwhile | node ${R[cpu_node]} s, control plane ${R[cpu_cp]} s |"
    echo "| node RSS (empty → $CREATED apps loaded; peak) | ${R[rss0]} → ${R[rss]} MiB; peak ${R[hwm]} MiB |"
    echo "| control plane RSS; data dir | ${R[cp_rss]} MiB; ${R[du_cp]} MiB |"
    echo "| node cache on disk | ${R[du]} MiB: modules/ ${R[du_modules]} MiB (${R[n_modules]} files), compiled/ ${R[du_compiled]} MiB (${R[n_compiled]} files) |"
    echo "| compile-cache lookups hit/miss/invalid | ${R[lookups]} |"
    echo "| /metrics | ${R[metrics_kib]} KiB, ${R[metrics_lines]} lines, scraped in ${R[metrics_ms]} ms |"
    echo "| first request to each app (never requested), p50/p90/p99/max | ${R[first_p]} ms (${R[first_ok]} × 200) |"
    echo "| second request to each app | ${R[second_p]} ms (${R[second_ok]} × 200) |"
    echo "| $FRESH freshly deployed apps: upload call | ${R[fresh_upload]} ms |"
    echo "| … upload start → first 200 on the node | ${R[fresh_served]} ms |"
    echo "| … later requests (median of 5, keep-alive) | ${R[fresh_later]} ms |"
    echo "| node RSS after the load runs (peak); PSS; compiled code resident | ${R[rss_load]} MiB (${R[hwm_load]}); ${R[pss_load]} MiB; ${R[code_load]} |"
    echo "| node holding only the 10 hot apps: RSS/peak after its load run | ${R[hot_rss]} MiB |"
    if [[ -z "${MANY_SKIP_FRESH_NODE:-}" ]]; then
        echo "| second node, empty cache: start → serves all $N_ALL | ${R[node2_ms]} ms; lookups ${R[node2_lookups]}; RSS/peak ${R[node2_rss]} MiB; CPU ${R[node2_cpu]} s |"
    fi
    echo "| restart from cache, control plane down: start → banner | ${R[restart_ms]} ms with ${R[restart_loaded]} apps ready; lookups ${R[restart_lookups]}; RSS/peak ${R[restart_rss]} MiB; CPU ${R[restart_cpu]} s |"
    echo "| … start → first request answered (a random app) | ${R[restart_first_ms]} ms (${R[restart_probe]}) |"
    echo "| … every app's first request (code loaded cold), p50/p90/p99/max | ${R[cold_p]} ms (${R[cold_ok]} × 200) |"
    echo "| … after it: node RSS/peak (of which anonymous, file-backed); PSS; compiled code; /metrics | ${R[cold_rss]} MiB (${R[cold_split]}MiB); ${R[cold_pss]} MiB; ${R[cold_code]}; ${R[cold_metrics_kib]} KiB |"
    echo "| WARN/ERROR lines in the logs | ${R[warn]} |"
    echo
    echo "Steady load, \`wrk -t1 -c$CONNS -d${DUR}s --latency\`:"
    echo
    echo "| Host | req/s | p50 ms | p99 ms | node CPU µs/request | answers | other load before / during (cores) |"
    echo "|---|---:|---:|---:|---:|---|---:|"
    printf '%s\n' "${STEADY_ROWS[@]}"
    echo
    echo "Other load (busy cores) before: creation ${R[busy_create]} (during it: ${R[other_create]}), first-request pass ${R[busy_first]}, second node ${R[busy_node2]:-–}, restart ${R[busy_restart]}."
} >"$WORK/table.md"

echo
cat "$WORK/table.md"
cp "$WORK/table.md" "$RESULTS_DIR/many-$KIND-latest.md"
cp "$WORK/table.md" "$RESULTS_DIR/many-$KIND-$stamp.md"
log "wrote $RESULTS_DIR/many-$KIND-latest.md (timelines and logs in $RAW)"
