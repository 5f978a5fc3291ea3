#!/usr/bin/env bash
# Soak: SOAK_SECONDS (600) of mixed traffic on a control plane + one
# sync-mode edge node while deploys, rollbacks, env changes and app
# create/delete go on every SOAK_STEP_S (3) seconds.
#
# Usage:  bash loadtests/soak.sh
#         SOAK_SECONDS=180 bash loadtests/soak.sh
#
# Tenant "good" (well-behaved):
#   hello   hello.good.test   guests/c/hello/hello.wasm, never changed
#   churn   churn.good.test   redeployed and rolled back all along
#                             (alternately the C hello and the WAT hello
#                             fixture), its env changed now and then
# Tenant "bad" (tenant limits fuel SOAK_BAD_FUEL, timeout_ms 500,
# max_concurrency 4): loop, bomb, slow (the hostile WAT fixtures).
# Traffic, all wrk -t1 with a Lua tally by status / x-outpost-error:
#   wrk -c4 on hello, wrk -c4 on churn, wrk -c4 rotating over bad's hosts.
# Changes, one per step, in a cycle, through the `outpost` CLI (which
# waits until the node serves the change): deploy churn, rollback churn to
# an earlier version, env set on churn, create + deploy a temporary app,
# delete it. Every call's exit status and time are kept.
# Every 30 s: node and control-plane RSS, node apps loaded, B instances in
# flight, open connections, node cache size, and the node's executable
# mappings (r-xp lines of /proc/PID/maps: roughly one per compiled
# component still mapped, so retained old versions show up there).
# Target: zero non-2xx answers on hello and churn; node RSS flat.
# Writes results/soak-latest.md (+ timestamped copy) and raw data in
# results/soak-raw/.
#
# Knobs (env): SOAK_SECONDS (600) SOAK_STEP_S (3, may be fractional)
# SOAK_CHANGES (1; 0 = traffic only, no changes) SOAK_SAMPLE_S (30)
# SOAK_CONNS (4) SOAK_BAD_FUEL (10000000) ISO_SKIP_BUILD ISO_BIN_DIR
# ISO_TIMEOUT_S (120) BENCH_MAX_BUSY (0.5) BENCH_LOAD_WAIT_S (600).
set -euo pipefail
export LC_ALL=C

# shellcheck source=loadtests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=loadtests/iso_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/iso_lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

log() { printf '[soak %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    printf '\n[soak] FAILED: %s\n\n' "$*" >&2
    exit 1
}

SOAK_S="${SOAK_SECONDS:-600}"
STEP_S="${SOAK_STEP_S:-3}"
CHANGES="${SOAK_CHANGES:-1}"
SAMPLE_S="${SOAK_SAMPLE_S:-30}"
CONNS="${SOAK_CONNS:-4}"
BAD_FUEL="${SOAK_BAD_FUEL:-10000000}"
RAW="$RESULTS_DIR/soak-raw"

[[ "${BASH_VERSINFO[0]}" -ge 5 ]] || die "needs bash >= 5 (EPOCHREALTIME)"
for tool in curl wrk jq du od awk; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
[[ -f "$C_HELLO" ]] || die "$C_HELLO not found"

build_binaries
dump_fixtures 2000
write_wrk_lua
rm -rf "$RAW"
mkdir -p "$RESULTS_DIR" "$RAW"
log "RUST_BACKTRACE=$BACKTRACE; soak ${SOAK_S}s, one change every ${STEP_S}s"
LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg)"
wait_for_quiet_machine

# Control plane, tenants, apps, node ---------------------------------------

control_plane cp "$WORK/cp-data"
CP_PID="$PROC_PID"
CP_ADDR="$PROC_ADDR"
GOOD="$(api POST /v1/tenants "$ADMIN_TOKEN" -H 'content-type: application/json' -d '{"name":"good","domains":["good.test"]}' | jq -er .token)"
BAD="$(api POST /v1/tenants "$ADMIN_TOKEN" -H 'content-type: application/json' -d '{"name":"bad","domains":["bad.test"]}' | jq -er .token)"
api PUT /v1/tenants/bad/limits "$ADMIN_TOKEN" -H 'content-type: application/json' \
    -d "{\"fuel\":$BAD_FUEL,\"timeout_ms\":500,\"max_concurrency\":4}" >/dev/null

