#!/usr/bin/env bash
# HTTPS end to end with curl, the way an operator would check it: a real
# control plane and a real edge node (sync mode, --https) on loopback, two
# tenants each uploading its own certificate (issued by a throwaway openssl
# CA), then curl --resolve over HTTP/1.1 and HTTP/2 must reach each
# tenant's worker with that tenant's certificate. Also checks: an unknown
# name gets the node's default certificate (and a 404), a Host of another
# tenant than the SNI name gets 421, and a rotated certificate is served
# without a restart.
#
#   bash scripts/tls-curl.sh                  # debug binaries (built if missing)
#   TLS_PROFILE=release bash scripts/tls-curl.sh
#
# Needs curl (with HTTP/2) and openssl; loopback only; bounded (~30 s).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PROFILE="${TLS_PROFILE:-debug}"
BIN="$ROOT/target/$PROFILE"
ADMIN=admin-token-0123456789abcdef
NODE=node-token-0123456789abcdef

SCRIPT_NAME=tls-curl
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

for tool in curl openssl; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
curl --version | grep -q HTTP2 || die "this curl has no HTTP/2"

if [[ ! -x "$BIN/edge-node" || ! -x "$BIN/control-plane" || -n "${TLS_BUILD:-}" ]]; then
    flag=""
    [[ "$PROFILE" == release ]] && flag="--release"
    log "building control-plane and edge-node ($PROFILE)"
    # shellcheck disable=SC2086
    cargo build -j2 $flag -p outpost-control-plane -p outpost-edge-node
fi


log "issuing certificates from a throwaway CA"
cd "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=outpost-test-ca -keyout ca.key -out ca.pem 2>/dev/null
issue() { # issue NAME HOST
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile <(printf 'subjectAltName=DNS:%s' "$2") -out "$1.pem" 2>/dev/null
}
issue a a.example.com
issue b b.example.com
issue a2 a.example.com
cd "$ROOT"

log "starting the control plane"
"$BIN/control-plane" --listen 127.0.0.1:0 --data-dir "$WORK/data" \
    --admin-token "$ADMIN" --node-token "$NODE" >"$WORK/cp.out" 2>"$WORK/cp.err" &
PIDS+=($!)
CP="http://$(wait_for "$WORK/cp.out" 'Listening on http://[0-9.:]+')"

api() { # api METHOD PATH TOKEN [curl args…]
    local method="$1" path="$2" token="$3"
    shift 3
    curl -sS --fail-with-body -X "$method" -H "Authorization: Bearer $token" "$@" "$CP$path"
}
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
cert_body() { # cert_body NAME → the JSON of an upload
    python3 -c "import json,sys; print(json.dumps({'cert_chain_pem': open(sys.argv[1]).read(), 'private_key_pem': open(sys.argv[2]).read()}))" \
        "$WORK/$1.pem" "$WORK/$1.key"
}

declare -A TOKENS
for tenant in acme beta; do
    host="a.example.com"
    [[ "$tenant" == beta ]] && host="b.example.com"
    token="$(api POST /v1/tenants "$ADMIN" -H 'content-type: application/json' \
        -d "{\"name\":\"$tenant\",\"domains\":[\"$host\"]}" | json_field token)"
    api POST /v1/apps "$token" -H 'content-type: application/json' \
        -d "{\"name\":\"web\",\"routes\":[\"$host\"]}" >/dev/null
    api PUT /v1/apps/web/env "$token" -H 'content-type: application/json' \
        -d "{\"GREETING\":\"hello from $tenant\"}" >/dev/null
    api POST /v1/apps/web/deployments "$token" -H 'content-type: application/wasm' \
        --data-binary @guests/c/echo/echo.wasm >/dev/null
    TOKENS[$tenant]="$token"
done
cert_body a | api PUT /v1/certificates/a.example.com "${TOKENS[acme]}" \
    -H 'content-type: application/json' -d @- >/dev/null
cert_body b | api PUT /v1/certificates/b.example.com "${TOKENS[beta]}" \
    -H 'content-type: application/json' -d @- >/dev/null
log "two tenants, two apps, two certificates uploaded"

log "starting an edge node in sync mode with HTTPS"
"$BIN/edge-node" --control-plane "$CP" --node-token "$NODE" --node-id edge-1 \
    --cache-dir "$WORK/node-cache" --http 127.0.0.1:0 --https 127.0.0.1:0 \
    --metrics 127.0.0.1:0 >"$WORK/node.out" 2>"$WORK/node.err" &
PIDS+=($!)
HTTPS="$(wait_for "$WORK/node.out" 'Listening on https://[0-9.:]+')"
METRICS="$(wait_for "$WORK/node.out" 'Metrics on http://[0-9.:]+')"
PORT="${HTTPS##*:}"

