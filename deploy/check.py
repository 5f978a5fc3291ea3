#!/usr/bin/env python3
"""Structural checks for deploy/, run by deploy/check.sh.

Each subcommand prints what it checked, one line per problem prefixed with
"FAIL:" (and "note:" for things worth knowing), and exits 1 if it found a
problem. Only the standard library and PyYAML are used.

  check.py yaml FILE...                      every file parses as YAML
  check.py compose                           compose.yaml against the files it names
  check.py k8s                               k8s/*.yaml: names, refs, probes, ports, security
  check.py dockerfiles METADATA_JSON         Dockerfiles against `cargo metadata`
  check.py copy-sources DOCKERFILE           print the build-stage COPY sources
  check.py envvars CP_HELP EDGE_HELP         every OUTPOST_* used is a real variable
  check.py xref                              job names shared by scrapes, alerts, dashboards
  check.py grafana                           provisioning files against compose.yaml
  check.py node-id-script                    print the DaemonSet's node-id shell script
  check.py k8s-prometheus-config OUT [--no-k8s-sd]
                                             write the k8s ConfigMap's prometheus.yml
  check.py systemd-env UNIT ENVFILE          print KEY=VALUE the unit would give the binary
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys

try:
    import yaml
except ImportError:  # pragma: no cover - check.sh installs it
    print("FAIL: PyYAML is not importable (pip install pyyaml)")
    sys.exit(2)

DEPLOY = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DEPLOY)
K8S_NAMESPACE = "outpost"
JOBS = {"outpost-control-plane", "outpost-edge-node"}

problems: list[str] = []


def fail(msg: str) -> None:
    problems.append(msg)
    print(f"FAIL: {msg}")


def note(msg: str) -> None:
    print(f"note: {msg}")


def ok(msg: str) -> None:
    print(f"ok: {msg}")


def rel(path: str) -> str:
    return os.path.relpath(path, ROOT)


def load_all(path: str) -> list:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load(path: str):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


# --------------------------------------------------------------------- yaml
def cmd_yaml(files: list[str]) -> None:
    for path in files:
        try:
            docs = load_all(path)
        except yaml.YAMLError as e:
            fail(f"{rel(path)}: {e}")
            continue
        if not docs:
            fail(f"{rel(path)}: no YAML document")
        else:
            ok(f"{rel(path)}: {len(docs)} document(s)")


# ------------------------------------------------------------- dockerfiles
def dockerfile_instructions(path: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments
    (outside continuations) dropped."""
    out = []
    buf = ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if buf and line.lstrip().startswith("#"):
                continue
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            buf += line
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def dockerfile_stages(path: str) -> list[dict]:
    stages: list[dict] = []
    args: dict[str, str] = {}
    for ins, rest in dockerfile_instructions(path):
        if ins == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default.strip('"')
        if ins == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"image": image, "name": name, "ins": []})
        elif stages:
            stages[-1]["ins"].append((ins, rest))
    return stages


def copy_sources(rest: str) -> tuple[list[str], str | None, str]:
    words = rest.split()
    flags = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    frm = None
    for fl in flags:
        if fl.startswith("--from="):
            frm = fl.split("=", 1)[1]
    return paths[:-1], frm, paths[-1]


def dockerignore_allows(ignore: list[str], path: str) -> bool:
    """The last matching pattern wins ('!' re-includes); a path is also
    kept when a parent directory is re-included."""
    import fnmatch

    allowed = True
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in ignore:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.strip("/")
        if any(fnmatch.fnmatch(pre, p) for pre in prefixes):
            allowed = neg
    return allowed


