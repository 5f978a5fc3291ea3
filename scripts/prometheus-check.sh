#!/usr/bin/env bash
# Checks the monitoring setup against the real binaries and a real
# Prometheus, on loopback only:
#
#   1. installs Debian's `prometheus` package if promtool is missing (its
#      service is not left running);
#   2. `promtool check rules` and `promtool test rules` (cases below) on
#      deploy/prometheus/alerts.yml;
#   3. starts a control plane, a standalone edge node serving
#      guests/c/hello/hello.wasm (HTTP + HTTPS) and a second edge node in
#      sync mode (HTTP only) following a tenant's deploy, sends a few
#      requests (200s, a 404, HTTPS, one 413 request_body kill), and pipes
#      each /metrics into `promtool check metrics` (errors fail, lint
#      warnings are printed);
#   4. runs Prometheus (1 s scrapes of jobs outpost-edge-node and
#      outpost-control-plane, alerts.yml loaded) while sending traffic for
#      ~10 s, then queries its HTTP API: targets up, per-tenant/app series
#      with sane values, every rule healthy and none pending or firing, and
#      every dashboard and alert expression valid PromQL.
#
#   bash scripts/prometheus-check.sh        # debug binaries (built if missing)
#   PROM_BUILD=1 bash scripts/prometheus-check.sh   # rebuild them first
#
# Needs curl and python3; bounded (~1 min once installed and built).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
BIN="$ROOT/target/debug"
ADMIN=admin-token-0123456789abcdef
NODE=node-token-0123456789abcdef
TRAFFIC_SECONDS="${PROM_TRAFFIC_SECONDS:-10}"


SCRIPT_NAME=prometheus-check
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

for tool in curl python3; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done

# --- 1. promtool and prometheus ------------------------------------------------
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    [[ "$(id -u)" == 0 ]] || die "promtool is missing and installing it needs root"
    log "installing Debian's prometheus package (for promtool and prometheus)"
    # Keep the package's service from starting: policy-rc.d 101 stops
    # invoke-rc.d (a Docker image usually has one already).
    policy_created=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_created=1
    fi
    install_ok=1
    timeout 600 apt-get update -qq || install_ok=""
    if [[ -n "$install_ok" ]]; then
        DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq \
            --no-install-recommends prometheus >"$WORK/apt.log" 2>&1 || install_ok=""
    fi
    [[ -n "$policy_created" ]] && rm -f /usr/sbin/policy-rc.d
    # Where systemd runs, the package enabled and started its service: stop it.
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        systemctl stop prometheus.service 2>/dev/null || true
    fi
    [[ -n "$install_ok" ]] || {
        tail -20 "$WORK/apt.log" >&2
        die "apt-get install prometheus failed"
    }
fi
log "$(promtool --version 2>&1 | head -1)"

# --- 2. the rules ----------------------------------------------------------------
log "promtool check rules deploy/prometheus/alerts.yml"
promtool check rules deploy/prometheus/alerts.yml || die "promtool check rules failed"

