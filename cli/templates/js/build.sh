#!/bin/sh
# Builds app.js into build/app.wasm, a wasi:http/proxy component, with
# componentize-js from this project's own node_modules (nothing global is
# used, so nothing installed elsewhere can change the build).
# `outpost build` runs this (see [build] in outpost.toml); so can you.
set -eu
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || {
    echo "build.sh: node and npm not found; install them with: apt-get install nodejs npm" >&2
    exit 127
}
if [ ! -f node_modules/@bytecodealliance/componentize-js/src/cli.js ]; then
    echo "build.sh: npm install (componentize-js, once; ~400 MB)" >&2
    npm install --prefer-offline --no-audit --no-fund --loglevel=error >&2
fi
mkdir -p build
node node_modules/@bytecodealliance/componentize-js/src/cli.js app.js \
    --wit wit --world-name app -o build/app.wasm >&2
