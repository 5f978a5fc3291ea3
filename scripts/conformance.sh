#!/usr/bin/env bash
# API conformance: runs schemathesis against the real control-plane binary
# and its own /v1/openapi.json, on loopback only.
#
#   1. creates (or reuses) a Python venv in target/conformance-venv with a
#      pinned schemathesis;
#   2. builds and starts `control-plane` on 127.0.0.1:0 with a temp data
#      dir, creates tenant `acme` with app `web` and deploys
#      guests/c/hello/hello.wasm, so reads have something to return;
#   3. runs schemathesis with every check four times: with the admin token,
#      the tenant token and the node token (each against a fresh control
#      plane, see below), then with a wrong token, where every answer must
#      be 401 — or 429 once the address presented more than 20 unknown
#      tokens, which is the documented token-guessing lockout.
#
# Each authenticated run gets its own control plane because schemathesis's
# `ignored_auth` check probes operations with invalid tokens: enough of them
# from one address trip the lockout, and every later answer would be 429.
#
# Not checked by schemathesis: GET /v1/nodes/watch and
# GET /v1/apps/{app}/logs, because `follow=true` (and watch, always) is an
# endless stream that no generated request would see the end of; their
# errors are covered by control-plane/tests/all/api.rs.
#
#   bash scripts/conformance.sh
#   CONFORMANCE_EXAMPLES=50 bash scripts/conformance.sh   # more cases per operation
#   CONFORMANCE_BIN=target/debug/control-plane bash scripts/conformance.sh  # no build
#
# Needs python3 (venv) and curl; network only for the first pip install.
# Bounded: a few minutes with the default budget.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
SCHEMATHESIS_VERSION=4.32.5
VENV="$ROOT/target/conformance-venv"
EXAMPLES="${CONFORMANCE_EXAMPLES:-20}"
# Seconds per schemathesis run: fuzzing repeats until it is spent.
BUDGET="${CONFORMANCE_SECONDS:-45}"
ADMIN=admin-token-0123456789abcdef
NODE=node-token-0123456789abcdef

SCRIPT_NAME=conformance
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

for tool in curl python3; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done

if ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi
log "$("$VENV/bin/st" --version)"

BIN="${CONFORMANCE_BIN:-}"
if [[ -z "$BIN" ]]; then
    log "building control-plane"
    cargo build -j2 --quiet -p outpost-control-plane --bin control-plane
    BIN="$ROOT/target/debug/control-plane"
fi

# Hooks: deployments are raw wasm bytes, sent as such; and the check for
# the wrong-token run.
cat >"$WORK/outpost_hooks.py" <<'EOF'
import os

import schemathesis

schemathesis.serializer.alias("application/wasm", "application/octet-stream")


@schemathesis.check
def only_refusals(ctx, response, case):
    """With OUTPOST_EXPECT_REFUSAL set, every answer is 401 or the lockout's 429.

    Requests with a method the path does not serve are 405 before any token
    is looked at: routing comes first, and says nothing about the token.
    """
    if not os.environ.get("OUTPOST_EXPECT_REFUSAL"):
        return None
    allowed = (401, 429)
    if response.request.method.upper() != case.operation.method.upper():
        allowed = (405,)
    if response.status_code not in allowed:
        raise AssertionError(f"expected one of {allowed}, got {response.status_code}")
    return None
EOF

# Two operations take input whose validity no schema can state: a
# component (it must compile and export the handler) and a certificate
# (PEM that parses, matches its key and covers the hostname, which must
# be one of the tenant's routes). Schema-valid input there may rightly be
# refused with the documented 400; every other operation must accept all
# schema-valid input.
cat >"$WORK/schemathesis.toml" <<'EOF'
[[operations]]
include-name = "POST /v1/apps/{app}/deployments"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]

[[operations]]
include-name = "PUT /v1/certificates/{hostname}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]
EOF