# Unit tests of the rules' logic: `for` durations, the guards (idle apps,
# nodes without HTTPS), and that healthy series raise nothing.
cat >"$WORK/alerts.test.yml" <<EOF
rule_files:
  - $ROOT/deploy/prometheus/alerts.yml
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{job="outpost-edge-node",instance="n1:9100"}'
        values: '1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0'
      - series: 'up{job="outpost-edge-node",instance="n2:9100"}'
        values: '1x20'
      - series: 'up{job="outpost-control-plane",instance="cp:7070"}'
        values: '1x20'
      # acme/web: 10% 5xx at 66 req/min; acme/idle: 100% 5xx but 1 req/min.
      - series: 'outpost_http_requests_total{instance="n2:9100",tenant="acme",app="web",status="2xx"}'
        values: '0+60x20'
      - series: 'outpost_http_requests_total{instance="n2:9100",tenant="acme",app="web",status="5xx"}'
        values: '0+6x20'
      - series: 'outpost_http_requests_total{instance="n2:9100",tenant="acme",app="idle",status="5xx"}'
        values: '0+1x20'
      # 60 fuel kills/min against 66 requests/min.
      - series: 'outpost_runtime_limit_kills_total{instance="n2:9100",tenant="acme",app="web",reason="fuel"}'
        values: '0+60x20'
      - series: 'outpost_runtime_limit_kills_total{instance="n2:9100",tenant="acme",app="web",reason="memory"}'
        values: '0x20'
      # The gauge is the nearest expiry's Unix time, and a unit test's
      # clock starts at 0: n1 serves no HTTPS (0, no certificate); n2 has
      # a tenant certificate expiring at 10 days; n3 only a default one,
      # at 2 days; n4's is 30 days away.
      - series: 'outpost_tls_certificate_expiry_timestamp_seconds{instance="n1:9100"}'
        values: '0x20'
      - series: 'outpost_tls_certificates_loaded{instance="n1:9100"}'
        values: '0x20'
      - series: 'outpost_tls_certificate_expiry_timestamp_seconds{instance="n2:9100"}'
        values: '864000x20'
      - series: 'outpost_tls_certificates_loaded{instance="n2:9100"}'
        values: '1x20'
      - series: 'outpost_tls_certificate_expiry_timestamp_seconds{instance="n3:9100"}'
        values: '172800x20'
      - series: 'outpost_tls_certificates_loaded{instance="n3:9100"}'
        values: '0x20'
      - series: 'outpost_tls_certificate_expiry_timestamp_seconds{instance="n4:9100"}'
        values: '2592000x20'
      - series: 'outpost_sync_lag_revisions{instance="n2:9100"}'
        values: '0 2 2 2 2 2 2 2 2 2 0x10'
      - series: 'outpost_cp_node_lag_revisions{instance="cp:7070",node="edge-2"}'
        values: '0 1 1 1 1 1 1 1 1 1 0x10'
    promql_expr_test:
      # Down since 1m, for: 2m: not firing at 2m, firing at 3m.
      - expr: ALERTS{alertname="OutpostEdgeNodeDown",alertstate="firing"}
        eval_time: 2m
        exp_samples: []
      - expr: ALERTS{alertname="OutpostEdgeNodeDown",alertstate="firing"}
        eval_time: 3m
        exp_samples:
          - labels: 'ALERTS{alertname="OutpostEdgeNodeDown",alertstate="firing",instance="n1:9100",job="outpost-edge-node",severity="critical"}'
            value: 1
      - expr: ALERTS{alertname=~"OutpostEdgeNodesAllDown|OutpostControlPlaneDown"}
        eval_time: 10m
        exp_samples: []
      - expr: ALERTS{alertname="OutpostAppErrorRate",alertstate="firing"}
        eval_time: 10m
        exp_samples:
          - labels: 'ALERTS{alertname="OutpostAppErrorRate",alertstate="firing",app="web",severity="warning",tenant="acme"}'
            value: 1
      - expr: ALERTS{alertname="OutpostAppLimitKillStorm",alertstate="firing"}
        eval_time: 15m
        exp_samples:
          - labels: 'ALERTS{alertname="OutpostAppLimitKillStorm",alertstate="firing",app="web",reason="fuel",severity="warning",tenant="acme"}'
            value: 1
      - expr: ALERTS{alertname="OutpostCertificateExpiringSoon",alertstate="firing"}
        eval_time: 15m
        exp_samples:
          - labels: 'ALERTS{alertname="OutpostCertificateExpiringSoon",alertstate="firing",instance="n2:9100",severity="warning"}'
            value: 1
          - labels: 'ALERTS{alertname="OutpostCertificateExpiringSoon",alertstate="firing",instance="n3:9100",severity="warning"}'
            value: 1
      - expr: ALERTS{alertname="OutpostCertificateExpiryCritical",alertstate="firing"}
        eval_time: 15m
        exp_samples:
          - labels: 'ALERTS{alertname="OutpostCertificateExpiryCritical",alertstate="firing",instance="n3:9100",severity="critical"}'
            value: 1
      # Lag since 1m, for: 5m: firing at 6m, resolved once it is back to 0.
      - expr: ALERTS{alertname=~"OutpostEdgeNodeSyncLag|OutpostControlPlaneNodeLag",alertstate="firing"}
        eval_time: 6m
        exp_samples:
          - labels: 'ALERTS{alertname="OutpostEdgeNodeSyncLag",alertstate="firing",instance="n2:9100",severity="warning"}'
            value: 1
          - labels: 'ALERTS{alertname="OutpostControlPlaneNodeLag",alertstate="firing",instance="cp:7070",node="edge-2",severity="warning"}'
            value: 1
      - expr: ALERTS{alertname=~"OutpostEdgeNodeSyncLag|OutpostControlPlaneNodeLag"}
        eval_time: 12m
        exp_samples: []
EOF
log "promtool test rules (node down, error rate, kill storm, expiry guard, lag)"
promtool test rules "$WORK/alerts.test.yml" || die "promtool test rules failed"

