#!/usr/bin/env bash
# One etcd member on loopback, for trying the etcd store by hand: data in
# DIR, clients on CLIENT_PORT, peers on PEER_PORT. Prints
# `Listening on http://127.0.0.1:CLIENT_PORT/` once etcd answers healthy,
# then stays in the foreground until interrupted (Ctrl-C stops etcd; DIR
# is kept, so running it again resumes the same data).
#
#   bash scripts/etcd.sh /tmp/etcd-data 2379 2380
#
# Needs Debian's etcd-server (apt-get install etcd-server).
set -euo pipefail
SCRIPT_NAME=etcd
log() { printf '[%s %(%H:%M:%S)T] %s\n' "$SCRIPT_NAME" -1 "$*" >&2; }
die() {
    log "FAILED: $*"
    exit 1
}

[[ $# -eq 3 ]] || die "usage: $0 DIR CLIENT_PORT PEER_PORT"
DIR="$1" CLIENT="http://127.0.0.1:$2" PEER="http://127.0.0.1:$3"
ETCD="$(command -v etcd || true)"
[[ -n "$ETCD" ]] || die "etcd not found: apt-get install etcd-server"
command -v curl >/dev/null || die "curl is not installed"
mkdir -p "$DIR"

"$ETCD" --name outpost --data-dir "$DIR/member-data" \
    --listen-client-urls "$CLIENT" --advertise-client-urls "$CLIENT" \
    --listen-peer-urls "$PEER" --initial-advertise-peer-urls "$PEER" \
    --initial-cluster "outpost=$PEER" --initial-cluster-state new \
    --logger zap --log-outputs stderr 2>"$DIR/etcd.log" &
PID=$!
trap 'kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true' EXIT
trap 'exit 143' TERM INT

deadline=$((SECONDS + 20))
until curl -fsS "$CLIENT/health" 2>/dev/null | grep -q '"health":"true"'; do
    kill -0 "$PID" 2>/dev/null || { tail -20 "$DIR/etcd.log" >&2; die "etcd exited"; }
    ((SECONDS < deadline)) || { tail -20 "$DIR/etcd.log" >&2; die "etcd not healthy in 20 s"; }
    sleep 0.1
done
echo "Listening on $CLIENT/"
wait "$PID"