def read_ignore(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [l.strip() for l in f if l.strip() and not l.lstrip().startswith("#")]


def cmd_copy_sources(dockerfile: str) -> None:
    stages = dockerfile_stages(dockerfile)
    for ins, rest in stages[0]["ins"]:
        if ins == "COPY":
            srcs, frm, _ = copy_sources(rest)
            if frm is None:
                for s in srcs:
                    print(s)


def cmd_dockerfiles(metadata_path: str) -> None:
    with open(metadata_path, encoding="utf-8") as f:
        meta = json.load(f)
    ws_root = meta["workspace_root"]
    packages = {p["name"]: p for p in meta["packages"]}
    member_dirs = {
        os.path.relpath(os.path.dirname(p["manifest_path"]), ws_root)
        for p in meta["packages"]
        if p["id"] in meta["workspace_members"]
    }
    rust_version = {p.get("rust_version") for p in meta["packages"]} - {None}
    expected = {"control-plane.Dockerfile": "control-plane", "edge-node.Dockerfile": "edge-node"}
    for fname, binary in expected.items():
        path = os.path.join(DEPLOY, fname)
        if not os.path.exists(path):
            fail(f"deploy/{fname} is missing")
            continue
        where = f"deploy/{fname}"
        stages = dockerfile_stages(path)
        if len(stages) < 2:
            fail(f"{where}: expected a multi-stage build (builder + runtime)")
            continue
        build, runtime = stages[0], stages[-1]
        ok(f"{where}: stages {[s['image'] for s in stages]}")
        m = re.match(r"rust:(\d+)\.(\d+)", build["image"])
        if not m:
            fail(f"{where}: builder image {build['image']} is not rust:X.Y-...")
        else:
            for rv in rust_version:
                if tuple(map(int, rv.split(".")[:2])) > (int(m.group(1)), int(m.group(2))):
                    fail(f"{where}: builder {build['image']} is older than rust-version {rv}")
        # COPY sources: exist, pass the dockerignore, cover every member.
        ignore = read_ignore(path + ".dockerignore")
        if not ignore:
            fail(f"{where}: no {fname}.dockerignore next to it (the whole repo, target/ included, would be sent)")
        copied = set()
        for ins, rest in build["ins"]:
            if ins != "COPY":
                continue
            srcs, frm, _ = copy_sources(rest)
            if frm:
                continue
            for s in srcs:
                copied.add(s.strip("/"))
                if not os.path.exists(os.path.join(ROOT, s)):
                    fail(f"{where}: COPY {s}: no such path in the repository")
                elif ignore and not dockerignore_allows(ignore, s):
                    fail(f"{where}: COPY {s}: excluded by {fname}.dockerignore")
        for d in sorted(member_dirs):
            if d not in copied and "." not in copied:
                fail(f"{where}: workspace member {d}/ is not copied (cargo cannot load the workspace)")
        for needed in ("Cargo.toml", "Cargo.lock"):
            if needed not in copied:
                fail(f"{where}: {needed} is not copied")
        if ignore:
            for junk in ("target", ".git", "deploy/.env", "guests/out", "loadtests/results"):
                if dockerignore_allows(ignore, junk):
                    fail(f"{where}: {junk} would be sent in the build context")
        # cargo build -p PKG --bin BIN, and the binary path.
        runs = " ".join(rest for ins, rest in build["ins"] if ins == "RUN")
        m = re.search(r"cargo build\b([^&;]*)", runs)
        if not m:
            fail(f"{where}: no `cargo build` in the builder stage")
            continue
        args = m.group(1).split()
        pkgs = [args[i + 1] for i, a in enumerate(args) if a in ("-p", "--package") and i + 1 < len(args)]
        bins = [args[i + 1] for i, a in enumerate(args) if a == "--bin" and i + 1 < len(args)]
        if "--release" not in args:
            fail(f"{where}: cargo build without --release")
        if "--locked" not in args:
            note(f"{where}: cargo build without --locked")
        if len(pkgs) != 1:
            fail(f"{where}: expected one -p PACKAGE, got {pkgs}")
            continue
        pkg = packages.get(pkgs[0])
        if pkg is None:
            fail(f"{where}: -p {pkgs[0]}: no such workspace package ({sorted(packages)})")
            continue
        pkg_bins = [t["name"] for t in pkg["targets"] if "bin" in t["kind"]]
        for b in bins:
            if b not in pkg_bins:
                fail(f"{where}: --bin {b}: package {pkg['name']} has bins {pkg_bins}")
        if binary not in pkg_bins:
            fail(f"{where}: package {pkg['name']} has no bin {binary}")
        if f"target/release/{binary}" not in runs:
            fail(f"{where}: target/release/{binary} is not what the builder installs")
        ok(f"{where}: cargo build -p {pkg['name']} --bin {','.join(bins)} (package and bin exist)")
        # Runtime stage.
        rins = runtime["ins"]
        copies = [copy_sources(r) for i, r in rins if i == "COPY"]
        if not any(frm == build["name"] and f"/usr/local/bin/{binary}" == dst for _, frm, dst in copies):
            fail(f"{where}: runtime stage does not COPY --from={build['name']} the binary to /usr/local/bin/{binary}")
        entry = [r for i, r in rins if i == "ENTRYPOINT"]
        if not entry or json.loads(entry[-1]) != [f"/usr/local/bin/{binary}"]:
            fail(f"{where}: ENTRYPOINT should be [\"/usr/local/bin/{binary}\"]")
        user = [r for i, r in rins if i == "USER"]
        if not user or user[-1].split(":")[0] in ("0", "root"):
            fail(f"{where}: runtime stage runs as root")
        env_text = " ".join(r for i, r in rins if i == "ENV")
        env = dict(re.findall(r"(\w+)=(\S+)", env_text))
        exposed = {p.split("/")[0] for i, r in rins if i == "EXPOSE" for p in r.split()}
        for var, val in env.items():
            if var in ("OUTPOST_LISTEN", "OUTPOST_HTTP", "OUTPOST_METRICS"):
                host, _, port = val.rpartition(":")
                if host not in ("0.0.0.0", "[::]"):
                    fail(f"{where}: {var}={val} does not bind every interface")
                if port not in exposed:
                    fail(f"{where}: {var} port {port} is not EXPOSEd ({sorted(exposed)})")
        hc = [r for i, r in rins if i == "HEALTHCHECK"]
        if not hc or "/healthz" not in hc[-1]:
            fail(f"{where}: no HEALTHCHECK on /healthz")
        else:
            var = "OUTPOST_LISTEN" if binary == "control-plane" else "OUTPOST_METRICS"
            if var not in hc[-1]:
                fail(f"{where}: HEALTHCHECK does not follow {var}")
            if not re.search(r"apt-get install[^&]*\bcurl\b", " ".join(r for i, r in rins if i == "RUN")):
                fail(f"{where}: HEALTHCHECK uses curl but the runtime stage does not install it")
        if not re.search(r"ca-certificates", " ".join(r for i, r in rins if i == "RUN")):
            fail(f"{where}: ca-certificates not installed")
        vols = " ".join(r for i, r in rins if i == "VOLUME")
        dir_var = "OUTPOST_DATA_DIR" if binary == "control-plane" else "OUTPOST_CACHE_DIR"
        if env.get(dir_var) and env[dir_var] not in vols:
            fail(f"{where}: {dir_var}={env.get(dir_var)} is not a VOLUME")
        ok(f"{where}: runtime stage {runtime['image']}: user {user[-1] if user else '?'}, EXPOSE {sorted(exposed)}, "
           f"HEALTHCHECK on /healthz, ENTRYPOINT /usr/local/bin/{binary}")


# ------------------------------------------------------------------ compose
def compose_file() -> dict:
    return load(os.path.join(DEPLOY, "compose.yaml"))


def interpolated_vars(text: str) -> dict[str, str]:
    """${VAR}, ${VAR:-default}, ${VAR:?message} -> {VAR: operator}."""
    out = {}
    for m in re.finditer(r"\$\{(\w+)(?:(:?[-?+])[^}]*)?\}", text):
        out.setdefault(m.group(1), m.group(2) or "")
        if m.group(2) and "?" in m.group(2):
            out[m.group(1)] = m.group(2)
    return out


def env_example() -> dict[str, tuple[str, bool]]:
    """KEY -> (value, commented) from deploy/.env.example."""
    out = {}
    with open(os.path.join(DEPLOY, ".env.example"), encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^(#?)([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
            if m:
                out[m.group(2)] = (m.group(3), m.group(1) == "#")
    return out


def exposed_ports(dockerfile: str) -> set[str]:
    stages = dockerfile_stages(os.path.join(ROOT, dockerfile))
    return {p.split("/")[0] for i, r in stages[-1]["ins"] if i == "EXPOSE" for p in r.split()}


def cmd_compose() -> None:
    path = os.path.join(DEPLOY, "compose.yaml")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    c = compose_file()
    allowed_top = {"name", "services", "volumes", "networks", "configs", "secrets", "include"}
    for k in c:
        if k not in allowed_top and not k.startswith("x-"):
            fail(f"compose.yaml: unknown top-level key {k}")
    services = c.get("services") or {}
    volumes = set((c.get("volumes") or {}).keys())
    for want in ("control-plane", "edge-1", "edge-2", "prometheus", "grafana"):
        if want not in services:
            fail(f"compose.yaml: no service {want}")
    for name, s in services.items():
        where = f"compose.yaml: service {name}"
        if "image" not in s and "build" not in s:
            fail(f"{where}: neither image nor build")
        b = s.get("build")
        if isinstance(b, dict):
            ctx = os.path.normpath(os.path.join(DEPLOY, b.get("context", ".")))
            df = os.path.join(ctx, b.get("dockerfile", "Dockerfile"))
            if not os.path.isdir(ctx):
                fail(f"{where}: build context {ctx} does not exist")
            if not os.path.isfile(df):
                fail(f"{where}: dockerfile {rel(df)} does not exist")
            else:
                exposed = exposed_ports(rel(df))
                for p in s.get("ports", []):
                    container = str(p).rsplit(":", 1)[-1].split("/")[0]
                    if container not in exposed:
                        fail(f"{where}: publishes container port {container}, not EXPOSEd by {rel(df)}")
        for v in s.get("volumes", []):
            src = str(v).split(":")[0]
            if src.startswith((".", "/")):
                hp = os.path.normpath(os.path.join(DEPLOY, src))
                if not os.path.exists(hp):
                    note(f"{where}: bind mount {src} does not exist yet (docker creates an empty directory)")
            elif src not in volumes:
                fail(f"{where}: named volume {src} is not declared under volumes:")
        deps = s.get("depends_on") or []
        for d, spec in (deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)):
            if d not in services:
                fail(f"{where}: depends_on unknown service {d}")
            elif spec.get("condition") == "service_healthy" and "healthcheck" not in services[d]:
                fail(f"{where}: waits for {d} to be healthy but {d} has no healthcheck")
        if name != "prometheus" and name != "grafana" and "healthcheck" not in s:
            fail(f"{where}: no healthcheck")
        env = s.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        for k, v in env.items():
            if k.startswith("OUTPOST_") and isinstance(v, str) and re.fullmatch(r"[\w.\-]+:\d+", v):
                host = v.rsplit(":", 1)[0]
                if k in ("OUTPOST_LISTEN", "OUTPOST_HTTP", "OUTPOST_HTTPS", "OUTPOST_METRICS") and host != "0.0.0.0":
                    fail(f"{where}: {k}={v}: inside a container bind 0.0.0.0")
        mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in s.get("volumes", []) if ":" in str(v)}
        for src in mounts.values():
            if src.endswith("ca.key"):
                fail(f"{where}: mounts the CA's private key {src}")
        if name == "control-plane":
            for k in ("OUTPOST_TLS_CERT", "OUTPOST_TLS_KEY"):
                if env.get(k) not in mounts:
                    fail(f"{where}: {k} {env.get(k)} is not a mounted file (the API serves HTTPS only)")
            if "OUTPOST_NODE_TOKEN" in env:
                fail(f"{where}: sets a shared node token; nodes use their own identities")
        if name.startswith("edge-"):
            for k in ("OUTPOST_CONTROL_PLANE", "OUTPOST_NODE_TOKEN", "OUTPOST_NODE_ID", "OUTPOST_CACHE_DIR", "OUTPOST_CA_FILE"):
                if k not in env:
                    fail(f"{where}: {k} is not set (sync mode needs it)")
            if env.get("OUTPOST_CA_FILE") not in mounts:
                fail(f"{where}: OUTPOST_CA_FILE {env.get('OUTPOST_CA_FILE')} is not a mounted file")
            cache = env.get("OUTPOST_CACHE_DIR")
            if cache and not any(str(v).split(":")[1:2] == [cache] for v in s.get("volumes", [])):
                fail(f"{where}: OUTPOST_CACHE_DIR {cache} is not on a volume")
            cp = env.get("OUTPOST_CONTROL_PLANE", "")
            m = re.match(r"https://([\w\-]+):(\d+)$", cp)
            if not m or m.group(1) not in services:
                fail(f"{where}: OUTPOST_CONTROL_PLANE {cp} is not https://SERVICE:PORT of this file")
            for p in s.get("ports", []):
                if str(p).endswith(":9100"):
                    fail(f"{where}: publishes the metrics listener")
    ids = [(services[n].get("environment") or {}).get("OUTPOST_NODE_ID") for n in services if n.startswith("edge-")]
    if len(ids) != len(set(ids)):
        fail(f"compose.yaml: edge node ids are not unique: {ids}")
    caches = [tuple(services[n].get("volumes", [])) for n in services if n.startswith("edge-")]
    if len(caches) != len(set(caches)):
        fail("compose.yaml: edge nodes share a cache volume")
    # Interpolated variables are documented in .env.example; secrets empty.
    used = interpolated_vars(text)
    example = env_example()
    for var, op in sorted(used.items()):
        if var not in example:
            fail(f"compose.yaml uses ${{{var}}} but .env.example does not mention it")
        elif "?" in op:
            value, commented = example[var]
            if commented or value:
                fail(f".env.example: required {var} must be present and empty (no committed secret)")
    for var in example:
        if var not in used:
            fail(f".env.example: {var} is not used by compose.yaml")
    # Prometheus scrapes the services on the ports they listen on.
    prom_path = os.path.join(DEPLOY, "prometheus", "prometheus.yml")
    prom = load(prom_path)
    listen = {}
    for n, s in services.items():
        env = s.get("environment") or {}
        for k in ("OUTPOST_LISTEN", "OUTPOST_METRICS"):
            if k in env:
                listen[n] = str(env[k]).rsplit(":", 1)[1]
    for job in prom.get("scrape_configs", []):
        for sc in job.get("static_configs", []):
            for t in sc.get("targets", []):
                host, _, port = t.rpartition(":")
                if host == "localhost":
                    continue
                if host not in services:
                    fail(f"prometheus.yml: job {job['job_name']} target {t}: no such compose service")
                elif listen.get(host) != port:
                    fail(f"prometheus.yml: job {job['job_name']} target {t}: {host} serves metrics on {listen.get(host)}")
    for n in services:
        if n in listen and not any(
            t.startswith(f"{n}:") for j in prom.get("scrape_configs", []) for sc in j.get("static_configs", []) for t in sc.get("targets", [])
        ):
            fail(f"prometheus.yml: compose service {n} is not scraped")
    pm = [str(v) for v in services.get("prometheus", {}).get("volumes", [])]
    if not any(v.startswith("./prometheus:/etc/prometheus") for v in pm):
        fail("compose.yaml: prometheus does not mount ./prometheus at /etc/prometheus")
    if "alerts.yml" not in (prom.get("rule_files") or []):
        fail("prometheus.yml: rule_files does not load alerts.yml")
    if not problems:
        ok(f"compose.yaml: {len(services)} services, {len(volumes)} volumes; builds, mounts, depends_on, "
           f"healthchecks, node ids, scrape targets and .env.example consistent")


# ------------------------------------------------------------------ grafana
def cmd_grafana() -> None:
    services = compose_file()["services"]
    prov = os.path.join(DEPLOY, "grafana-provisioning")
    ds_files = glob.glob(os.path.join(prov, "datasources", "*.yaml"))
    db_files = glob.glob(os.path.join(prov, "dashboards", "*.yaml"))
    if not ds_files or not db_files:
        fail("grafana-provisioning: needs datasources/*.yaml and dashboards/*.yaml")
        return
    for p in ds_files:
        d = load(p)
        for ds in d.get("datasources", []):
            url = ds.get("url", "")
            m = re.match(r"http://([\w\-]+):(\d+)", url)
            if ds.get("type") == "prometheus" and (not m or m.group(1) not in services):
                fail(f"{rel(p)}: datasource url {url} is not a compose service")
            else:
                ok(f"{rel(p)}: {ds.get('name')} -> {url}")
    g = services["grafana"]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in g.get("volumes", [])}
    if mounts.get("/etc/grafana/provisioning") != "./grafana-provisioning":
        fail("compose.yaml: grafana does not mount ./grafana-provisioning at /etc/grafana/provisioning")
    for p in db_files:
        for prv in load(p).get("providers", []):
            path = (prv.get("options") or {}).get("path")
            src = mounts.get(path)
            if src is None:
                fail(f"{rel(p)}: provider path {path} is not mounted into grafana")
            else:
                hp = os.path.normpath(os.path.join(DEPLOY, src))
                n = len(glob.glob(os.path.join(hp, "*.json")))
                ok(f"{rel(p)}: provider {prv.get('name')} reads {path} <- {src} ({n} dashboard(s) there now)")