# --- 3. the binaries and their /metrics ------------------------------------------
if [[ ! -x "$BIN/edge-node" || ! -x "$BIN/control-plane" || -n "${PROM_BUILD:-}" ]]; then
    log "building control-plane and edge-node (debug)"
    cargo build -j2 -p outpost-edge-node -p outpost-control-plane
fi


log "starting the control plane"
"$BIN/control-plane" --listen 127.0.0.1:0 --data-dir "$WORK/cp-data" \
    --admin-token "$ADMIN" --node-token "$NODE" >"$WORK/cp.out" 2>"$WORK/cp.err" &
PIDS+=($!)
CP="$(wait_for "$WORK/cp.out" 'Listening on http://[0-9.:]+')"

api() { # api METHOD PATH TOKEN [curl args…]
    local method="$1" path="$2" token="$3"
    shift 3
    curl -sS --max-time 30 --fail-with-body -X "$method" -H "Authorization: Bearer $token" "$@" "http://$CP$path"
}
TENANT="$(api POST /v1/tenants "$ADMIN" -H 'content-type: application/json' -d '{"name":"acme","domains":["example.com"]}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
api POST /v1/apps "$TENANT" -H 'content-type: application/json' \
    -d '{"name":"web","routes":["web.example.com"]}' >/dev/null
api POST /v1/apps/web/deployments "$TENANT" -H 'content-type: application/wasm' \
    --data-binary @guests/c/hello/hello.wasm >/dev/null
log "tenant acme deployed app web (guests/c/hello/hello.wasm) on web.example.com"

log "starting edge node 1: standalone, hello.localhost, HTTP + HTTPS, request bodies capped at 16 bytes"
"$BIN/edge-node" --app hello.localhost=guests/c/hello/hello.wasm --max-request-body-bytes 16 \
    --http 127.0.0.1:0 --metrics 127.0.0.1:0 --https 127.0.0.1:0 \
    >"$WORK/n1.out" 2>"$WORK/n1.err" &
PIDS+=($!)
N1_HTTP="$(wait_for "$WORK/n1.out" 'Listening on http://[0-9.:]+')"
N1_HTTPS="$(wait_for "$WORK/n1.out" 'Listening on https://[0-9.:]+')"
N1_METRICS="$(wait_for "$WORK/n1.out" 'Metrics on http://[0-9.:]+')"

log "starting edge node 2: sync mode (edge-2), HTTP only"
"$BIN/edge-node" --control-plane "http://$CP" --node-token "$NODE" --node-id edge-2 \
    --cache-dir "$WORK/n2-cache" --http 127.0.0.1:0 --metrics 127.0.0.1:0 \
    >"$WORK/n2.out" 2>"$WORK/n2.err" &
PIDS+=($!)
N2_HTTP="$(wait_for "$WORK/n2.out" 'Listening on http://[0-9.:]+')"
N2_METRICS="$(wait_for "$WORK/n2.out" 'Metrics on http://[0-9.:]+')"

# code HOST ADDR [curl args…]: the status of one request to http://ADDR/.
code() {
    local host="$1" addr="$2"
    shift 2
    curl -s -o /dev/null --max-time 5 -w '%{http_code}' -H "Host: $host" "$@" "http://$addr/" || true
}
deadline=$((SECONDS + 30))
until [[ "$(code web.example.com "$N2_HTTP")" == 200 ]]; do
    ((SECONDS < deadline)) || die "edge-2 never served web.example.com: $(tail -5 "$WORK/n2.err")"
    sleep 0.1
done
N1_HTTPS_PORT="${N1_HTTPS##*:}"
# traffic: one round of every kind of request.
traffic() {
    local got
    got="$(code hello.localhost "$N1_HTTP")"
    [[ "$got" == 200 ]] || die "hello.localhost answered $got"
    got="$(code web.example.com "$N2_HTTP")"
    [[ "$got" == 200 ]] || die "web.example.com answered $got"
    got="$(code nobody.localhost "$N1_HTTP")"
    [[ "$got" == 404 ]] || die "an unknown host answered $got, not 404"
    got="$(curl -sk -o /dev/null --max-time 5 -w '%{http_code}' \
        --resolve "hello.localhost:$N1_HTTPS_PORT:127.0.0.1" "https://hello.localhost:$N1_HTTPS_PORT/" || true)"
    [[ "$got" == 200 ]] || die "https://hello.localhost answered $got"
}
traffic
# One limit kill, before Prometheus starts: the kill series has a value, and
# no kill rate (OutpostAppLimitKillStorm) is pending during the check.
got="$(code hello.localhost "$N1_HTTP" --data-binary 'more than sixteen bytes of body')"
[[ "$got" == 413 ]] || die "an oversized body answered $got, not 413"
log "traffic answered: 200 (both nodes, HTTP and HTTPS), 404 unknown host, 413 request_body"