# fetch HOST SNI-HOST [curl flags…]: the body, then a line "STATUS VERSION";
# curl's -v trace (certificate, response headers) in $WORK/curl.err.
fetch() {
    local host="$1" sni="$2"
    shift 2
    curl -sS --max-time 10 --cacert "$WORK/ca.pem" \
        --resolve "$sni:$PORT:127.0.0.1" -H "Host: $host" \
        -w '\n%{http_code} %{http_version}\n' -v "$@" "https://$sni:$PORT/" \
        2>"$WORK/curl.err"
}
serial_of() { openssl x509 -in "$WORK/$1.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f'; }

# Wait until the node serves both tenants over HTTPS (it syncs after start).
deadline=$((SECONDS + 30))
until fetch a.example.com a.example.com --http1.1 2>/dev/null | grep -q "^200 "; do
    ((SECONDS < deadline)) || die "a.example.com never answered over HTTPS: $(cat "$WORK/curl.err")"
    sleep 0.1
done

check() { # check HOST FLAG WANT_VERSION WANT_CERT_SUBJECT
    local host="$1" flag="$2" want_version="$3" want_cn="$4" out
    out="$(fetch "$host" "$host" "$flag")" || die "curl $flag https://$host failed: $(cat "$WORK/curl.err")"
    local last
    last="$(tail -1 <<<"$out")"
    [[ "$last" == "200 $want_version" ]] || die "$host $flag: got '$last'"
    grep -q "subject: CN=$want_cn" "$WORK/curl.err" || die "$host $flag: certificate is not CN=$want_cn: $(grep subject: "$WORK/curl.err")"
    grep -q "SSL certificate verify ok" "$WORK/curl.err" || die "$host $flag: certificate not verified"
    printf '  %-15s %-9s HTTP/%-3s %-26s %s\n' "$host" "$flag" "$want_version" "$(grep -o 'subject: CN=[^ ]*' "$WORK/curl.err")" \
        "$(head -1 <<<"$out" | cut -c1-60)"
}
log "curl over HTTP/1.1 and HTTP/2, each tenant with its own certificate:"
check a.example.com --http1.1 1.1 a.example.com
check a.example.com --http2 2 a.example.com
check b.example.com --http1.1 1.1 b.example.com
check b.example.com --http2 2 b.example.com
fetch a.example.com a.example.com --http2 >/dev/null
grep -qi '^< x-echo-env: hello from acme' "$WORK/curl.err" ||
    die "acme's worker did not see acme's env: $(grep '^<' "$WORK/curl.err")"
echo "  acme's worker answered with acme's env (x-echo-env: hello from acme)"

log "SNI a.example.com with Host b.example.com is misdirected:"
out="$(fetch b.example.com a.example.com --http2)"
[[ "$(tail -1 <<<"$out")" == "421 2" ]] || die "expected 421, got $(tail -1 <<<"$out")"
echo "  421 Misdirected Request"

log "an unknown name gets the node's default certificate (self-signed, so curl -k) and a 404:"
code="$(curl -sk -o /dev/null -w '%{http_code}' --resolve "zzz.example.com:$PORT:127.0.0.1" \
    "https://zzz.example.com:$PORT/")"
[[ "$code" == 404 ]] || die "unknown name answered $code"
if curl -s -o /dev/null --cacert "$WORK/ca.pem" --resolve "zzz.example.com:$PORT:127.0.0.1" \
    "https://zzz.example.com:$PORT/"; then
    die "the default certificate verified against the tenants' CA"
fi
echo "  404, default certificate (not trusted by the tenants' CA)"

log "rotating acme's certificate without a restart:"
old_serial="$(serial_of a)"
new_serial="$(serial_of a2)"
cert_body a2 | api PUT /v1/certificates/a.example.com "${TOKENS[acme]}" \
    -H 'content-type: application/json' -d @- >/dev/null
deadline=$((SECONDS + 30))
while :; do
    presented="$(echo | openssl s_client -connect "127.0.0.1:$PORT" -servername a.example.com 2>/dev/null |
        openssl x509 -noout -serial 2>/dev/null | cut -d= -f2 | tr 'A-F' 'a-f')"
    [[ "$presented" == "$new_serial" ]] && break
    ((SECONDS < deadline)) || die "still serving serial $presented (old $old_serial, new $new_serial)"
    sleep 0.1
done
echo "  serial $old_serial -> $new_serial, no restart"

log "node metrics:"
curl -s "http://$METRICS/metrics" | grep -E '^outpost_tls_(handshakes_total|certificates_loaded|certificate_expiry_timestamp_seconds)' | sed 's/^/  /'
log "OK"
