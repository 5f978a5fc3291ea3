#!/bin/sh
# Builds app.py into build/app.wasm, a wasi:http/proxy component, with
# componentize-py from this project's own virtualenv (.venv): packages
# installed globally (say, an SDK shipping its own componentize-py.toml)
# cannot change or break the build.
# `outpost build` runs this (see [build] in outpost.toml); so can you.
set -eu
command -v python3 >/dev/null 2>&1 || {
    echo "build.sh: python3 not found; install it with: apt-get install python3 python3-venv" >&2
    exit 127
}
if [ ! -x .venv/bin/componentize-py ]; then
    echo "build.sh: creating .venv with componentize-py 0.25.1 (once)" >&2
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check componentize-py==0.25.1 >&2
fi
mkdir -p build
.venv/bin/componentize-py -d wit -w app componentize app -o build/app.wasm >&2
rm -rf __pycache__