# promtool check metrics: exit 1 is a parse error (fails), 3 lint problems (warnings).
for target in "control plane=$CP" "edge node 1=$N1_METRICS" "edge node 2=$N2_METRICS"; do
    name="${target%%=*}"
    addr="${target#*=}"
    curl -sS --max-time 10 "http://$addr/metrics" >"$WORK/scrape.txt" || die "GET http://$addr/metrics failed"
    rc=0
    promtool check metrics <"$WORK/scrape.txt" >"$WORK/lint.txt" 2>&1 || rc=$?
    families="$(grep -c '^# TYPE outpost_' "$WORK/scrape.txt" || true)"
    case "$rc" in
    0) log "promtool check metrics, $name ($addr): OK, $families outpost_* families" ;;
    3)
        log "promtool check metrics, $name ($addr): $families families, lint warnings:"
        sed 's/^/  WARNING: /' "$WORK/lint.txt" >&2
        ;;
    *)
        cat "$WORK/lint.txt" >&2
        die "promtool check metrics: $name's /metrics does not parse (exit $rc)"
        ;;
    esac
done

# --- 4. a real Prometheus --------------------------------------------------------
PROM_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $ROOT/deploy/prometheus/alerts.yml
scrape_configs:
  - job_name: outpost-edge-node
    static_configs:
      - targets: ['$N1_METRICS', '$N2_METRICS']
  - job_name: outpost-control-plane
    static_configs:
      - targets: ['$CP']
EOF
log "starting Prometheus on 127.0.0.1:$PROM_PORT (scrapes every 1 s)"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prom.log" 2>&1 &
PIDS+=($!)
PROM="http://127.0.0.1:$PROM_PORT"
deadline=$((SECONDS + 30))
until curl -sf --max-time 2 "$PROM/-/ready" >/dev/null; do
    ((SECONDS < deadline)) || {
        tail -20 "$WORK/prom.log" >&2
        die "Prometheus never became ready"
    }
    sleep 0.2
done

# Prometheus applies its targets a few seconds after it is ready: wait for
# the first scrape of all three, so the traffic below lands in the rates.
deadline=$((SECONDS + 30))
until curl -sf --max-time 2 "$PROM/api/v1/query" --data-urlencode 'query=count(up == 1) == 3' |
    grep -q '"value"'; do
    ((SECONDS < deadline)) || {
        tail -20 "$WORK/prom.log" >&2
        die "Prometheus never scraped all three targets"
    }
    sleep 0.2
done

log "all three targets scraped; sending traffic for ${TRAFFIC_SECONDS} s"
end=$((SECONDS + TRAFFIC_SECONDS))
rounds=0
while ((SECONDS < end)); do
    traffic
    rounds=$((rounds + 1))
    sleep 0.05
done
log "$rounds rounds of traffic sent; one more scrape, then the queries"
sleep 2

log "querying Prometheus"
python3 - "$PROM" "$ROOT" <<'PY'
import json, pathlib, re, sys, urllib.parse, urllib.request

prom, root = sys.argv[1], pathlib.Path(sys.argv[2])
failures = []


def api(path, **params):
    url = f"{prom}{path}?{urllib.parse.urlencode(params)}" if params else f"{prom}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)


def query(expr):
    body = api("/api/v1/query", query=expr)
    if body.get("status") != "success":
        raise ValueError(f"{body.get('errorType')}: {body.get('error')}")
    return body["data"]["result"]


def show(expr, check, why):
    """Prints each series of `expr`; `check(value)` must hold for all (and some must exist)."""
    try:
        result = query(expr)
    except ValueError as e:
        failures.append(f"{expr}: {e}")
        print(f"  FAIL {expr}: {e}")
        return
    ok = bool(result) and all(check(float(s["value"][1])) for s in result)
    print(f"  {'ok  ' if ok else 'FAIL'} {expr}    ({why})")
    for s in result:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s["metric"].items()))
        print(f"         {{{labels}}} {s['value'][1]}")
    if not result:
        print("         (no series)")
    if not ok:
        failures.append(f"{expr}: expected {why}")


