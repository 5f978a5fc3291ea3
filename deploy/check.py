#!/usr/bin/env python3
"""Structural checks for deploy/, run by deploy/check.sh.

Each subcommand prints what it checked, one line per problem prefixed with
"FAIL:" (and "note:" for things worth knowing), and exits 1 if it found a
problem. Only the standard library and PyYAML are used.

  check.py yaml FILE...                      every file parses as YAML
  check.py compose [FILE]                    compose.yaml (or compose.ha.yaml) against the files it names
  check.py k8s                               k8s/*.yaml: names, refs, probes, ports, security
  check.py k8s-ha [RENDERED]                 the k8s-ha overlay (kubectl kustomize's output, else
                                             rendered by check.py): the base's checks, etcd, registry,
                                             store URLs, CAs, the migrate Job, agreement with compose.ha.yaml
  check.py k8s-env RENDERED|'' KIND/NAME [--root DIR] [--instance N] [--secret NAME/KEY=V]
               [--field PATH=V] [--set K=V]  a workload's env as the kubelet sets it, paths under DIR
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
COMPOSE_FILES = ("compose.yaml", "compose.ha.yaml")
# Services each file must have.
COMPOSE_SERVICES = {
    "compose.yaml": ("control-plane", "edge-1", "edge-2", "prometheus", "grafana"),
    "compose.ha.yaml": ("etcd-1", "etcd-2", "etcd-3", "registry", "control-plane-1", "control-plane-2",
                        "edge-1", "edge-2", "prometheus", "grafana"),
}


def compose_file(fname: str = "compose.yaml") -> dict:
    return load(os.path.join(DEPLOY, fname))


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


def service_env(s: dict) -> dict:
    env = s.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return env


def service_role(s: dict) -> str | None:
    """control-plane / edge-node (by the Dockerfile or image), migrate (the
    control-plane image running `migrate`), etcd / registry (by their
    settings), else None."""
    b = s.get("build")
    df = b.get("dockerfile", "") if isinstance(b, dict) else ""
    image = re.sub(r"\$\{[^}]*\}", "X", str(s.get("image", "")))
    for role in ("control-plane", "edge-node"):
        if df.endswith(f"{role}.Dockerfile") or image.rsplit(":", 1)[0].endswith(f"/{role}"):
            if role == "control-plane" and (s.get("command") or [""])[0] == "migrate":
                return "migrate"
            return role
    env = service_env(s)
    if "ETCD_NAME" in env:
        return "etcd"
    if any(k.startswith("REGISTRY_") for k in env):
        return "registry"
    return None


def service_networks(s: dict) -> set[str]:
    n = s.get("networks")
    if not n:
        return {"default"}
    return set(n if isinstance(n, list) else n.keys())


def url_port(url: str) -> str:
    return url.rsplit(":", 1)[1].split("/")[0]


def check_compose_registry_client(where: str, env: dict, mounts: dict, services: dict) -> str | None:
    """OUTPOST_REGISTRY* of a control plane or node; returns the registry URL."""
    url = env.get("OUTPOST_REGISTRY")
    if url is None:
        return None
    m = re.match(r"https://([\w\-]+):(\d+)/[\w\-./]+$", url)
    if not m:
        fail(f"{where}: OUTPOST_REGISTRY {url} is not https://SERVICE:PORT/REPOSITORY (plain http is for loopback only)")
        return url
    reg = services.get(m.group(1))
    if reg is None or service_role(reg) != "registry":
        fail(f"{where}: OUTPOST_REGISTRY names {m.group(1)}, not a registry service of this file")
    elif url_port(str(service_env(reg).get("REGISTRY_HTTP_ADDR", ":5000"))) != m.group(2):
        fail(f"{where}: OUTPOST_REGISTRY port {m.group(2)} is not where {m.group(1)} listens (REGISTRY_HTTP_ADDR)")
    if env.get("OUTPOST_REGISTRY_CA_FILE") not in mounts:
        fail(f"{where}: OUTPOST_REGISTRY_CA_FILE {env.get('OUTPOST_REGISTRY_CA_FILE')} is not a mounted file")
    if ("OUTPOST_REGISTRY_USER" in env) != ("OUTPOST_REGISTRY_PASSWORD" in env):
        fail(f"{where}: OUTPOST_REGISTRY_USER and OUTPOST_REGISTRY_PASSWORD go together")
    return url


def cmd_compose(fname: str = "compose.yaml") -> None:
    path = os.path.join(DEPLOY, fname)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    c = compose_file(fname)
    allowed_top = {"name", "services", "volumes", "networks", "configs", "secrets", "include"}
    for k in c:
        if k not in allowed_top and not k.startswith("x-"):
            fail(f"{fname}: unknown top-level key {k}")
    services = c.get("services") or {}
    volumes = set((c.get("volumes") or {}).keys())
    networks = c.get("networks") or {}
    roles = {n: service_role(s) for n, s in services.items()}
    by_role: dict[str, list[str]] = {}
    for n, r in roles.items():
        by_role.setdefault(r, []).append(n)
    for want in COMPOSE_SERVICES.get(fname, ()):
        if want not in services:
            fail(f"{fname}: no service {want}")
    published: dict[str, str] = {}
    cp_envs: dict[str, dict] = {}
    migrates: list = []
    for name, s in services.items():
        where = f"{fname}: service {name}"
        role = roles[name]
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
        for p in s.get("ports", []):
            host_side = str(p).rsplit(":", 1)[0]
            hp = host_side.rsplit(":", 1)[-1]
            if hp in published:
                fail(f"{where}: host port {hp} is also published by {published[hp]}")
            published[hp] = name
        for v in s.get("volumes", []):
            src = str(v).split(":")[0]
            if src.startswith((".", "/")):
                hp = os.path.normpath(os.path.join(DEPLOY, src))
                if not os.path.exists(hp):
                    note(f"{where}: bind mount {src} does not exist yet (docker creates an empty directory)")
            elif src not in volumes:
                fail(f"{where}: named volume {src} is not declared under volumes:")
        for n in service_networks(s):
            if n != "default" and n not in networks:
                fail(f"{where}: network {n} is not declared under networks:")
        deps = s.get("depends_on") or []
        for d, spec in (deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)):
            if d not in services:
                fail(f"{where}: depends_on unknown service {d}")
            elif spec.get("condition") == "service_healthy" and "healthcheck" not in services[d]:
                fail(f"{where}: waits for {d} to be healthy but {d} has no healthcheck")
        if name != "prometheus" and name != "grafana" and role != "migrate" and "healthcheck" not in s:
            fail(f"{where}: no healthcheck")
        env = service_env(s)
        for k, v in env.items():
            if k.startswith("OUTPOST_") and isinstance(v, str) and re.fullmatch(r"[\w.\-]+:\d+", v):
                host = v.rsplit(":", 1)[0]
                if k in ("OUTPOST_LISTEN", "OUTPOST_HTTP", "OUTPOST_HTTPS", "OUTPOST_METRICS") and host != "0.0.0.0":
                    fail(f"{where}: {k}={v}: inside a container bind 0.0.0.0")
        mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in s.get("volumes", []) if ":" in str(v)}
        named = {dst: src for dst, src in mounts.items() if not src.startswith((".", "/"))}
        for src in mounts.values():
            if src.endswith("ca.key"):
                fail(f"{where}: mounts the CA's private key {src}")
        if role == "control-plane":
            cp_envs[name] = env
            for k in ("OUTPOST_TLS_CERT", "OUTPOST_TLS_KEY"):
                if env.get(k) not in mounts:
                    fail(f"{where}: {k} {env.get(k)} is not a mounted file (the API serves HTTPS only)")
            if "OUTPOST_NODE_TOKEN" in env:
                fail(f"{where}: sets a shared node token; nodes use their own identities")
            store = env.get("OUTPOST_STORE")
            if store:
                check_compose_store(where, s, env, named, services, roles)
                check_compose_registry_client(where, env, mounts, services)
            elif "OUTPOST_REGISTRY" in env:
                fail(f"{where}: OUTPOST_REGISTRY without OUTPOST_STORE (the control plane refuses a registry with sled)")
        if role == "edge-node":
            for k in ("OUTPOST_CONTROL_PLANE", "OUTPOST_NODE_TOKEN", "OUTPOST_NODE_ID", "OUTPOST_CACHE_DIR", "OUTPOST_CA_FILE"):
                if k not in env:
                    fail(f"{where}: {k} is not set (sync mode needs it)")
            if env.get("OUTPOST_CA_FILE") not in mounts:
                fail(f"{where}: OUTPOST_CA_FILE {env.get('OUTPOST_CA_FILE')} is not a mounted file")
            cache = env.get("OUTPOST_CACHE_DIR")
            if cache and not any(str(v).split(":")[1:2] == [cache] for v in s.get("volumes", [])):
                fail(f"{where}: OUTPOST_CACHE_DIR {cache} is not on a volume")
            followed = []
            for cp in str(env.get("OUTPOST_CONTROL_PLANE", "")).split(","):
                m = re.match(r"https://([\w\-]+):(\d+)$", cp)
                if not m or roles.get(m.group(1)) != "control-plane":
                    fail(f"{where}: OUTPOST_CONTROL_PLANE {cp} is not https://SERVICE:PORT of a control plane of this file")
                    continue
                listen = str(service_env(services[m.group(1)]).get("OUTPOST_LISTEN", ""))
                if listen and url_port(listen) != m.group(2):
                    fail(f"{where}: OUTPOST_CONTROL_PLANE {cp}: {m.group(1)} listens on {listen}")
                followed.append(m.group(1))
            missing = set(by_role.get("control-plane", [])) - set(followed)
            if followed and missing:
                fail(f"{where}: does not list control plane(s) {sorted(missing)}: it could not move there")
            check_compose_registry_client(where, env, mounts, services)
            for p in s.get("ports", []):
                if str(p).endswith(":9100"):
                    fail(f"{where}: publishes the metrics listener")
        if role == "migrate":
            migrates.append((where, s, env, mounts, named))
        if role == "etcd":
            check_compose_etcd(where, name, s, env, named, networks)
        if role == "registry":
            for k in ("REGISTRY_HTTP_TLS_CERTIFICATE", "REGISTRY_HTTP_TLS_KEY"):
                if env.get(k) not in mounts:
                    fail(f"{where}: {k} {env.get(k)} is not a mounted file (the binaries take https:// registries only)")
            if env.get("REGISTRY_AUTH") == "htpasswd" and env.get("REGISTRY_AUTH_HTPASSWD_PATH") not in mounts:
                fail(f"{where}: REGISTRY_AUTH_HTPASSWD_PATH is not a mounted file")
            if not env.get("REGISTRY_AUTH"):
                fail(f"{where}: no REGISTRY_AUTH: anyone on the network could push")
            root = env.get("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/var/lib/registry")
            if root not in named:
                fail(f"{where}: storage {root} is not on a named volume")
            if s.get("ports"):
                note(f"{where}: publishes the registry on the host")
    # Control planes sharing a store are one control plane: same settings.
    shared = [n for n, e in cp_envs.items() if e.get("OUTPOST_STORE")]
    for n in shared[1:]:
        if cp_envs[n] != cp_envs[shared[0]]:
            diff = sorted(k for k in set(cp_envs[n]) | set(cp_envs[shared[0]]) if cp_envs[n].get(k) != cp_envs[shared[0]].get(k))
            fail(f"{fname}: control planes {shared[0]} and {n} differ in {diff} (same store, token, cert key and registry needed)")
    # The upgrade: migrate fills exactly what the control planes read.
    for where, s, env, mounts, named in migrates:
        cmd = [str(a) for a in s.get("command", [])]
        frm = cmd[cmd.index("--from") + 1] if "--from" in cmd else None
        to = cmd[cmd.index("--to") + 1] if "--to" in cmd else None
        if not s.get("profiles"):
            fail(f"{where}: no profiles: `docker compose up` would run the one-off migration")
        if frm not in named:
            fail(f"{where}: --from {frm} is not a named volume")
        for n in shared:
            if to != cp_envs[n].get("OUTPOST_STORE"):
                fail(f"{where}: --to {to} is not {n}'s OUTPOST_STORE {cp_envs[n].get('OUTPOST_STORE')}")
            for k in ("OUTPOST_REGISTRY", "OUTPOST_REGISTRY_USER", "OUTPOST_REGISTRY_PASSWORD", "OUTPOST_REGISTRY_CA_FILE", "OUTPOST_CERT_KEY"):
                if env.get(k) != cp_envs[n].get(k):
                    fail(f"{where}: {k} is not {n}'s")
        check_compose_registry_client(where, env, mounts, services)
        if shared and not service_networks(s) >= service_networks(services[shared[0]]):
            fail(f"{where}: not on every network the control planes are on (etcd and the registry)")
    regs = {str(service_env(services[n]).get("OUTPOST_REGISTRY")) for n in by_role.get("edge-node", []) + shared}
    if shared and len(regs) != 1:
        fail(f"{fname}: control planes and nodes name different registries: {sorted(regs)}")
    edges = by_role.get("edge-node", [])
    ids = [service_env(services[n]).get("OUTPOST_NODE_ID") for n in edges]
    if len(ids) != len(set(ids)):
        fail(f"{fname}: edge node ids are not unique: {ids}")
    caches = [tuple(services[n].get("volumes", [])) for n in edges]
    if len(caches) != len(set(caches)):
        fail(f"{fname}: edge nodes share a cache volume")
    # Interpolated variables are documented in .env.example; secrets empty.
    # Both compose files read the same .env.
    used = interpolated_vars(text)
    used_anywhere: set[str] = set()
    for other in COMPOSE_FILES:
        with open(os.path.join(DEPLOY, other), encoding="utf-8") as f:
            used_anywhere |= set(interpolated_vars(f.read()))
    example = env_example()
    for var, op in sorted(used.items()):
        if var not in example:
            fail(f"{fname} uses ${{{var}}} but .env.example does not mention it")
        elif "?" in op:
            value, commented = example[var]
            if commented or value:
                fail(f".env.example: required {var} must be present and empty (no committed secret)")
    for var in example:
        if var not in used_anywhere:
            fail(f".env.example: {var} is not used by {' or '.join(COMPOSE_FILES)}")
    # Prometheus scrapes the services on the ports they listen on.
    prom_service = services.get("prometheus", {})
    cfg_flag = [a for a in prom_service.get("command", []) if str(a).startswith("--config.file=")]
    cfg_in_container = cfg_flag[-1].split("=", 1)[1] if cfg_flag else "/etc/prometheus/prometheus.yml"
    pm = [str(v) for v in prom_service.get("volumes", [])]
    if not any(v.startswith("./prometheus:/etc/prometheus") for v in pm):
        fail(f"{fname}: prometheus does not mount ./prometheus at /etc/prometheus")
    if not cfg_in_container.startswith("/etc/prometheus/"):
        fail(f"{fname}: prometheus --config.file {cfg_in_container} is not in the mounted ./prometheus")
        return
    prom_rel = os.path.join("prometheus", cfg_in_container[len("/etc/prometheus/"):])
    prom_path = os.path.join(DEPLOY, prom_rel)
    if not os.path.exists(prom_path):
        fail(f"{fname}: prometheus --config.file is deploy/{prom_rel}, which does not exist")
        return
    prom = load(prom_path)
    listen = {}
    for n, s in services.items():
        env = service_env(s)
        for k in ("OUTPOST_LISTEN", "OUTPOST_METRICS"):
            if k in env:
                listen[n] = str(env[k]).rsplit(":", 1)[1]
    targets = [t for j in prom.get("scrape_configs", []) for sc in j.get("static_configs", []) for t in sc.get("targets", [])]
    for job in prom.get("scrape_configs", []):
        for sc in job.get("static_configs", []):
            for t in sc.get("targets", []):
                host, _, port = t.rpartition(":")
                if host == "localhost":
                    continue
                if host not in services:
                    fail(f"{prom_rel}: job {job['job_name']} target {t}: no such service in {fname}")
                elif listen.get(host) != port:
                    fail(f"{prom_rel}: job {job['job_name']} target {t}: {host} serves metrics on {listen.get(host)}")
                elif not service_networks(services[host]) & service_networks(prom_service):
                    fail(f"{prom_rel}: target {t}: {host} shares no network with prometheus")
    for n in services:
        if n in listen and not any(t.startswith(f"{n}:") for t in targets):
            fail(f"{prom_rel}: service {n} of {fname} is not scraped")
    if "alerts.yml" not in (prom.get("rule_files") or []):
        fail(f"{prom_rel}: rule_files does not load alerts.yml")
    if not problems:
        ok(f"{fname}: {len(services)} services, {len(volumes)} volumes; builds, mounts, depends_on, "
           f"healthchecks, node ids, {'store, registry, etcd members, ' if shared else ''}"
           f"scrape targets ({prom_rel}) and .env.example consistent")


def check_compose_store(where: str, s: dict, env: dict, named: dict, services: dict, roles: dict) -> None:
    """A control plane on etcd: every member listed, reachable, stateless."""
    store = str(env["OUTPOST_STORE"])
    m = re.match(r"etcd://([^/]+)(/.*)?$", store)
    if not m:
        fail(f"{where}: OUTPOST_STORE {store} is not etcd://HOST:PORT[,HOST:PORT…][/PREFIX]")
        return
    members = {n for n, r in roles.items() if r == "etcd"}
    listed = set()
    for hp in m.group(1).split(","):
        host, _, port = hp.rpartition(":")
        if host not in members:
            fail(f"{where}: OUTPOST_STORE lists {hp}, not an etcd service of this file")
            continue
        listed.add(host)
        client = str(service_env(services[host]).get("ETCD_LISTEN_CLIENT_URLS", ""))
        if url_port(client) != port:
            fail(f"{where}: OUTPOST_STORE {hp}: {host} serves clients on {client}")
        if not service_networks(s) & service_networks(services[host]):
            fail(f"{where}: shares no network with {host}")
    if members - listed:
        fail(f"{where}: OUTPOST_STORE omits etcd member(s) {sorted(members - listed)}: losing the listed ones would stop it")
    if "OUTPOST_CERT_KEY" not in env:
        fail(f"{where}: etcd needs OUTPOST_CERT_KEY (every control plane opens the others' secrets)")
    if "OUTPOST_REGISTRY" not in env:
        fail(f"{where}: etcd needs OUTPOST_REGISTRY (module bytes do not go to etcd)")
    if named:
        fail(f"{where}: a control plane on etcd keeps nothing; named volume(s) {sorted(named.values())} mounted")
    if "OUTPOST_DATA_DIR" in env:
        note(f"{where}: OUTPOST_DATA_DIR is unused with etcd")


def check_compose_etcd(where: str, name: str, s: dict, env: dict, named: dict, networks: dict) -> None:
    cluster = dict(p.split("=", 1) for p in str(env.get("ETCD_INITIAL_CLUSTER", "")).split(",") if "=" in p)
    me = env.get("ETCD_NAME")
    if me not in cluster:
        fail(f"{where}: ETCD_NAME {me} is not in ETCD_INITIAL_CLUSTER {sorted(cluster)}")
    elif cluster[me] != env.get("ETCD_INITIAL_ADVERTISE_PEER_URLS"):
        fail(f"{where}: ETCD_INITIAL_ADVERTISE_PEER_URLS {env.get('ETCD_INITIAL_ADVERTISE_PEER_URLS')} is not its "
             f"ETCD_INITIAL_CLUSTER entry {cluster[me]}")
    if len(cluster) < 3 or len(cluster) % 2 == 0:
        fail(f"{where}: {len(cluster)} members: an odd number of at least 3 survives losing one")
    for member, url in cluster.items():
        host = re.sub(r"^\w+://", "", url).rsplit(":", 1)[0]
        if host != member:
            note(f"{where}: member {member} is reached as {host}")
    adv = str(env.get("ETCD_ADVERTISE_CLIENT_URLS", ""))
    if re.sub(r"^\w+://", "", adv).rsplit(":", 1)[0] not in (name, s.get("hostname")):
        fail(f"{where}: ETCD_ADVERTISE_CLIENT_URLS {adv} is not this service's name")
    data = str(env.get("ETCD_DATA_DIR", ""))
    if not any(data == d or data.startswith(d.rstrip("/") + "/") for d in named):
        fail(f"{where}: ETCD_DATA_DIR {data} is not on a named volume")
    for n in service_networks(s):
        if not (networks.get(n) or {}).get("internal"):
            fail(f"{where}: on network {n}, which is not internal (only control planes should reach etcd)")
    if s.get("ports"):
        fail(f"{where}: publishes etcd's ports on the host")


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
NAMESPACED = {"Service", "StatefulSet", "DaemonSet", "Deployment", "Job", "ConfigMap", "Secret", "ServiceAccount", "Role",
              "RoleBinding", "PersistentVolumeClaim", "PodDisruptionBudget", "NetworkPolicy"}
WORKLOADS = {"StatefulSet", "DaemonSet", "Deployment", "Job"}


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
    by_kind = check_k8s_objects(docs, "k8s")
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
    check_placeholder_secrets(by_kind, "k8s")
    ok(f"k8s: {len(docs)} objects: {', '.join(sorted(f'{k}×{len(v)}' for k, v in by_kind.items()))}")


def check_placeholder_secrets(by_kind: dict, prefix: str) -> None:
    for s in by_kind.get("Secret", []):
        for key, v in (s.get("stringData") or {}).items():
            if v != "CHANGE-ME":
                fail(f"{prefix}/{s['_file']}: Secret key {key} is not the CHANGE-ME placeholder")


def check_k8s_objects(docs: list[tuple[str, dict]], prefix: str, known_claims: frozenset = frozenset()) -> dict[str, list[dict]]:
    """The checks every manifest gets: names, namespaces, workloads'
    selectors, probes, ports, resources, securityContext, volume, claim and
    Secret references, Services' selectors and targets, PodDisruptionBudgets'
    and NetworkPolicies' selectors. `known_claims`: PersistentVolumeClaims
    made elsewhere (the base's, for the upgrade Job). Returns the objects by
    kind."""
    by_kind: dict[str, list[dict]] = {}
    for f, d in docs:
        where = f"{prefix}/{f}"
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
    claims = {c["metadata"]["name"] for c in by_kind.get("PersistentVolumeClaim", [])} | statefulset_claims(by_kind)
    pods = []
    for kind in WORKLOADS:
        for w in by_kind.get(kind, []):
            name = w["metadata"]["name"]
            where = f"{prefix}/{w['_file']}: {kind}/{name}"
            spec = w["spec"]
            tmpl = spec["template"]
            labels = tmpl["metadata"].get("labels", {})
            sel = (spec.get("selector") or {}).get("matchLabels", {})
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
                claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
                if claim and claim not in claims and claim not in known_claims:
                    fail(f"{where}: volume {v['name']} needs PersistentVolumeClaim {claim}, which nothing here makes")
                cm = v.get("configMap")
                if cm and cm["name"] not in configmaps and not cm.get("optional"):
                    fail(f"{where}: volume {v['name']} needs ConfigMap {cm['name']}, not defined (nor optional)")
                sv = v.get("secret")
                if sv:
                    keys = secrets.get(sv["secretName"])
                    if keys is None:
                        fail(f"{where}: volume {v['name']} needs Secret {sv['secretName']}, not in {prefix}/")
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
                        if pk != "startupProbe" and kind != "Job":
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
                            fail(f"{cw}: env {e['name']} needs Secret {ref['name']}, not in {prefix}/")
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
                if repo.endswith("control-plane") and kind != "Job" and {"OUTPOST_ADMIN_TOKEN", "OUTPOST_TLS_CERT", "OUTPOST_TLS_KEY"} - env_names:
                    fail(f"{cw}: the admin token or the API's certificate is not set")
            ok(f"{where}: selector, probes, resources, securityContext, volumes, secret refs")
    for name, s in services.items():
        where = f"{prefix}/{s['_file']}: Service/{name}"
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
    check_k8s_policies(by_kind, pods, prefix)
    return by_kind


def statefulset_claims(by_kind: dict) -> set[str]:
    """The PersistentVolumeClaims StatefulSets make: TEMPLATE-STS-ORDINAL."""
    out = set()
    for w in by_kind.get("StatefulSet", []):
        for t in w["spec"].get("volumeClaimTemplates", []):
            for i in range(w["spec"].get("replicas", 1)):
                out.add(f"{t['metadata']['name']}-{w['metadata']['name']}-{i}")
    return out


def selector_matches(selector: dict, labels: dict) -> bool:
    """A LabelSelector (matchLabels and matchExpressions In/NotIn/Exists/DoesNotExist)."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        op, key, values = e["operator"], e["key"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def check_k8s_policies(by_kind: dict, pods: list, prefix: str) -> None:
    """PodDisruptionBudgets and NetworkPolicies select pods that exist, and
    a policy's ports are ports of the pods it protects."""
    for pdb in by_kind.get("PodDisruptionBudget", []):
        where = f"{prefix}/{pdb['_file']}: PodDisruptionBudget/{pdb['metadata']['name']}"
        matched = [w for labels, _, w in pods if selector_matches(pdb["spec"].get("selector") or {}, labels)]
        if not matched:
            fail(f"{where}: selects no workload")
        elif ("minAvailable" in pdb["spec"]) == ("maxUnavailable" in pdb["spec"]):
            fail(f"{where}: needs exactly one of minAvailable, maxUnavailable")
        else:
            ok(f"{where}: protects {', '.join(matched)}")
    for np in by_kind.get("NetworkPolicy", []):
        where = f"{prefix}/{np['_file']}: NetworkPolicy/{np['metadata']['name']}"
        targets = [(ps, w) for labels, ps, w in pods if selector_matches(np["spec"].get("podSelector") or {}, labels)]
        if not targets:
            fail(f"{where}: podSelector matches no workload")
            continue
        names = {}
        for ps, _ in targets:
            for c in ps["containers"]:
                names |= port_names(c)
        sources = set()
        for rule in np["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if isinstance(port.get("port"), str) and port["port"] not in names:
                    fail(f"{where}: port {port['port']} is not a named port of {', '.join(w for _, w in targets)}")
            for peer in rule.get("from", []):
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    found = [w for labels, _, w in pods if selector_matches(peer["podSelector"], labels)]
                    if not found:
                        fail(f"{where}: a from.podSelector {peer['podSelector']} matches no workload")
                    sources |= set(found)
        ok(f"{where}: protects {', '.join(w for _, w in targets)}; lets in {', '.join(sorted(sources)) or '(nothing by pod)'}")


# ------------------------------------------------------------------- k8s-ha
K8S_HA = os.path.join(DEPLOY, "k8s-ha")
# Not in k8s-ha/kustomization.yaml on purpose.
K8S_HA_OUTSIDE = ("secret.yaml", "migrate.yaml")
# What README.md tells operators to apply before the migrate Job.
STORE_COMPONENTS = ("etcd", "registry")


def smp(target: dict, patch: dict) -> None:
    """Strategic merge as kustomize does it for the fields this repository
    patches: maps merge, lists of named objects merge by name (new ones
    first), everything else is replaced."""
    for k, v in patch.items():
        if k == "$patch":
            continue
        old = target.get(k)
        if isinstance(v, dict) and isinstance(old, dict):
            smp(old, v)
        elif (isinstance(v, list) and isinstance(old, list)
              and all(isinstance(x, dict) and "name" in x for x in v + old)):
            by_name = {x["name"]: x for x in old}
            new = []
            for x in v:
                if x["name"] in by_name:
                    smp(by_name[x["name"]], x)
                else:
                    new.append(x)
            target[k] = new + old
        else:
            target[k] = v


def pod_spec(d: dict) -> dict | None:
    return ((d.get("spec") or {}).get("template") or {}).get("spec")


def kustomize_emulate(directory: str) -> list[dict]:
    """A small kustomize for this repository's overlays (resources, patches
    that delete or strategically merge, images), for machines without
    kubectl; check.sh compares it with `kubectl kustomize` where it can."""
    k = load(os.path.join(directory, "kustomization.yaml"))
    for key in k:
        if key not in ("apiVersion", "kind", "resources", "patches", "images"):
            fail(f"{rel(directory)}/kustomization.yaml: {key} is not something check.py can render without kubectl")
    docs: list[dict] = []
    for r in k.get("resources", []):
        p = os.path.normpath(os.path.join(directory, r))
        docs += kustomize_emulate(p) if os.path.isdir(p) else load_all(p)
    for patch in k.get("patches", []):
        pdocs = ([d for d in yaml.safe_load_all(patch["patch"]) if d] if "patch" in patch
                 else load_all(os.path.join(directory, patch["path"])))
        for pd in pdocs:
            key = (pd["kind"], pd["metadata"]["name"])
            if not any((d["kind"], d["metadata"]["name"]) == key for d in docs):
                fail(f"{rel(directory)}/kustomization.yaml: a patch targets {key[0]}/{key[1]}, which no resource defines")
            elif pd.get("$patch") == "delete":
                docs = [d for d in docs if (d["kind"], d["metadata"]["name"]) != key]
            else:
                for d in docs:
                    if (d["kind"], d["metadata"]["name"]) == key:
                        smp(d, pd)
    for img in k.get("images", []):
        for d in docs:
            for c in (pod_spec(d) or {}).get("containers", []):
                name, _, tag = c["image"].partition(":")
                if name == img["name"]:
                    c["image"] = f"{img.get('newName', name)}:{img.get('newTag', tag)}"
    return docs


def normalized(x):
    """Lists of named objects sorted by name: order does not matter to the API."""
    if isinstance(x, dict):
        return {k: normalized(v) for k, v in x.items() if not k.startswith("_")}
    if isinstance(x, list):
        items = [normalized(v) for v in x]
        if all(isinstance(v, dict) and "name" in v for v in items):
            items.sort(key=lambda v: str(v["name"]))
        return items
    return x


def find(docs: list[dict], kind: str, name: str) -> dict | None:
    for d in docs:
        if d.get("kind") == kind and d["metadata"]["name"] == name:
            return d
    return None


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def mounted_secret(ps: dict, container: dict, path: str) -> tuple[str, str] | None:
    """(Secret name, key) of the file `path` in the container, if a Secret
    volume provides it."""
    vols = {v["name"]: v for v in ps.get("volumes", [])}
    for m in container.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/") + "/"
        if path.startswith(mp):
            sv = (vols.get(m["name"]) or {}).get("secret")
            if not sv:
                return None
            rest = path[len(mp):]
            items = sv.get("items")
            if items is None:
                return sv["secretName"], rest
            for it in items:
                if it["path"] == rest:
                    return sv["secretName"], it["key"]
            return None
    return None


def readme_text() -> str:
    with open(os.path.join(DEPLOY, "README.md"), encoding="utf-8") as f:
        return f.read()


def cmd_k8s_ha(rendered: str | None) -> None:
    kdir = rel(K8S_HA)
    k = load(os.path.join(K8S_HA, "kustomization.yaml"))
    resources = k.get("resources", [])
    if "../k8s" not in resources:
        fail(f"{kdir}/kustomization.yaml: does not build on the base ../k8s")
    for r in resources:
        if not os.path.exists(os.path.join(K8S_HA, r)):
            fail(f"{kdir}/kustomization.yaml: resource {r} does not exist")
    for r in K8S_HA_OUTSIDE:
        if r in resources:
            fail(f"{kdir}/kustomization.yaml applies {r}, which is kept out on purpose")
    patch_files = {p["path"] for p in k.get("patches", []) if "path" in p}
    for f in glob.glob(os.path.join(K8S_HA, "*.yaml")):
        b = os.path.basename(f)
        if b not in resources and b not in patch_files and b != "kustomization.yaml" and b not in K8S_HA_OUTSIDE:
            note(f"{kdir}/{b} is not in kustomization.yaml")
    emulated = kustomize_emulate(K8S_HA)
    if rendered:
        docs = load_all(rendered)
        how = "kubectl kustomize"
        want = {(d["kind"], d["metadata"]["name"]): d for d in docs}
        got = {(d["kind"], d["metadata"]["name"]): d for d in emulated}
        if set(want) != set(got):
            fail(f"check.py's kustomize emulation disagrees with kubectl on the objects: "
                 f"only kubectl {sorted(set(want) - set(got))}, only check.py {sorted(set(got) - set(want))}")
        for key in sorted(set(want) & set(got)):
            if normalized(want[key]) != normalized(got[key]):
                fail(f"check.py's kustomize emulation renders {key[0]}/{key[1]} differently from kubectl")
        if not problems:
            ok(f"check.py's kustomize emulation renders the same {len(docs)} objects as kubectl")
    else:
        docs = emulated
        how = "check.py's kustomize emulation (no kubectl)"
    base = k8s_docs()
    base_by_kind: dict[str, list[dict]] = {}
    for _, d in base:
        base_by_kind.setdefault(d["kind"], []).append(d)
    checked = [("rendered", d) for d in docs]
    for f in ("secret.yaml",):
        checked += [(f"../k8s/{f}", d) for d in load_all(os.path.join(DEPLOY, "k8s", f))]
    for f in K8S_HA_OUTSIDE:
        checked += [(f, d) for d in load_all(os.path.join(K8S_HA, f))]
    by_kind = check_k8s_objects(checked, kdir, frozenset(statefulset_claims(base_by_kind)))
    check_placeholder_secrets(by_kind, kdir)

    # The base's single control plane is gone, the Deployment replaces it.
    if find(docs, "StatefulSet", "outpost-control-plane") or find(docs, "Service", "outpost-control-plane-headless"):
        fail(f"{kdir}: the base's control-plane StatefulSet or its headless Service is still rendered")
    cp = find(docs, "Deployment", "outpost-control-plane")
    etcd = find(docs, "StatefulSet", "outpost-etcd")
    reg = find(docs, "Deployment", "outpost-registry")
    edge = find(docs, "DaemonSet", "outpost-edge-node")
    job = find([d for _, d in checked], "Job", "outpost-migrate")
    for what, d in (("Deployment/outpost-control-plane", cp), ("StatefulSet/outpost-etcd", etcd),
                    ("Deployment/outpost-registry", reg), ("DaemonSet/outpost-edge-node", edge), ("Job/outpost-migrate", job)):
        if d is None:
            fail(f"{kdir}: no {what}")
    if None in (cp, etcd, reg, edge, job):
        return
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    ns = K8S_NAMESPACE

    # etcd: a fixed membership of odd size, bootstrapped in parallel,
    # every member reached by its stable name.
    es, eps = etcd["spec"], pod_spec(etcd)
    ec = eps["containers"][0]
    eenv = env_of(ec)
    replicas = es.get("replicas", 1)
    where = f"{kdir}: StatefulSet/outpost-etcd"
    if replicas < 3 or replicas % 2 == 0:
        fail(f"{where}: {replicas} members; an odd number of at least 3 survives losing one")
    if es.get("podManagementPolicy") != "Parallel":
        fail(f"{where}: podManagementPolicy is not Parallel (an ordered start waits for a quorum that never comes)")
    svc = services.get(es.get("serviceName"), {})
    if not svc.get("spec", {}).get("publishNotReadyAddresses"):
        fail(f"{where}: its Service does not publish not-ready addresses (members cannot find each other to bootstrap)")
    ports = port_names(ec)
    sts, gov = etcd["metadata"]["name"], es.get("serviceName")
    member = lambda i, port: f"{sts}-{i}.{gov}.{ns}.svc:{port}"  # noqa: E731
    tls = str(eenv.get("ETCD_LISTEN_CLIENT_URLS", {}).get("value", "")).startswith("https://")
    scheme = "https" if tls else "http"
    want_cluster = ",".join(f"{sts}-{i}={scheme}://{member(i, ports.get('peer'))}" for i in range(replicas))
    if (eenv.get("ETCD_NAME", {}).get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        fail(f"{where}: ETCD_NAME is not the pod's name (downward API)")
    if eenv.get("ETCD_INITIAL_CLUSTER", {}).get("value") != want_cluster:
        fail(f"{where}: ETCD_INITIAL_CLUSTER is not {want_cluster}")
    for var, port in (("ETCD_INITIAL_ADVERTISE_PEER_URLS", "peer"), ("ETCD_ADVERTISE_CLIENT_URLS", "client")):
        want = f"{scheme}://$(ETCD_NAME).{gov}.{ns}.svc:{ports.get(port)}"
        if eenv.get(var, {}).get("value") != want:
            fail(f"{where}: {var} is not {want}")
    for var in ("ETCD_CERT_FILE", "ETCD_KEY_FILE", "ETCD_PEER_CERT_FILE", "ETCD_PEER_KEY_FILE", "ETCD_PEER_TRUSTED_CA_FILE"):
        if tls and not mounted_secret(eps, ec, str(eenv.get(var, {}).get("value", ""))):
            fail(f"{where}: {var} is not a file of a mounted Secret")
    if tls and eenv.get("ETCD_PEER_CLIENT_CERT_AUTH", {}).get("value") != "true":
        fail(f"{where}: members do not authenticate each other (ETCD_PEER_CLIENT_CERT_AUTH)")
    data = str(eenv.get("ETCD_DATA_DIR", {}).get("value", ""))
    templates = {t["metadata"]["name"] for t in es.get("volumeClaimTemplates", [])}
    if not any(m["name"] in templates and data.startswith(m["mountPath"].rstrip("/") + "/") for m in ec.get("volumeMounts", [])):
        fail(f"{where}: ETCD_DATA_DIR {data} is not a directory inside the member's claim")
    etcd_tls_secret = (mounted_secret(eps, ec, str(eenv.get("ETCD_CERT_FILE", {}).get("value", ""))) or ("?",))[0]
    store = ",".join(member(i, ports.get("client")) for i in range(replicas))

    # The registry: HTTPS and auth.
    rps = pod_spec(reg)
    rc = rps["containers"][0]
    renv = {n: e.get("value") for n, e in env_of(rc).items()}
    where = f"{kdir}: Deployment/outpost-registry"
    for var in ("REGISTRY_HTTP_TLS_CERTIFICATE", "REGISTRY_HTTP_TLS_KEY", "REGISTRY_AUTH_HTPASSWD_PATH"):
        if not mounted_secret(rps, rc, str(renv.get(var))):
            fail(f"{where}: {var} is not a file of a mounted Secret")
    reg_tls_secret = (mounted_secret(rps, rc, str(renv.get("REGISTRY_HTTP_TLS_CERTIFICATE"))) or ("?",))[0]
    reg_svc = [s for s in services.values() if selector_matches({"matchLabels": s["spec"].get("selector", {})}, reg["spec"]["template"]["metadata"]["labels"])]
    reg_urls = {f"https://{s['metadata']['name']}.{ns}.svc:{p['port']}" for s in reg_svc for p in s["spec"]["ports"]}

    # The control planes, the nodes and the migrate Job agree on the store
    # and the registry, and can check both certificates.
    cps = pod_spec(cp)
    cc = cps["containers"][0]
    cenv = env_of(cc)
    where = f"{kdir}: Deployment/outpost-control-plane"
    if cp["spec"].get("replicas", 1) < 2:
        fail(f"{where}: fewer than 2 replicas")
    if any("persistentVolumeClaim" in v for v in cps.get("volumes", [])):
        fail(f"{where}: mounts a PersistentVolumeClaim; on etcd it keeps nothing")
    if "OUTPOST_DATA_DIR" in cenv:
        note(f"{where}: OUTPOST_DATA_DIR is unused with etcd")
    want_store = f"etcd://{store}/"
    got_store = str(cenv.get("OUTPOST_STORE", {}).get("value", ""))
    if not got_store.startswith(want_store):
        fail(f"{where}: OUTPOST_STORE {got_store} does not list every member as etcd://{store}/PREFIX")
    ck = (cenv.get("OUTPOST_CERT_KEY", {}).get("valueFrom") or {}).get("secretKeyRef") or {}
    if not ck or ck.get("optional"):
        fail(f"{where}: OUTPOST_CERT_KEY must come from a Secret, not optional (every replica opens the others' secrets)")

    def client_checks(where: str, ps: dict, c: dict, registry_only: bool = False) -> dict[str, str]:
        env = env_of(c)
        vals = {n: str(e.get("value")) for n, e in env.items() if "value" in e}
        url = vals.get("OUTPOST_REGISTRY", "")
        if not any(url.startswith(u + "/") and len(url) > len(u) + 1 for u in reg_urls):
            fail(f"{where}: OUTPOST_REGISTRY {url} is not https://SERVICE.{ns}.svc:PORT/REPOSITORY of the registry ({sorted(reg_urls)})")
        ca = mounted_secret(ps, c, vals.get("OUTPOST_REGISTRY_CA_FILE", ""))
        if ca != (reg_tls_secret, "ca.crt"):
            fail(f"{where}: OUTPOST_REGISTRY_CA_FILE is not ca.crt of the registry's Secret {reg_tls_secret}")
        if not ((env.get("OUTPOST_REGISTRY_PASSWORD") or {}).get("valueFrom") or {}).get("secretKeyRef"):
            fail(f"{where}: OUTPOST_REGISTRY_PASSWORD does not come from a Secret")
        if not registry_only:
            if vals.get("OUTPOST_ETCD_CA_FILE") and mounted_secret(ps, c, vals["OUTPOST_ETCD_CA_FILE"]) != (etcd_tls_secret, "ca.crt"):
                fail(f"{where}: OUTPOST_ETCD_CA_FILE is not ca.crt of etcd's Secret {etcd_tls_secret}")
            if tls and "OUTPOST_ETCD_CA_FILE" not in vals:
                fail(f"{where}: etcd serves TLS but OUTPOST_ETCD_CA_FILE is not set")
        return vals

    cvals = client_checks(where, cps, cc)
    evals = client_checks(f"{kdir}: DaemonSet/outpost-edge-node", pod_spec(edge), pod_spec(edge)["containers"][0], registry_only=True)
    jps = pod_spec(job)
    jc = jps["containers"][0]
    jvals = client_checks(f"{kdir}/migrate.yaml: Job/outpost-migrate", jps, jc)
    args = jc.get("args", [])
    to = args[args.index("--to") + 1] if "--to" in args and args.index("--to") + 1 < len(args) else None
    if args[:1] != ["migrate"] or to != got_store:
        fail(f"{kdir}/migrate.yaml: args are not `migrate ... --to {got_store}` (the control planes' OUTPOST_STORE)")
    for var in ("OUTPOST_REGISTRY", "OUTPOST_REGISTRY_USER", "OUTPOST_REGISTRY_CA_FILE"):
        for who, vals in (("the nodes", evals), ("the migrate Job", jvals)):
            if vals.get(var) != cvals.get(var):
                fail(f"{kdir}: {var} of {who} ({vals.get(var)}) is not the control planes' ({cvals.get(var)})")
    for var in ("OUTPOST_ETCD_CA_FILE",):
        if jvals.get(var) != cvals.get(var):
            fail(f"{kdir}: {var} of the migrate Job is not the control planes'")
    jenv = env_of(jc)
    for var in ("OUTPOST_CERT_KEY", "OUTPOST_ETCD_USER", "OUTPOST_ETCD_PASSWORD", "OUTPOST_REGISTRY_PASSWORD"):
        if (jenv.get(var) or {}).get("valueFrom") != (cenv.get(var) or {}).get("valueFrom"):
            fail(f"{kdir}: {var} of the migrate Job does not come from where the control planes' does")
    jl = job["spec"]["template"]["metadata"]["labels"]
    for svc in services.values():
        if svc["spec"].get("selector") and selector_matches({"matchLabels": svc["spec"]["selector"]}, jl):
            fail(f"{kdir}/migrate.yaml: Service {svc['metadata']['name']} would send traffic to the migrate Job's pod")
    # Nodes follow the Service: a Deployment's pods have no stable names.
    url = str(env_of(pod_spec(edge)["containers"][0]).get("OUTPOST_CONTROL_PLANE", {}).get("value", ""))
    cp_svc = [s for s in services.values() if s["spec"].get("selector") and selector_matches(
        {"matchLabels": s["spec"]["selector"]}, cp["spec"]["template"]["metadata"]["labels"])]
    if not any(url == f"https://{s['metadata']['name']}.{ns}.svc:{p['port']}" for s in cp_svc for p in s["spec"]["ports"]):
        fail(f"{kdir}: the nodes' OUTPOST_CONTROL_PLANE {url} is not the control planes' Service")

    # What README.md has operators apply before the migrate Job: etcd and
    # the registry, and nothing of the control plane.
    for comp in STORE_COMPONENTS:
        picked = [d for d in docs if (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == comp]
        kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in picked)
        if any("outpost/" in c.get("image", "") for d in picked for c in (pod_spec(d) or {}).get("containers", [])):
            fail(f"{kdir}: -l app.kubernetes.io/component={comp} would apply a control plane or node")
        ok(f"{kdir}: kubectl apply -k {kdir} -l app.kubernetes.io/component={comp} applies {', '.join(kinds)}")
    # ... and the one that keeps the nodes' caches: everything but the DaemonSet.
    kept = [d for d in docs if (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") != "edge-node"]
    left = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs if d not in kept)
    if left != ["DaemonSet/outpost-edge-node"]:
        fail(f"{kdir}: -l app.kubernetes.io/component!=edge-node leaves out {left}, not just the DaemonSet")
    elif "-l 'app.kubernetes.io/component!=edge-node'" not in readme_text():
        fail("README.md does not show -l 'app.kubernetes.io/component!=edge-node'")
    for kind_name in (("StatefulSet", "outpost-etcd"), ("Deployment", "outpost-registry"), ("Service", "outpost-etcd"),
                      ("Service", "outpost-registry"), ("PersistentVolumeClaim", "outpost-registry-data")):
        d = find(docs, *kind_name)
        if d and (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") not in STORE_COMPONENTS:
            fail(f"{kdir}: {kind_name[0]}/{kind_name[1]} lacks the app.kubernetes.io/component label the upgrade applies by")
    for comp in STORE_COMPONENTS:
        if f"-l app.kubernetes.io/component={comp}" not in readme_text():
            fail(f"README.md does not apply -l app.kubernetes.io/component={comp} before the migrate Job")

    # compose.ha.yaml and the overlay configure the same things.
    compose = compose_file("compose.ha.yaml")["services"]
    pairs = (("registry", rc, "REGISTRY_"), ("etcd-1", ec, "ETCD_"), ("control-plane-1", cc, "OUTPOST_"),
             ("edge-1", pod_spec(edge)["containers"][0], "OUTPOST_"))
    allowed_extra = {"OUTPOST_NODE_ID", "OUTPOST_NODE_TOKEN", "OUTPOST_CONTROL_PLANE"}
    for svc_name, c, prefix in pairs:
        ck8s = {n for n in env_of(c) if n.startswith(prefix)}
        ccompose = {n for n in service_env(compose.get(svc_name, {})) if n.startswith(prefix)}
        missing = ccompose - ck8s - (allowed_extra if svc_name == "edge-1" else set())
        if missing:
            fail(f"{kdir}: compose.ha.yaml's {svc_name} sets {sorted(missing)}, the overlay's {c['name']} does not")
        elif prefix == "REGISTRY_" and ck8s != ccompose:
            fail(f"{kdir}: the registry's settings differ from compose.ha.yaml's: {sorted(ck8s ^ ccompose)}")
    if not problems:
        ok(f"{kdir} ({how}): {len(docs)} objects; etcd membership, TLS files, store and registry URLs, CAs, "
           f"the migrate Job, the upgrade's selectors and compose.ha.yaml agree")


def cmd_k8s_env(rendered: str | None, target: str, opts: list[str]) -> None:
    """KEY=VALUE of a workload's container in the overlay (or, for
    base:KIND/NAME, in deploy/k8s), as the kubelet would set them, for
    check.sh's HA smoke test: values from --secret NAME/KEY=VALUE and
    --field PATH=VALUE, $(VAR) expanded, --set K=V added, and every path
    under a volume mount moved under --root: Secret volumes to
    ROOT/secret/NAME/KEY, claims to ROOT/pvc/CLAIM (a StatefulSet's
    TEMPLATE-STS-INSTANCE), others to ROOT/WORKLOAD-INSTANCE/VOLUME (all
    created). --args-out FILE writes the container's args, moved the same
    way, one per line."""
    if target.startswith("base:"):
        target = target[len("base:"):]
        docs = [d for _, d in k8s_docs()]
    else:
        docs = load_all(rendered) if rendered else kustomize_emulate(K8S_HA)
        docs += load_all(os.path.join(K8S_HA, "migrate.yaml"))
    kind, _, name = target.partition("/")
    w = find(docs, kind, name)
    if w is None:
        fail(f"no {target} in the overlay")
        return
    secrets, fields, sets, root, instance, args_out = {}, {}, [], None, "0", None
    it = iter(opts)
    for o in it:
        v = next(it)
        if o == "--secret":
            k, _, val = v.partition("=")
            secrets[k] = val
        elif o == "--field":
            k, _, val = v.partition("=")
            fields[k] = val
        elif o == "--set":
            sets.append(v.split("=", 1))
        elif o == "--root":
            root = v
        elif o == "--instance":
            instance = v
        elif o == "--args-out":
            args_out = v
    ps = pod_spec(w)
    c = ps["containers"][0]
    vols = {v["name"]: v for v in ps.get("volumes", [])}
    templates = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
    mounts = []
    for m in c.get("volumeMounts", []):
        v = vols.get(m["name"], {})
        if "secret" in v:
            for item in v["secret"].get("items", []):
                if item["key"] != item["path"]:
                    fail(f"{target}: Secret item {item['key']} mounted as {item['path']}: the smoke test lays files out by key")
            to = os.path.join(root, "secret", v["secret"]["secretName"])
        elif "persistentVolumeClaim" in v:
            to = os.path.join(root, "pvc", v["persistentVolumeClaim"]["claimName"])
        elif m["name"] in templates:
            to = os.path.join(root, "pvc", f"{m['name']}-{name}-{instance}")
        else:
            to = os.path.join(root, f"{name}-{instance}", m["name"])
        if "secret" not in v:
            os.makedirs(to, exist_ok=True)
        mounts.append((m["mountPath"].rstrip("/"), to))
    mounts.sort(key=lambda m: -len(m[0]))

    def moved(value: str) -> str:
        for mp, to in mounts:
            if value == mp or value.startswith(mp + "/"):
                return to + value[len(mp):]
        return value

    out: dict[str, str] = {}
    for e in c.get("env", []):
        if "value" in e:
            val = re.sub(r"\$\((\w+)\)", lambda m: out.get(m.group(1), m.group(0)), str(e["value"]))
        else:
            src = e["valueFrom"]
            if "secretKeyRef" in src:
                ref = src["secretKeyRef"]
                key = f"{ref['name']}/{ref['key']}"
                if key not in secrets:
                    if ref.get("optional"):
                        continue
                    fail(f"{target}: env {e['name']} needs --secret {key}=...")
                    continue
                val = secrets[key]
            elif "fieldRef" in src:
                path = src["fieldRef"]["fieldPath"]
                if path not in fields:
                    fail(f"{target}: env {e['name']} needs --field {path}=...")
                    continue
                val = fields[path]
            else:
                fail(f"{target}: env {e['name']}: unsupported valueFrom {sorted(src)}")
                continue
        out[e["name"]] = val
    for k, v in sets:
        out[k] = v
    for k, v in out.items():
        print(f"{k}={moved(v)}")
    if args_out:
        with open(args_out, "w", encoding="utf-8") as f:
            for a in c.get("args", []):
                f.write(moved(str(a)) + "\n")


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
    for fname in COMPOSE_FILES:
        c = compose_file(fname)
        for n, s in c["services"].items():
            binary = "control-plane" if "control-plane" in str(s.get("image", "")) else "edge-node" if "edge-node" in str(s.get("image", "")) else None
            if binary:
                for var in s.get("environment") or {}:
                    uses.append((f"{fname} service {n}", binary, var))
    ha_docs = [(f"../k8s-ha/{os.path.basename(p)}", d) for p in sorted(glob.glob(os.path.join(K8S_HA, "*.yaml")))
               if os.path.basename(p) != "kustomization.yaml" for d in load_all(p)]
    for f, d in k8s_docs() + ha_docs:
        if d.get("kind") in WORKLOADS:
            for ctr in d["spec"]["template"]["spec"]["containers"]:
                # A patch's container has no image: its name says which.
                image = ctr.get("image", "") or f"outpost/{ctr['name']}"
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
    ok(f"{n} OUTPOST_* uses across compose, compose.ha, k8s, k8s-ha, Dockerfiles and systemd checked against --help")


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
        "compose": lambda: cmd_compose(args[0] if args else "compose.yaml"),
        "k8s-ha": lambda: cmd_k8s_ha(args[0] if args else None),
        "k8s-env": lambda: cmd_k8s_env(args[0] or None, args[1], args[2:]),
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