# --------------------------------------------------------------------- xref
def scrape_jobs(cfg: dict) -> set[str]:
    return {j["job_name"] for j in cfg.get("scrape_configs", [])}


def k8s_prometheus_config() -> dict:
    for d in load_all(os.path.join(DEPLOY, "k8s", "prometheus.yaml")):
        if d.get("kind") == "ConfigMap" and "prometheus.yml" in (d.get("data") or {}):
            return yaml.safe_load(d["data"]["prometheus.yml"])
    return {}


def cmd_xref() -> None:
    compose_jobs = scrape_jobs(load(os.path.join(DEPLOY, "prometheus", "prometheus.yml")))
    k8s_jobs = scrape_jobs(k8s_prometheus_config())
    for name, jobs in (("deploy/prometheus/prometheus.yml", compose_jobs), ("deploy/k8s/prometheus.yaml", k8s_jobs)):
        if not JOBS <= jobs:
            fail(f"{name}: scrape jobs {sorted(jobs)} lack {sorted(JOBS - jobs)}")
        else:
            ok(f"{name}: scrape jobs {sorted(jobs)}")
    referenced: dict[str, set[str]] = {}
    alerts = os.path.join(DEPLOY, "prometheus", "alerts.yml")
    if os.path.exists(alerts):
        with open(alerts, encoding="utf-8") as f:
            referenced[rel(alerts)] = set(re.findall(r'job\s*=~?\s*"([^"]+)"', f.read()))
    else:
        note("deploy/prometheus/alerts.yml does not exist (yet): its job names were not cross-checked")
    dashboards = sorted(glob.glob(os.path.join(DEPLOY, "grafana", "dashboards", "*.json")))
    if not dashboards:
        note("deploy/grafana/dashboards/*.json do not exist (yet): their job names were not cross-checked")
    for p in dashboards:
        with open(p, encoding="utf-8") as f:
            text = f.read()
        try:
            json.loads(text)
        except ValueError as e:
            fail(f"{rel(p)}: not JSON: {e}")
        referenced[rel(p)] = set(re.findall(r'job\s*=~?\s*\\"([^"\\]+)\\"', text))
    for where, jobs in referenced.items():
        for j in jobs:
            for alt in j.split("|"):
                if re.fullmatch(r"[\w\-]+", alt) and alt not in compose_jobs | k8s_jobs:
                    fail(f"{where}: selects job {alt!r}, which no scrape config defines")
        ok(f"{where}: jobs referenced {sorted(jobs) or '(none)'}")


