#!/usr/bin/env bash
# The README's test command: installs what the tests start or the build
# needs, then runs every test of the workspace.
#
#   bash scripts/test.sh [cargo test arguments…]
#   bash scripts/test.sh --install-only    # what CI runs before clippy
#
# From Debian, only when missing (apt-get, so as root, or with sudo):
#   etcd-server        the etcd the store tests start on loopback ports
#   docker-registry    the OCI registry (CNCF distribution) the module tests start
#   protobuf-compiler  protoc, which the etcd client's build script needs
#   libprotobuf-dev    the well-known .proto files that build imports
#   prometheus         promtool, which checks the nodes' and control plane's /metrics
# Nothing is started system-wide: the tests start and stop their own.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v etcd > /dev/null || need+=(etcd-server)
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
command -v protoc > /dev/null || need+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v promtool > /dev/null || need+=(prometheus)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "scripts/test.sh: installing ${need[*]} (apt-get)" >&2
  "${sudo[@]}" apt-get update -qq
  # The packages' own services are not wanted: policy-rc.d keeps the
  # maintainer scripts from starting them where that is honoured.
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

[ "${1:-}" = --install-only ] && exit 0
exec cargo test --workspace "$@"