# outpost CLI as tenant good (the token goes through the environment).
cli() { OUTPOST_URL="http://$CP_ADDR" OUTPOST_TOKEN="$GOOD" timeout 120 "$BIN_DIR/outpost" "$@"; }

create_app() { # TOKEN NAME HOST WASM
    api POST /v1/apps "$1" -H 'content-type: application/json' -d "{\"name\":\"$2\",\"routes\":[\"$3\"]}" >/dev/null
    api POST "/v1/apps/$2/deployments" "$1" -H 'content-type: application/wasm' --data-binary "@$4" >/dev/null
}
create_app "$GOOD" hello hello.good.test "$C_HELLO"
create_app "$GOOD" churn churn.good.test "$C_HELLO"
api POST /v1/apps/churn/deployments "$GOOD" -H 'content-type: application/wasm' \
    --data-binary "@$FIXTURES_DIR/hello.wasm" >/dev/null # churn version 2
create_app "$BAD" loop loop.bad.test "$FIXTURES_DIR/infinite_loop.wasm"
create_app "$BAD" bomb bomb.bad.test "$FIXTURES_DIR/memory_bomb.wasm"
create_app "$BAD" slow slow.bad.test "$FIXTURES_DIR/slow.wasm"

edge_node_sync node "$CP_ADDR" "$WORK/node-cache"
NODE_PID="$PROC_PID"
NODE_ADDR="$PROC_ADDR"
NODE_METRICS="$PROC_METRICS"
deadline=$((SECONDS + 60))
for h in hello.good.test churn.good.test; do
    until [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Host: $h" "http://$NODE_ADDR/" || true)" == 200 ]]; do
        ((SECONDS < deadline)) || die "the node does not serve $h"
        sleep 0.1
    done
done
printf '%s\n' loop.bad.test bomb.bad.test slow.bad.test >"$WORK/bad-hosts.txt"

# Sampler ------------------------------------------------------------------

sampler() {
    local t0="$EPOCHREALTIME"
    echo "elapsed_s node_rss_mib cp_rss_mib apps_loaded bad_in_flight conns_open cache_mib node_cpu_s code_maps pool_warm_mib" >"$RAW/samples.txt"
    while kill -0 "$NODE_PID" 2>/dev/null; do
        printf '%s %s %s %s %s %s %s %s %s %s\n' \
            "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')" \
            "$(rss_mib "$NODE_PID")" "$(rss_mib "$CP_PID")" \
            "$(metric "$NODE_METRICS" outpost_runtime_apps_loaded)" \
            "$(metric_sum "$NODE_METRICS" '^outpost_runtime_instances_in_flight\{.*tenant="bad"')" \
            "$(metric_sum "$NODE_METRICS" '^outpost_http_connections_open')" \
            "$(du_mib "$WORK/node-cache")" "$(cpu_s "$NODE_PID")" \
            "$(grep -c ' r-xp ' "/proc/$NODE_PID/maps" 2>/dev/null || echo '?')" \
            "$(awk -v b="$(metric "$NODE_METRICS" outpost_runtime_pool_warm_memory_bytes)" 'BEGIN { printf "%.1f", b / 1048576 }')" >>"$RAW/samples.txt"
        sleep "$SAMPLE_S"
    done
}

wait_for_idle_cpu
R_BUSY="$BUSY"
log "other load before the soak: $R_BUSY cores; starting traffic"
MARK0="$(cpu_mark "$NODE_PID" "$CP_PID")"
sampler &
SAMPLER=$!
CHILDREN+=("$SAMPLER")
wrk_bg "$RAW/wrk-hello.txt" "$SOAK_S" "$CONNS" hello.good.test -s "$WORK/tally.lua" --timeout 10s
W1="$WRK_PID"
wrk_bg "$RAW/wrk-churn.txt" "$SOAK_S" "$CONNS" churn.good.test -s "$WORK/tally.lua" --timeout 10s
W2="$WRK_PID"
HOSTS_FILE="$WORK/bad-hosts.txt" wrk_bg "$RAW/wrk-bad.txt" "$SOAK_S" "$CONNS" loop.bad.test -s "$WORK/rotate.lua" --timeout 10s
W3="$WRK_PID"

# Changes ------------------------------------------------------------------

END=$((SECONDS + SOAK_S - 2))
step=0
versions=2
tmp=0
echo "step action exit seconds live_after_s" >"$RAW/changes.txt"
while ((SECONDS < END)); do
    if [[ "$CHANGES" == 0 ]]; then # traffic only: the RSS baseline
        sleep 1
        continue
    fi
    t0="$EPOCHREALTIME"
    case $((step % 5)) in
        0)
            action="deploy"
            wasm="$C_HELLO"
            ((versions % 2 == 0)) || wasm="$FIXTURES_DIR/hello.wasm"
            cli deploy churn "$wasm" >"$WORK/cli.out" 2>&1 && rc=0 || rc=$?
            [[ $rc != 0 ]] || versions=$((versions + 1))
            ;;
        1)
            v=$((1 + RANDOM % versions))
            action="rollback-v$v"
            cli rollback churn "$v" >"$WORK/cli.out" 2>&1 && rc=0 || rc=$?
            ;;
        2)
            action="env-set"
            cli env set churn "STEP=$step" >"$WORK/cli.out" 2>&1 && rc=0 || rc=$?
            ;;
        3)
            tmp=$((tmp + 1))
            action="create-tmp-$tmp"
            { cli apps create "tmp-$tmp" --route "tmp-$tmp.good.test" && cli deploy "tmp-$tmp" "$C_HELLO"; } >"$WORK/cli.out" 2>&1 && rc=0 || rc=$?
            ;;
        4)
            action="delete-tmp-$tmp"
            cli apps delete "tmp-$tmp" >"$WORK/cli.out" 2>&1 && rc=0 || rc=$?
            ;;
    esac
    secs="$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')"
    live="$(grep -oE 'after [0-9.]+ s' "$WORK/cli.out" | tail -1 | awk '{ print $2 }' || true)"
    echo "$step $action $rc $secs ${live:--}" >>"$RAW/changes.txt"
    if [[ $rc != 0 ]]; then
        log "step $step ($action) failed ($rc): $(tr '\n' ' ' <"$WORK/cli.out" | head -c 300)"
        cat "$WORK/cli.out" >>"$RAW/cli-failures.txt"
    fi
    step=$((step + 1))
    ((step % 20 != 0)) || log "step $step: $(tail -1 "$RAW/samples.txt")"
    sleep "$(awk -v s="$STEP_S" -v d="$secs" 'BEGIN { r = s - d; printf "%.2f", (r > 0.05 ? r : 0.05) }')"