# ---------------------------------------------------------------------- k8s
NAMESPACED = {"Service", "StatefulSet", "DaemonSet", "Deployment", "ConfigMap", "Secret", "ServiceAccount", "Role", "RoleBinding"}
WORKLOADS = {"StatefulSet", "DaemonSet", "Deployment"}


def k8s_docs() -> list[tuple[str, dict]]:
    out = []
    for p in sorted(glob.glob(os.path.join(DEPLOY, "k8s", "*.yaml"))):
        if os.path.basename(p) == "kustomization.yaml":
            continue
        for d in load_all(p):
            out.append((os.path.basename(p), d))
    return out


def port_names(container: dict) -> dict[str, int]:
    return {p.get("name"): p["containerPort"] for p in container.get("ports", [])}


def cmd_k8s() -> None:
    docs = k8s_docs()
    by_kind: dict[str, list[dict]] = {}
    for f, d in docs:
        where = f"k8s/{f}"
        for key in ("apiVersion", "kind"):
            if not d.get(key):
                fail(f"{where}: a document without {key}")
        name = (d.get("metadata") or {}).get("name")
        if not name:
            fail(f"{where}: {d.get('kind')} without metadata.name")
        if d.get("kind") in NAMESPACED and d["metadata"].get("namespace") != K8S_NAMESPACE:
            fail(f"{where}: {d['kind']}/{name} not in namespace {K8S_NAMESPACE}")
        d["_file"] = f
        by_kind.setdefault(d.get("kind"), []).append(d)
    secrets = {s["metadata"]["name"]: set((s.get("stringData") or {}) | (s.get("data") or {})) for s in by_kind.get("Secret", [])}
    configmaps = {c["metadata"]["name"] for c in by_kind.get("ConfigMap", [])}
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    sas = {s["metadata"]["name"] for s in by_kind.get("ServiceAccount", [])}
    image_dockerfile = {"outpost/control-plane": "deploy/control-plane.Dockerfile", "outpost/edge-node": "deploy/edge-node.Dockerfile"}
    pods = []
    for kind in WORKLOADS:
        for w in by_kind.get(kind, []):
            name = w["metadata"]["name"]
            where = f"k8s/{w['_file']}: {kind}/{name}"
            spec = w["spec"]
            tmpl = spec["template"]
            labels = tmpl["metadata"].get("labels", {})
            sel = spec["selector"]["matchLabels"]
            if any(labels.get(k) != v for k, v in sel.items()):
                fail(f"{where}: selector {sel} does not match the template labels {labels}")
            ps = tmpl["spec"]
            pods.append((labels, ps, where))
            psc = ps.get("securityContext", {})
            if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                fail(f"{where}: pod seccompProfile is not RuntimeDefault")
            vol_names = {v["name"] for v in ps.get("volumes", [])}
            vol_names |= {v["metadata"]["name"] for v in spec.get("volumeClaimTemplates", [])}
            if kind == "StatefulSet":
                svc = services.get(spec.get("serviceName"))
                if not svc or svc["spec"].get("clusterIP") != "None":
                    fail(f"{where}: serviceName {spec.get('serviceName')} is not a headless Service here")
                if not spec.get("volumeClaimTemplates"):
                    fail(f"{where}: no volumeClaimTemplates")
            sa = ps.get("serviceAccountName")
            if sa and sa not in sas:
                fail(f"{where}: serviceAccountName {sa} is not defined")
            for v in ps.get("volumes", []):
                cm = v.get("configMap")
                if cm and cm["name"] not in configmaps and not cm.get("optional"):
                    fail(f"{where}: volume {v['name']} needs ConfigMap {cm['name']}, not defined (nor optional)")
                sv = v.get("secret")
                if sv:
                    keys = secrets.get(sv["secretName"])
                    if keys is None:
                        fail(f"{where}: volume {v['name']} needs Secret {sv['secretName']}, not in k8s/")
                    else:
                        for item in sv.get("items", []):
                            if item["key"] not in keys:
                                fail(f"{where}: volume {v['name']}: Secret {sv['secretName']} has no key {item['key']}")
            for c in ps.get("containers", []):
                cw = f"{where} container {c['name']}"
                image = c.get("image", "")
                if not image:
                    fail(f"{cw}: no image")
                repo = image.rsplit(":", 1)[0]
                ports = port_names(c)
                if repo in image_dockerfile:
                    exposed = exposed_ports(image_dockerfile[repo])
                    for pn, num in ports.items():
                        if str(num) not in exposed:
                            fail(f"{cw}: port {pn}={num} not EXPOSEd by {image_dockerfile[repo]}")
                    if kind == "DaemonSet" and repo.endswith("edge-node"):
                        env = {e["name"]: e for e in c.get("env", [])}
                        ref = ((env.get("NODE_NAME") or {}).get("valueFrom") or {}).get("fieldRef", {})
                        if ref.get("fieldPath") != "spec.nodeName":
                            fail(f"{cw}: NODE_NAME does not come from the downward API spec.nodeName")
                        if "OUTPOST_NODE_ID" not in " ".join(c.get("command", [])):
                            fail(f"{cw}: OUTPOST_NODE_ID is not derived from NODE_NAME")
                        if "OUTPOST_NODE_TOKEN_FILE" not in " ".join(c.get("command", [])):
                            fail(f"{cw}: the node's identity (OUTPOST_NODE_TOKEN_FILE) is not set")
                        url = (env.get("OUTPOST_CONTROL_PLANE") or {}).get("value", "")
                        if not url.startswith("https://"):
                            fail(f"{cw}: OUTPOST_CONTROL_PLANE {url} is not https://")
                        ca = (env.get("OUTPOST_CA_FILE") or {}).get("value", "")
                        mounted = [m["mountPath"] for m in c.get("volumeMounts", [])]
                        if not any(ca.startswith(m.rstrip("/") + "/") for m in mounted):
                            fail(f"{cw}: OUTPOST_CA_FILE {ca or '(unset)'} is not on a mounted volume")
                for pk in ("startupProbe", "livenessProbe", "readinessProbe"):
                    probe = c.get(pk)
                    if not probe:
                        if pk != "startupProbe":
                            fail(f"{cw}: no {pk}")
                        continue
                    port = (probe.get("httpGet") or {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        fail(f"{cw}: {pk} port {port!r} is not a named container port ({sorted(ports)})")
                    if repo in image_dockerfile and (probe.get("httpGet") or {}).get("path") != "/healthz":
                        fail(f"{cw}: {pk} is not on /healthz")
                    if repo.endswith("control-plane") and (probe.get("httpGet") or {}).get("scheme") != "HTTPS":
                        fail(f"{cw}: {pk} is not over HTTPS (the API serves nothing else)")
                    if repo in image_dockerfile:
                        want = "api" if repo.endswith("control-plane") else "metrics"
                        if port != want:
                            fail(f"{cw}: {pk} should hit the {want} port, not {port}")
                res = c.get("resources", {})
                for part in ("requests", "limits"):
                    for r in ("cpu", "memory"):
                        if r not in res.get(part, {}):
                            fail(f"{cw}: no resources.{part}.{r}")
                sc = c.get("securityContext", {})
                if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                    fail(f"{cw}: runAsNonRoot is not set")
                if sc.get("allowPrivilegeEscalation") is not False:
                    fail(f"{cw}: allowPrivilegeEscalation is not false")
                if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                    fail(f"{cw}: capabilities.drop lacks ALL")
                if sc.get("readOnlyRootFilesystem") is not True:
                    fail(f"{cw}: readOnlyRootFilesystem is not true")
                for m in c.get("volumeMounts", []):
                    if m["name"] not in vol_names:
                        fail(f"{cw}: volumeMount {m['name']} has no volume")
                env_names = {e["name"] for e in c.get("env", [])}
                for e in c.get("env", []):
                    ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                    if ref:
                        keys = secrets.get(ref["name"])
                        if keys is None:
                            fail(f"{cw}: env {e['name']} needs Secret {ref['name']}, not in k8s/")
                        elif ref["key"] not in keys and not ref.get("optional"):
                            fail(f"{cw}: env {e['name']}: Secret {ref['name']} has no key {ref['key']}")
                for var in ("OUTPOST_LISTEN", "OUTPOST_HTTP", "OUTPOST_HTTPS", "OUTPOST_METRICS"):
                    for e in c.get("env", []):
                        if e["name"] == var:
                            host, _, port = e["value"].rpartition(":")
                            if host != "0.0.0.0":
                                fail(f"{cw}: {var}={e['value']}: bind 0.0.0.0 in a pod")
                            if int(port) not in ports.values():
                                fail(f"{cw}: {var} port {port} is not a container port")
                if repo in image_dockerfile and ps.get("enableServiceLinks") is not False:
                    fail(f"{cw}: enableServiceLinks is not false (Service link variables share the OUTPOST_ prefix)")
                if repo.endswith("control-plane") and {"OUTPOST_ADMIN_TOKEN", "OUTPOST_TLS_CERT", "OUTPOST_TLS_KEY"} - env_names:
                    fail(f"{cw}: the admin token or the API's certificate is not set")
            ok(f"{where}: selector, probes, resources, securityContext, volumes, secret refs")
    for name, s in services.items():
        where = f"k8s/{s['_file']}: Service/{name}"
        sel = s["spec"].get("selector", {})
        matched = [(ps, w) for labels, ps, w in pods if all(labels.get(k) == v for k, v in sel.items())]
        if not matched:
            fail(f"{where}: selector {sel} matches no workload")
            continue
        for p in s["spec"].get("ports", []):
            tp = p.get("targetPort", p.get("port"))
            for ps, w in matched:
                names = {}
                for c in ps["containers"]:
                    names |= port_names(c)
                if isinstance(tp, str) and tp not in names:
                    fail(f"{where}: targetPort {tp} is not a port of {w}")
                if s["spec"].get("type") == "LoadBalancer" and tp == "metrics":
                    fail(f"{where}: exposes the metrics port through a LoadBalancer")
        ok(f"{where}: selects {', '.join(w for _, w in matched)}")
    # kustomization: resources exist, placeholder secret not applied.
    kpath = os.path.join(DEPLOY, "k8s", "kustomization.yaml")
    k = load(kpath)
    for r in k.get("resources", []):
        if not os.path.exists(os.path.join(DEPLOY, "k8s", r)):
            fail(f"k8s/kustomization.yaml: resource {r} does not exist")
    if "secret.yaml" in k.get("resources", []):
        fail("k8s/kustomization.yaml applies secret.yaml (placeholders would overwrite the real Secret)")
    for f in glob.glob(os.path.join(DEPLOY, "k8s", "*.yaml")):
        b = os.path.basename(f)
        if b not in k.get("resources", []) and b not in ("kustomization.yaml", "secret.yaml"):
            note(f"k8s/{b} is not in kustomization.yaml")
    for s in by_kind.get("Secret", []):
        for key, v in (s.get("stringData") or {}).items():
            if v != "CHANGE-ME":
                fail(f"k8s/{s['_file']}: Secret key {key} is not the CHANGE-ME placeholder")
    ok(f"k8s: {len(docs)} objects: {', '.join(sorted(f'{k}×{len(v)}' for k, v in by_kind.items()))}")


# ------------------------------------------------------------------ envvars
def help_vars(path: str) -> set[str]:
    with open(path, encoding="utf-8") as f:
        return set(re.findall(r"\benv: (OUTPOST_[A-Z_]+)", f.read()))


def cmd_envvars(cp_help: str, edge_help: str) -> None:
    known = {"control-plane": help_vars(cp_help), "edge-node": help_vars(edge_help)}
    if not known["control-plane"] or not known["edge-node"]:
        fail("could not read the OUTPOST_* variables from --help")
        return
    ok(f"control-plane --help: {sorted(known['control-plane'])}")
    ok(f"edge-node --help: {sorted(known['edge-node'])}")
    uses: list[tuple[str, str, str]] = []  # (where, binary, var)
    c = compose_file()
    for n, s in c["services"].items():
        binary = "control-plane" if "control-plane" in str(s.get("image", "")) else "edge-node" if "edge-node" in str(s.get("image", "")) else None
        if binary:
            for var in s.get("environment") or {}:
                uses.append((f"compose.yaml service {n}", binary, var))
    for f, d in k8s_docs():
        if d.get("kind") in WORKLOADS:
            for ctr in d["spec"]["template"]["spec"]["containers"]:
                image = ctr.get("image", "")
                binary = "control-plane" if "control-plane" in image else "edge-node" if "edge-node" in image else None
                if not binary:
                    continue
                for e in ctr.get("env", []):
                    uses.append((f"k8s/{f} {ctr['name']}", binary, e["name"]))
                for var in re.findall(r"\b(OUTPOST_[A-Z_]+)=", " ".join(ctr.get("command", []))):
                    uses.append((f"k8s/{f} {ctr['name']} command", binary, var))
    for fname, binary in (("control-plane.Dockerfile", "control-plane"), ("edge-node.Dockerfile", "edge-node")):
        stages = dockerfile_stages(os.path.join(DEPLOY, fname))
        for i, r in stages[-1]["ins"]:
            if i == "ENV":
                for var in re.findall(r"(\w+)=", r):
                    uses.append((f"deploy/{fname}", binary, var))
    for unit, envf, binary in (
        ("outpost-control-plane.service", "control-plane.env.example", "control-plane"),
        ("outpost-edge-node.service", "edge-node.env.example", "edge-node"),
    ):
        for fn in (unit, envf):
            with open(os.path.join(DEPLOY, "systemd", fn), encoding="utf-8") as f:
                for line in f:
                    for var in re.findall(r"^#?\s*(?:Environment=)?(OUTPOST_[A-Z_]+)=", line.strip()):
                        uses.append((f"systemd/{fn}", binary, var))
    n = 0
    for where, binary, var in uses:
        if not var.startswith("OUTPOST_"):
            continue
        n += 1
        if var not in known[binary]:
            fail(f"{where}: {var} is not a variable of {binary} (known: {sorted(known[binary])})")
    ok(f"{n} OUTPOST_* uses across compose, k8s, Dockerfiles and systemd checked against --help")


# ------------------------------------------------------------------ helpers
def cmd_k8s_prometheus_config(out: str, no_k8s_sd: bool) -> None:
    """Write the ConfigMap's prometheus.yml to OUT; with --no-k8s-sd each
    kubernetes_sd_configs becomes a static target (for a promtool built
    without Kubernetes discovery), the relabelling kept."""
    cfg = k8s_prometheus_config()
    if not cfg:
        fail("k8s/prometheus.yaml: no ConfigMap with prometheus.yml")
        return
    if no_k8s_sd:
        for job in cfg.get("scrape_configs", []):
            sd = job.pop("kubernetes_sd_configs", None)
            if sd is not None:
                roles = {s.get("role") for s in sd}
                names = {n for s in sd for n in (s.get("namespaces") or {}).get("names", [])}
                if roles != {"pod"} or names != {K8S_NAMESPACE}:
                    fail(f"job {job['job_name']}: kubernetes_sd_configs should be role pod in namespace {K8S_NAMESPACE}")
                job["static_configs"] = [{"targets": ["replaced-kubernetes-sd:1"]}]
                print(f"job {job['job_name']}: kubernetes_sd_configs (role pod, namespace {K8S_NAMESPACE}) replaced by a static target")
    with open(out, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)


def cmd_node_id_script() -> None:
    for f, d in k8s_docs():
        if d.get("kind") == "DaemonSet":
            cmd = d["spec"]["template"]["spec"]["containers"][0]["command"]
            print(cmd[2], end="")
            return
    sys.exit(1)


def cmd_systemd_env(unit: str, envfile: str) -> None:
    """Environment= lines then the env file (which overrides), with %S/%C
    left for the caller to replace."""
    env: dict[str, str] = {}
    with open(unit, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^Environment=(\w+)=(.*)$", line.strip())
            if m:
                env[m.group(1)] = m.group(2)
    with open(envfile, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^(\w+)=(.*)$", line.strip())
            if m:
                env[m.group(1)] = m.group(2)
    for k, v in env.items():
        print(f"{k}={v}")


def main() -> None:
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    cmd, args = sys.argv[1], sys.argv[2:]
    table = {
        "yaml": lambda: cmd_yaml(args),
        "compose": cmd_compose,
        "grafana": cmd_grafana,
        "xref": cmd_xref,
        "k8s": cmd_k8s,
        "dockerfiles": lambda: cmd_dockerfiles(args[0]),
        "copy-sources": lambda: cmd_copy_sources(args[0]),
        "envvars": lambda: cmd_envvars(args[0], args[1]),
        "node-id-script": cmd_node_id_script,
        "k8s-prometheus-config": lambda: cmd_k8s_prometheus_config(args[0], "--no-k8s-sd" in args[1:]),
        "systemd-env": lambda: cmd_systemd_env(args[0], args[1]),
    }
    if cmd not in table:
        print(__doc__)
        sys.exit(2)
    table[cmd]()
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