show('up{job=~"outpost-edge-node|outpost-control-plane"}', lambda v: v == 1, "== 1, every target")
show('count by (job) (up{job=~"outpost-edge-node|outpost-control-plane"})', lambda v: v >= 1, "both jobs scraped")
show("sum by (tenant, app) (outpost_http_requests_total)", lambda v: v > 0, "> 0")
show('sum by (tenant, app) (rate(outpost_http_requests_total{status="2xx"}[10s]))', lambda v: v > 0, "> 0 req/s")
show("sum by (tenant, app, status) (outpost_http_requests_total) > 0", lambda v: v > 0, "2xx, and hello's 4xx")
show("outpost_runtime_apps_loaded", lambda v: v == 1, "== 1 on each node")
show("histogram_quantile(0.99, sum by (tenant, app, le) (rate(outpost_http_request_duration_seconds_bucket[10s])))",
     lambda v: 0 < v < 5, "p99 seconds, 0 < p99 < 5")
show("sum by (tenant, app) (rate(outpost_runtime_fuel_consumed_total[10s]))", lambda v: v > 0, "> 0 fuel/s")
show("sum by (tenant, app, reason) (outpost_runtime_limit_kills_total) > 0", lambda v: v == 1, "== 1, the 413: request_body")
show("sum by (instance, reason) (outpost_http_unrouted_requests_total) > 0", lambda v: v > 0, "the 404s: unknown_host")
show("sum by (instance, result, version) (outpost_tls_handshakes_total{result=\"ok\"}) > 0", lambda v: v > 0, "> 0, HTTPS on node 1 (every result and version exists from the start, at 0)")
show("count(outpost_tls_handshakes_total == 0)", lambda v: v > 0, "the results no handshake had yet, present at 0")
show("outpost_tls_certificate_expiry_timestamp_seconds", lambda v: v >= 0, ">= 0 (0: no HTTPS on edge-2)")
show("outpost_cp_deployments_total", lambda v: v == 1, "== 1, acme's deploy")
show("outpost_cp_revision", lambda v: v > 0, "> 0")
show("outpost_cp_node_lag_revisions", lambda v: v == 0, "== 0, edge-2 is current")
show("outpost_sync_lag_revisions", lambda v: v == 0, "== 0 on both nodes")
show("outpost_cp_watch_streams", lambda v: v == 1, "== 1, edge-2")

# Every rule loaded and evaluated without error; nothing pending or firing.
groups = api("/api/v1/rules")["data"]["groups"]
rules = [r for g in groups for r in g["rules"]]
bad = [f"{r['name']}: {r.get('lastError')}" for r in rules if r.get("health") != "ok"]
print(f"  {'ok  ' if not bad else 'FAIL'} {len(rules)} alert rules in {len(groups)} groups loaded, health ok: {len(rules) - len(bad)}")
failures += [f"rule {b}" for b in bad]
alerts = api("/api/v1/alerts")["data"]["alerts"]
for a in alerts:
    print(f"  FAIL alert {a['labels'].get('alertname')} is {a['state']}: {a['labels']}")
    failures.append(f"alert {a['labels'].get('alertname')} {a['state']} on a healthy setup")
if not alerts:
    print("  ok   no alert pending or firing")

# Every dashboard and alert expression is valid PromQL here (Grafana's
# variables replaced); count those that return data.
subst = {"$__rate_interval": "10s", "$__range": "1m", "$__interval": "1s"}
exprs = []
for f in sorted((root / "deploy/grafana/dashboards").glob("*.json")):
    d = json.loads(f.read_text())
    stack = list(d.get("panels", []))
    while stack:
        p = stack.pop()
        stack += p.get("panels", [])
        for t in p.get("targets", []):
            exprs.append((f"{f.name}: {p['title']}", t["expr"]))
rule_exprs = [(f"alerts.yml: {r['name']}", r["query"]) for r in rules]
empty = []
for owner, expr in exprs + rule_exprs:
    q = expr
    for k, v in subst.items():
        q = q.replace(k, v)
    q = re.sub(r"\$\{?[A-Za-z_]+\}?", ".*", q)
    try:
        if not query(q):
            empty.append(owner)
    except ValueError as e:
        failures.append(f"{owner}: {e}")
        print(f"  FAIL {owner}: {e}")
total = len(exprs) + len(rule_exprs)
print(f"  ok   {len(exprs)} dashboard queries and {len(rule_exprs)} alert expressions are valid PromQL; "
      f"{total - len(empty)} of the {total} return data now")
for owner in empty:
    print(f"         empty now (nothing to show on a healthy setup): {owner}")

if failures:
    print(f"\n{len(failures)} failure(s):")
    for f in failures:
        print(f"  - {f}")
    sys.exit(1)
PY
log "OK"