done
log "changes done ($step); waiting for the wrk runs"
reap "$W1" "$W2" "$W3"
sleep 1
FINAL="$(tail -1 "$RAW/samples.txt")"
kill "$SAMPLER" 2>/dev/null || true
reap "$SAMPLER"
R_OTHER="$(other_cores "$MARK0" "$(cpu_mark "$NODE_PID" "$CP_PID")")"
# One last sample, after the traffic.
R_RSS_END="$(rss_mib "$NODE_PID")"
R_HWM="$(hwm_mib "$NODE_PID")"
R_CP_HWM="$(hwm_mib "$CP_PID")"
kill -0 "$NODE_PID" 2>/dev/null || die "the node died during the soak"
stop_server "$NODE_PID"
stop_server "$CP_PID"
for f in "$WORK"/node.err "$WORK"/cp.err; do
    sed -E $'s/\x1b\\[[0-9;]*m//g' "$f" >"$RAW/$(basename "$f" .err).log" 2>/dev/null || true
done

# Report ------------------------------------------------------------------

row() { # NAME FILE
    parse_wrk "$2"
    local bad
    bad=$((W_REQ - W_OK))
    echo "| $1 | $W_REQ | $W_RPS | $W_P50 | $W_P99 | $W_STATUS | $bad | ${W_SOCK:-none} |"
}
R_CHANGES="$(awk 'NR > 1 { n++; if ($3 != 0) f++ } END { printf "%d changes, %d failed", n, f }' "$RAW/changes.txt")"
R_CHANGE_T="$(awk 'NR > 1 && $3 == 0 { split($2, a, "-"); t[a[1]] = t[a[1]] " " $4 } END { for (k in t) print k, t[k] }' "$RAW/changes.txt" |
    while read -r k rest; do
        printf '%s: %s; ' "$k" "$(tr ' ' '\n' <<<"$rest" | grep . | sort -n | awk '{ v[NR] = $1 } END { printf "p50 %.2f s, max %.2f s", v[int((NR + 1) / 2)], v[NR] }')"
    done)"
