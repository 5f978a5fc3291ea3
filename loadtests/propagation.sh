#!/usr/bin/env bash
# Deploy-to-served propagation (100 deploys, two nodes) and a deploy storm
# (100 apps deployed while traffic flows), with a real control plane and two
# real edge nodes in-process on loopback. Bounded: 100 deploys, 100 apps.
#
#   bash loadtests/propagation.sh            # release build (the numbers in README.md)
#   PROFILE=dev bash loadtests/propagation.sh
set -euo pipefail
cd "$(dirname "$0")/.."
profile_flag="--release"
if [[ "${PROFILE:-release}" == "dev" ]]; then profile_flag=""; fi
echo "RUST_BACKTRACE=${RUST_BACKTRACE:-unset}; profile: ${PROFILE:-release}"
# shellcheck disable=SC2086
cargo test -j2 $profile_flag -p outpost-e2e --test all propagation:: -- \
  --ignored --nocapture --test-threads 1 2>&1 |
  grep -E 'propagation over|deploy storm|test result|panicked|FAILED'