# start_cp NAME: starts a control plane with data in $WORK/NAME; sets CP.
start_cp() {
    local name="$1"
    "$BIN" --listen 127.0.0.1:0 --data-dir "$WORK/$name" \
        --admin-token "$ADMIN" --node-token "$NODE" \
        >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    CP_PID=$!
    CP="http://$(wait_for "$WORK/$name.out" 'Listening on http://[0-9.:]+')"
}

stop_cp() {
    kill -TERM "$CP_PID" 2>/dev/null || true
    wait "$CP_PID" 2>/dev/null || true
}

api() { # api METHOD PATH TOKEN [curl args…]
    local method="$1" path="$2" token="$3"
    shift 3
    curl -sS --fail-with-body -X "$method" -H "Authorization: Bearer $token" "$@" "$CP$path"
}

# seed: tenant acme, app web on web.example.com, hello.wasm deployed, one
# node report; sets TENANT to acme's token.
seed() {
    TENANT="$(api POST /v1/tenants "$ADMIN" -H 'content-type: application/json' \
        -d '{"name":"acme","domains":["example.com"]}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
    api POST /v1/apps "$TENANT" -H 'content-type: application/json' \
        -d '{"name":"web","routes":["web.example.com"]}' >/dev/null
    api PUT /v1/apps/web/env "$TENANT" -H 'content-type: application/json' \
        -d '{"GREETING":"hi"}' >/dev/null
    api POST /v1/apps/web/deployments "$TENANT" -H 'content-type: application/wasm' \
        --data-binary @guests/c/hello/hello.wasm >/dev/null
    api PUT /v1/nodes/edge-1/status "$NODE" -H 'content-type: application/json' \
        -d '{"applied_revision":1}' >/dev/null
}

FAILED=()
# run_st LABEL TOKEN [extra st args…]: one schemathesis run; its output
# is kept in target/conformance-LABEL.log and its summary echoed.
run_st() {
    local label="$1" token="$2"
    shift 2
    log "schemathesis as $label: $EXAMPLES examples per operation, ${BUDGET}s budget"
    local rc=0
    # From $WORK: schemathesis keeps its cache in the current directory.
    (cd "$WORK" && PYTHONPATH="$WORK" SCHEMATHESIS_HOOKS=outpost_hooks \
        "$VENV/bin/st" --no-color --config-file "$WORK/schemathesis.toml" run "$CP/v1/openapi.json" \
        --checks all \
        --header "Authorization: Bearer $token" \
        --max-examples "$EXAMPLES" --max-time "$BUDGET" \
        --seed 42 --workers 1 --request-timeout 10 \
        --exclude-path /v1/nodes/watch --exclude-path '/v1/apps/{app}/logs' \
        --warnings off \
        "$@") >"$WORK/$label.log" 2>&1 || rc=$?
    cp "$WORK/$label.log" "$ROOT/target/conformance-$label.log"
    sed -n '/SUMMARY/,$p' "$WORK/$label.log" >&2
    ((rc == 0)) || FAILED+=("$label (full output in target/conformance-$label.log)")
}

for who in admin tenant node; do
    start_cp "$who"
    seed
    case "$who" in
    admin) run_st admin "$ADMIN" ;;
    tenant) run_st tenant "$TENANT" ;;
    node) run_st node "$NODE" --include-tag nodes ;;
    esac
    stop_cp
done

start_cp wrong
seed
# Once locked out, a request without any token is 429 too, while
# schemathesis's missing_required_header insists on 401 for a missing
# Authorization header; the authenticated runs above check that 401.
OUTPOST_EXPECT_REFUSAL=1 run_st wrong-token "wrong-token-$RANDOM$RANDOM" \
    --phases examples,coverage,fuzzing --exclude-checks missing_required_header
stop_cp

((${#FAILED[@]} == 0)) || die "schemathesis found problems: ${FAILED[*]}"
log "all runs passed"