R_LIVE="$(awk 'NR > 1 && $5 != "-" { print $5 }' "$RAW/changes.txt" | sort -n | awk '{ v[NR] = $1 }
    END {
        i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
        if (NR) printf "p50 %s s, p99 %s s, max %s s over %d waits", v[int((NR + 1) / 2)], v[i99], v[NR], NR; else print "none"
    }')"
# RSS trend: least-squares slope over the samples after the first minute.
slope() { # all | cold (RSS minus the pool's warm slots)
    awk -v mode="$1" 'NR > 1 && $1 >= 60 {
            v = (mode == "cold") ? $2 - $10 : $2
            n++; x += $1; y += v; xx += $1 * $1; xy += $1 * v
        }
        END { if (n >= 2 && (n * xx - x * x) != 0) printf "%.2f", (n * xy - x * y) / (n * xx - x * x) * 60; else print "n/a" }' "$RAW/samples.txt"
}
R_SLOPE="$(slope all)"
# The same without the pool's warm slots: memory kept resident on purpose,
# bounded by pool.max_unused_warm_slots, that fills as new modules arrive.
R_SLOPE_COLD="$(slope cold)"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
{
    if [[ "$CHANGES" == 0 ]]; then
        echo "## Soak: ${SOAK_S} s of mixed traffic, no changes ($stamp)"
    else
        echo "## Soak: ${SOAK_S} s of mixed traffic with a change every ${STEP_S} s ($stamp)"
    fi
    echo
    echo "RUST_BACKTRACE=$BACKTRACE; commit $(describe_commit); $(nproc) cores; load average at start $LOAD_AT_START; other load: $R_BUSY cores before the traffic, $R_OTHER on average during it (machine busy time minus the node, the control plane, wrk, the CLI and this script)."
    echo "Traffic: three \`wrk -t1 -c$CONNS\` for ${SOAK_S} s (hello, churn, and one rotating over bad's loop/bomb/slow; bad's tenant limits: fuel $BAD_FUEL, timeout_ms 500, max_concurrency 4)."
    echo
    echo "| traffic | requests | req/s | p50 ms | p99 ms | answers (status/x-outpost-error:count) | non-2xx | socket errors |"
    echo "|---|---:|---:|---:|---:|---|---:|---|"
    row "good/hello (never changed)" "$RAW/wrk-hello.txt"
    row "good/churn (deployed, rolled back, env changed)" "$RAW/wrk-churn.txt"
    row "bad/loop+bomb+slow (deliberate errors)" "$RAW/wrk-bad.txt"
    echo
    echo "Changes through the \`outpost\` CLI: $R_CHANGES; wall time per kind: $R_CHANGE_T"
    echo "\"Live on 1/1 node(s) after …\" as the CLI reported it: $R_LIVE."
    echo
    echo "Samples every ${SAMPLE_S} s:"
    echo
    echo "| elapsed s | node RSS MiB | control plane RSS MiB | apps loaded | bad in flight | connections open | node cache MiB | node CPU s | node executable mappings | pool warm slots MiB |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk 'NR > 1 { printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 }' "$RAW/samples.txt"
    echo
    echo "Node RSS trend after the first minute: $R_SLOPE MiB/min (least squares), $R_SLOPE_COLD MiB/min without the pool's warm slots; at the end $R_RSS_END MiB, peak (VmHWM) $R_HWM MiB; control plane peak $R_CP_HWM MiB. Last sample under load: $FINAL."
    echo "WARN/ERROR lines: node $(grep -cE ' (WARN|ERROR) ' "$RAW/node.log" || true), control plane $(grep -cE ' (WARN|ERROR) ' "$RAW/cp.log" || true)."
} >"$WORK/table.md"

echo
cat "$WORK/table.md"
cp "$WORK/table.md" "$RESULTS_DIR/soak-latest.md"
cp "$WORK/table.md" "$RESULTS_DIR/soak-$stamp.md"
cp -r "$RAW" "$RESULTS_DIR/soak-raw-$stamp"
log "wrote $RESULTS_DIR/soak-latest.md (raw data in $RAW)"
