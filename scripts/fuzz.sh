#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and runs each for a bounded time,
# then prints one line per target: runs, seconds, execs/s, crashes.
# Exits non-zero if any target crashed (libFuzzer stops at the first crash
# and saves the input under fuzz/artifacts/<target>/).
#
#   FUZZ_SECONDS=60        time per target
#   FUZZ_TARGETS="a b"     which targets (default: all of `cargo fuzz list`)
#   FUZZ_SANITIZER=none    none (default) or address; see fuzz/README.md
#   FUZZ_NO_BUILD=1        run what fuzz/target already holds
#
# Nothing here touches the network except installing cargo-fuzz once.
set -euo pipefail
SCRIPT_NAME=fuzz
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
SANITIZER="${FUZZ_SANITIZER:-none}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

cd "$ROOT/fuzz"
# Release with debug assertions (overflow checks on).
FLAGS=(-s "$SANITIZER" -O -a)
if [[ -n "${FUZZ_TARGETS:-}" ]]; then
    read -r -a TARGETS <<<"$FUZZ_TARGETS"
else
    mapfile -t TARGETS < <(cargo +nightly fuzz list)
fi

# One build of every target, then the binaries are run directly: `cargo
# fuzz run` would re-check (and, in a tree others edit, rebuild) each time.
if [[ "${FUZZ_NO_BUILD:-0}" != 1 ]]; then
    log "building (sanitizer: $SANITIZER)"
    cargo +nightly fuzz build "${FLAGS[@]}" >&2
fi
BIN_DIR="target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"

# The number after `stat::NAME:` in a libFuzzer log, or 0 if it is absent.
libfuzzer_stat() { grep -oE "stat::$1: *[0-9]+" "$2" | grep -oE '[0-9]+$' | tail -1 || echo 0; }

ROWS=()
FAILED=0
for target in "${TARGETS[@]}"; do
    out="$WORK/$target.log"
    mkdir -p "artifacts/$target"
    before="$(find "artifacts/$target" -type f | wc -l)"
    log "running $target for ${SECONDS_PER_TARGET}s"
    started=$SECONDS
    status=0
    mkdir -p "corpus/$target"
    "$BIN_DIR/$target" -artifact_prefix="artifacts/$target/" \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=60 -rss_limit_mb=4096 \
        -print_final_stats=1 "corpus/$target" >"$out" 2>&1 || status=$?
    took=$((SECONDS - started))
    crashes=$(($(find "artifacts/$target" -type f | wc -l) - before))
    if ((status != 0 && crashes == 0)); then crashes=1; fi
    if ((crashes > 0)); then
        FAILED=1
        log "$target crashed; its log:"
        tail -n 60 "$out" >&2
    fi
    runs="$(libfuzzer_stat number_of_executed_units "$out")"
    ROWS+=("$(printf '%-16s %12s %8s %10s %8s' "$target" "$runs" "$took" "$((runs / (took > 0 ? took : 1)))" "$crashes")")
done

printf '%-16s %12s %8s %10s %8s\n' target runs seconds runs/s crashes
printf '%s\n' "${ROWS[@]}"
exit "$FAILED"
