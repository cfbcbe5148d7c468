#!/usr/bin/env python3
"""Holds deploy/'s manifests to the code they deploy.

    python3 deploy/check-manifests.py          (from the repository root, or anywhere)

Parses deploy/compose.yaml, every YAML file under deploy/k8s/ (PyYAML,
safe_load_all), deploy/nginx/*.conf and deploy/Dockerfile, reads the Rust
sources (engine/src, admin/src, shared/src, src/) and checks:

- every environment variable a manifest gives a qyzar container is one the
  binary reads in that role (a string literal in that role's sources);
- every variable a role needs in this topology is set (listen addresses
  that are not loopback, channel keys, the admin URL, CQL nodes, trusted
  proxies, the database URL, the master key, ...), and the values both
  roles must share are the same;
- container ports, health checks and probes, Service targetPorts, nginx
  upstream servers and the URLs services call each other on agree with the
  listen ports set in the same manifest (or the binaries' defaults), and
  probe paths are routes the routers serve on that listener;
- nginx sends every engine route in engine/src/router.rs to the engines and
  only those, and never serves /internal/;
- images are pinned (no :latest, no missing tag) and the qyzar image and
  command agree across the Dockerfile, compose and k8s;
- the HPA, PDB and Services select the Deployments' pod labels;
- Secrets hold placeholders only.

Exits 1 with one line per problem, or prints a one-line summary.
"""

from __future__ import annotations

import ipaddress
import pathlib
import re
import sys
from urllib.parse import urlsplit

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
problems: list[str] = []
checked = 0


def fail(where: str, msg: str) -> None:
    problems.append(f"{where}: {msg}")


def ok() -> None:
    global checked
    checked += 1


def rel(p: pathlib.Path) -> str:
    return str(p.relative_to(ROOT))


# --- what the code says ------------------------------------------------------

def rust_sources(*dirs: str) -> str:
    text = []
    for d in dirs:
        base = ROOT / d
        files = [base] if base.is_file() else sorted(base.rglob("*.rs"))
        for f in files:
            # Comments may name variables the code does not read.
            text.append(re.sub(r"//[^\n]*", "", f.read_text()))
    return "\n".join(text)


SHARED = rust_sources("shared/src")
ENGINE_SRC = rust_sources("engine/src")
ADMIN_SRC = rust_sources("admin/src")
LAUNCHER = rust_sources("src/lib.rs", "src/main.rs")
ENV_NAME = re.compile(r'"((?:QYZAR|STRIPE)_[A-Z0-9_]+)"')
# RUST_LOG is read by tracing-subscriber's EnvFilter::try_from_default_env.
LOG_VARS = {"RUST_LOG"} if "try_from_default_env" in SHARED else set()
READS = {
    "engine": set(ENV_NAME.findall(ENGINE_SRC + SHARED + LAUNCHER)) | LOG_VARS,
    "admin": set(ENV_NAME.findall(ADMIN_SRC + SHARED + LAUNCHER)) | LOG_VARS,
}
# Test-only switches are not configuration.
for names in READS.values():
    names.discard("QYZAR_TEST_REQUIRE_BACKENDS")


def default_addr(src: str, var: str) -> str:
    m = re.search(r'"%s"[^;]*?"(\d+\.\d+\.\d+\.\d+:\d+)"' % var, src, re.S)
    if not m:
        fail("source", f"no default address found for {var}")
        return "127.0.0.1:0"
    return m.group(1)


DEFAULTS = {
    "QYZAR_ENGINE_ADDR": default_addr(ENGINE_SRC, "QYZAR_ENGINE_ADDR"),
    "QYZAR_ENGINE_INTERNAL_ADDR": default_addr(ENGINE_SRC, "QYZAR_ENGINE_INTERNAL_ADDR"),
    "QYZAR_ADMIN_ADDR": default_addr(ADMIN_SRC, "QYZAR_ADMIN_ADDR"),
}


# The control plane's paths (`paths::SNAPSHOT` …), which both services'
# routers name instead of string literals.
CONTROL_PATHS = dict(re.findall(
    r'pub const ([A-Z_]+): &str = "(/[^"]*)";',
    (ROOT / "shared/src/control/mod.rs").read_text()))


def routes_of_match(path: str) -> set[str]:
    """Paths a hand-written hyper router matches on (`"/x" => match` or
    `paths::X => match`)."""
    text = (ROOT / path).read_text()
    literal = set(re.findall(r'^\s*"(/[^"]*)"\s*=>', text, re.M))
    named = {CONTROL_PATHS[n] for n in re.findall(r'^\s*paths::([A-Z_]+)\s*=>', text, re.M)}
    return literal | named


ENGINE_PUBLIC_ROUTES = routes_of_match("engine/src/router.rs")
ENGINE_INTERNAL_ROUTES = routes_of_match("engine/src/internal.rs")
ADMIN_ROUTES = set(re.findall(r'\.route\(\s*"(/[^"]*)"', ADMIN_SRC)) | {
    CONTROL_PATHS[n] for n in re.findall(r'\.route\(\s*paths::([A-Z_]+)', ADMIN_SRC)}
ENGINE_METRICS = set(re.findall(r'"(qyzar_[a-z_]+)"', ENGINE_SRC))
CARGO_VERSION = re.search(
    r'^\[package\][^\[]*?^version\s*=\s*"([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M | re.S
).group(1)

# --- helpers -----------------------------------------------------------------------


def split_addr(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def image_pinned(where: str, image: str) -> None:
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    if "@sha256:" in image:
        ok()
        return
    if not tag:
        fail(where, f"image {image!r} has no tag (pin a version)")
    elif tag == "latest":
        fail(where, f"image {image!r} uses :latest (pin a version)")
    else:
        ok()


def urls_in(text: str) -> list[tuple[str, int, str]]:
    """(host, port, path) of http URLs and bash /dev/tcp requests in a command."""
    out = []
    for m in re.finditer(r"https?://([\w.\-]+):(\d+)(/[\w./\-]*)?", text):
        out.append((m.group(1), int(m.group(2)), m.group(3) or "/"))
    for m in re.finditer(r"/dev/tcp/([\w.\-]+)/(\d+)", text):
        path = re.search(r"GET (\S+) HTTP", text)
        out.append((m.group(1), int(m.group(2)), path.group(1) if path else "/"))
    return out


class Role:
    """One qyzar container: its role, env, and the ports it listens on."""

    def __init__(self, where: str, role: str, env: dict[str, str]):
        self.where, self.role, self.env = where, role, env
        if role == "engine":
            self.public = split_addr(env.get("QYZAR_ENGINE_ADDR", DEFAULTS["QYZAR_ENGINE_ADDR"]))
            self.internal = split_addr(
                env.get("QYZAR_ENGINE_INTERNAL_ADDR", DEFAULTS["QYZAR_ENGINE_INTERNAL_ADDR"])
            )
            self.listeners = {
                self.public[1]: ("public", ENGINE_PUBLIC_ROUTES),
                self.internal[1]: ("internal", ENGINE_INTERNAL_ROUTES),
            }
        else:
            self.public = split_addr(env.get("QYZAR_ADMIN_ADDR", DEFAULTS["QYZAR_ADMIN_ADDR"]))
            self.internal = None
            self.listeners = {self.public[1]: ("admin", ADMIN_ROUTES)}

    def check_names(self) -> None:
        for name in self.env:
            if name.startswith(("QYZAR_", "STRIPE_")) or name == "RUST_LOG":
                if name in READS[self.role]:
                    ok()
                else:
                    other = [r for r in READS if name in READS[r]]
                    hint = f" (only the {other[0]} reads it)" if other else ""
                    fail(self.where, f"{name} is not read by `qyzar {self.role}`{hint}")

    def require(self, *names: str) -> None:
        for n in names:
            if n in self.env and str(self.env[n]).strip():
                ok()
            else:
                fail(self.where, f"{n} must be set for `qyzar {self.role}` in this topology")

    def check_required(self, push_mode: bool) -> None:
        if self.role == "engine":
            self.require(
                "QYZAR_ENGINE_ADDR", "QYZAR_ENGINE_ADMIN_URL", "QYZAR_ADMIN_ENGINE_REPORT_KEY",
                "QYZAR_ENGINE_CQL_NODES", "QYZAR_ENGINE_TRUSTED_PROXIES", "QYZAR_ENGINE_SNAPSHOT_PATH",
            )
            if push_mode:
                self.require("QYZAR_ENGINE_PUSH_KEY", "QYZAR_ENGINE_INTERNAL_ADDR")
                if is_loopback(self.internal[0]):
                    fail(self.where, "the admin pushes to this engine but QYZAR_ENGINE_INTERNAL_ADDR is loopback")
            else:
                # Pull mode: nobody pushes, so the pull interval is how fast changes land.
                self.require("QYZAR_ENGINE_PULL_SECONDS")
            if is_loopback(self.public[0]):
                fail(self.where, "QYZAR_ENGINE_ADDR is loopback: nothing outside the container reaches it")
            for var in ("QYZAR_ENGINE_MASTER_KEY", "QYZAR_MASTER_KEY", "QYZAR_DATABASE_URL"):
                if var in self.env:
                    fail(self.where, f"{var} given to an engine: it needs neither the master key nor the database")
        else:
            self.require(
                "QYZAR_ADMIN_ADDR", "QYZAR_DATABASE_URL", "QYZAR_ADMIN_ENGINE_REPORT_KEY",
                "QYZAR_ADMIN_CQL_NODES", "QYZAR_ENGINE_PUBLIC_URL", "QYZAR_PUBLIC_URL",
                "QYZAR_ADMIN_TRUSTED_PROXIES",
            )
            if not (self.env.get("QYZAR_MASTER_KEY") or self.env.get("QYZAR_MASTER_KEY_FILE")):
                fail(self.where, "QYZAR_MASTER_KEY or QYZAR_MASTER_KEY_FILE must be set: the default "
                     "creates a fresh key inside the container, and secrets sealed with it are lost with it")
            else:
                ok()
            if push_mode:
                self.require("QYZAR_ENGINE_PUSH_KEY")
            db = str(self.env.get("QYZAR_DATABASE_URL", ""))
            if db and not db.startswith("postgres://"):
                fail(self.where, f"QYZAR_DATABASE_URL should be postgres:// in production, not {db.split(':')[0]}")
            if is_loopback(self.public[0]):
                fail(self.where, "QYZAR_ADMIN_ADDR is loopback: nothing outside the container reaches it")
        for var in ("QYZAR_ENGINE_TRUSTED_PROXIES", "QYZAR_ADMIN_TRUSTED_PROXIES"):
            if var in self.env:
                for cidr in str(self.env[var]).split(","):
                    try:
                        ipaddress.ip_network(cidr.strip(), strict=False)
                        ok()
                    except ValueError:
                        fail(self.where, f"{var}: {cidr!r} is not a CIDR (the service refuses to start)")

    def check_probe_url(self, what: str, host: str, port: int, path: str) -> None:
        if not is_loopback(host):
            return
        if port not in self.listeners:
            fail(self.where, f"{what} asks port {port}, but `qyzar {self.role}` listens on "
                 f"{sorted(self.listeners)} (from its env or the defaults)")
            return
        listener, routes = self.listeners[port]
        if path in routes:
            ok()
        else:
            fail(self.where, f"{what} asks {path} on the {listener} listener, which serves "
                 f"only {sorted(routes)}")


def check_metric_names(where: str, text: str) -> None:
    for name in re.findall(r"\b(qyzar_[a-z_]+)\b", text):
        if name in ENGINE_METRICS:
            ok()
        else:
            fail(where, f"metric {name} is not exported by engine/src")


def check_same(where: str, roles: list[Role], var: str) -> None:
    values = {str(r.env[var]) for r in roles if var in r.env}
    if len(values) > 1:
        fail(where, f"{var} differs between containers; both roles must hold the same value")
    else:
        ok()


def check_keys_differ(where: str, role: Role) -> None:
    p, r = role.env.get("QYZAR_ENGINE_PUSH_KEY"), role.env.get("QYZAR_ADMIN_ENGINE_REPORT_KEY")
    if p is not None and r is not None and str(p) == str(r):
        fail(where, "QYZAR_ENGINE_PUSH_KEY and QYZAR_ADMIN_ENGINE_REPORT_KEY are the same; "
             "one key per direction (the services refuse to start)")


def check_cql_nodes(where: str, nodes: str, hosts: set[str], port: int = 9042) -> None:
    for node in nodes.split(","):
        host, p = split_addr(node.strip())
        if host in hosts and p == port:
            ok()
        else:
            fail(where, f"CQL node {node!r} is not one of the ScyllaDB hosts {sorted(hosts)} on {port}")


# --- Dockerfile ---------------------------------------------------------------------

dockerfile = (DEPLOY / "Dockerfile").read_text()
for image in re.findall(r"^FROM\s+(\S+)", dockerfile, re.M):
    image_pinned("deploy/Dockerfile", image)
entry = re.findall(r"^ENTRYPOINT\s+(.+)$", dockerfile, re.M)
if entry and entry[-1].strip() == '["qyzar"]':
    ok()
else:
    fail("deploy/Dockerfile", 'the runtime stage must end with ENTRYPOINT ["qyzar"]')
user = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
if not user or user[-1].split(":")[0] in ("root", "0"):
    fail("deploy/Dockerfile", "the runtime stage must run as a non-root USER")
else:
    ok()
if "-p qyzar --bin qyzar" in dockerfile or "--bin qyzar" in dockerfile:
    ok()
else:
    fail("deploy/Dockerfile", "does not build the `qyzar` binary")
QYZAR_IMAGE = f"qyzar:{CARGO_VERSION}"

# --- compose -------------------------------------------------------------------------

COMPOSE = DEPLOY / "compose.yaml"
compose = yaml.safe_load(COMPOSE.read_text())
services: dict = compose.get("services", {})
env_example = DEPLOY / ".env.example"
example_names = set(re.findall(r"^([A-Z0-9_]+)=", env_example.read_text(), re.M)) if env_example.exists() else set()
compose_roles: list[Role] = []
scylla_hosts = set()
for name, svc in services.items():
    where = f"deploy/compose.yaml services.{name}"
    image = svc.get("image")
    if not image:
        fail(where, "no image")
    else:
        image_pinned(where, image)
    if "healthcheck" not in svc or not svc["healthcheck"].get("test"):
        fail(where, "no healthcheck")
    else:
        ok()
    for dep, spec in (svc.get("depends_on") or {}).items() if isinstance(svc.get("depends_on"), dict) else []:
        if dep not in services:
            fail(where, f"depends_on {dep}, which is not a service")
        elif not isinstance(spec, dict) or "condition" not in spec:
            fail(where, f"depends_on {dep} without a condition")
        elif spec["condition"] == "service_healthy" and "healthcheck" not in services[dep]:
            fail(where, f"waits for {dep} to be healthy, but {dep} has no healthcheck")
        else:
            ok()
    if isinstance(svc.get("depends_on"), list):
        fail(where, "depends_on as a list has no conditions; use the mapping form")
    for value in (svc.get("environment") or {}).values():
        for ref in re.findall(r"\$\{([A-Z0-9_]+)", str(value)):
            if ref in example_names:
                ok()
            else:
                fail(where, f"${{{ref}}} is not listed in deploy/.env.example")
    if image and image.startswith("scylladb/scylla"):
        scylla_hosts.add(svc.get("hostname", name))
        cmd = " ".join(svc.get("command") or [])
        for flag in ("--seeds", "--smp 1", "--memory 1G", "--overprovisioned 1"):
            if flag in cmd:
                ok()
            else:
                fail(where, f"ScyllaDB command lacks {flag}")
    if image and image.split(":")[0] == "qyzar":
        if image != QYZAR_IMAGE:
            fail(where, f"image {image} is not {QYZAR_IMAGE} (Cargo.toml's version)")
        cmd = svc.get("command") or []
        role = cmd[0] if cmd else None
        if role not in ("engine", "admin"):
            fail(where, f"command {cmd!r}: expected [engine] or [admin]")
            continue
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        compose_roles.append(Role(where, role, env))
        compose_roles[-1].service = name

if len(scylla_hosts) != 3:
    fail("deploy/compose.yaml", f"expected 3 ScyllaDB nodes, found {len(scylla_hosts)}")
engines = [r for r in compose_roles if r.role == "engine"]
admins = [r for r in compose_roles if r.role == "admin"]
if len(engines) < 3 or len(admins) != 1:
    fail("deploy/compose.yaml", f"expected 3 engines and 1 admin, found {len(engines)} and {len(admins)}")
by_service = {r.service: r for r in compose_roles}
pg_services = {n for n, s in services.items() if str(s.get("image", "")).startswith("postgres:")}

for r in compose_roles:
    r.check_names()
    r.check_required(push_mode=True)
    check_keys_differ(r.where, r)
    hc = services[r.service]["healthcheck"]["test"]
    text = " ".join(hc) if isinstance(hc, list) else hc
    for host, port, path in urls_in(text):
        r.check_probe_url("healthcheck", host, port, path)
    check_metric_names(r.where, text)
for var in ("QYZAR_ENGINE_PUSH_KEY", "QYZAR_ADMIN_ENGINE_REPORT_KEY"):
    check_same("deploy/compose.yaml", compose_roles, var)


def check_service_url(where: str, var: str, url: str, targets: dict[str, int]) -> None:
    parts = urlsplit(url)
    if parts.hostname in targets and parts.port == targets[parts.hostname]:
        ok()
    else:
        fail(where, f"{var}={url}: expected one of "
             + ", ".join(f"{h}:{p}" for h, p in sorted(targets.items())))


engine_public = {r.service: r.public[1] for r in engines}
engine_internal = {r.service: r.internal[1] for r in engines}
admin_port = {r.service: r.public[1] for r in admins}
for r in engines:
    check_service_url(r.where, "QYZAR_ENGINE_ADMIN_URL", r.env.get("QYZAR_ENGINE_ADMIN_URL", ""), admin_port)
    check_cql_nodes(r.where, r.env.get("QYZAR_ENGINE_CQL_NODES", ""), scylla_hosts)
    rf = int(r.env.get("QYZAR_ENGINE_CQL_RF", "3"))
    if rf > len(scylla_hosts):
        fail(r.where, f"QYZAR_ENGINE_CQL_RF={rf} but only {len(scylla_hosts)} ScyllaDB nodes")
for a in admins:
    urls = [u.strip() for u in a.env.get("QYZAR_ENGINE_INTERNAL_URLS", "").split(",") if u.strip()]
    pushed = set()
    for u in urls:
        check_service_url(a.where, "QYZAR_ENGINE_INTERNAL_URLS", u, engine_internal)
        pushed.add(urlsplit(u).hostname)
    missing = set(engine_internal) - pushed
    if missing:
        fail(a.where, f"QYZAR_ENGINE_INTERNAL_URLS leaves out {sorted(missing)}: they would get changes only by pulling")
    check_service_url(a.where, "QYZAR_ENGINE_PUBLIC_URL", a.env.get("QYZAR_ENGINE_PUBLIC_URL", ""), engine_public)
    check_cql_nodes(a.where, a.env.get("QYZAR_ADMIN_CQL_NODES", ""), scylla_hosts)
    # Compose interpolations (${VAR:?message}) may hold ':' and '/'.
    db = urlsplit(re.sub(r"\$\{[^}]*\}", "x", a.env.get("QYZAR_DATABASE_URL", "")))
    if db.hostname in pg_services and (db.port or 5432) == 5432:
        ok()
    else:
        fail(a.where, f"QYZAR_DATABASE_URL host {db.hostname} is not the PostgreSQL service {sorted(pg_services)}")
    eks = {r.env.get("QYZAR_ENGINE_CQL_KEYSPACE", "qyzar") for r in engines}
    if a.env.get("QYZAR_ADMIN_CQL_KEYSPACE", "qyzar") in eks and len(eks) == 1:
        ok()
    else:
        fail(a.where, "QYZAR_ADMIN_CQL_KEYSPACE differs from the engines' QYZAR_ENGINE_CQL_KEYSPACE")

# --- nginx ---------------------------------------------------------------------------

NGINX = DEPLOY / "nginx" / "qyzar.conf"
nginx = re.sub(r"#[^\n]*", "", NGINX.read_text())
ups_file = DEPLOY / "nginx" / "upstreams.compose.conf"
ups = re.sub(r"#[^\n]*", "", ups_file.read_text())
upstreams = {
    m.group(1): re.findall(r"server\s+([\w.\-]+):(\d+)", m.group(2))
    for m in re.finditer(r"upstream\s+(\w+)\s*\{(.*?)\}", ups, re.S)
}
locations = {}
for m in re.finditer(r"location\s+(=|\^~)?\s*(\S+)\s*\{([^}]*)\}", nginx):
    locations[(m.group(1) or "", m.group(2))] = m.group(3)
engine_up = {name for name, servers in upstreams.items()
             if servers and all(h in engine_public for h, _ in servers)}
admin_up = {name for name, servers in upstreams.items()
            if servers and all(h in admin_port for h, _ in servers)}
for name, servers in upstreams.items():
    for host, port in servers:
        target = {**engine_public, **admin_port}
        if host in target and int(port) == target[host]:
            ok()
        else:
            fail(rel(ups_file), f"upstream {name} server {host}:{port} is not a compose engine/admin "
                 f"on its listen port ({', '.join(f'{h}:{p}' for h, p in sorted(target.items()))})")
    if host_set := {h for h, _ in servers}:
        if name in engine_up and host_set != set(engine_public):
            fail(rel(ups_file), f"upstream {name} leaves out engines {sorted(set(engine_public) - host_set)}")


def proxied_to(body: str) -> str | None:
    m = re.search(r"proxy_pass\s+https?://(\w+)", body)
    return m.group(1) if m else None


exact_engine = {path for (mod, path), body in locations.items() if mod == "=" and proxied_to(body) in engine_up}
for route in sorted(ENGINE_PUBLIC_ROUTES):
    if route in exact_engine:
        ok()
    else:
        fail(rel(NGINX), f"engine route {route} (engine/src/router.rs) is not proxied to the engines")
for path in sorted(exact_engine - ENGINE_PUBLIC_ROUTES):
    fail(rel(NGINX), f"location = {path} goes to the engines, which have no such route")
for (mod, path), body in locations.items():
    target = proxied_to(body)
    if target and target not in upstreams:
        fail(rel(NGINX), f"location {path} proxies to {target}, which no upstream defines")
catch_all = locations.get(("", "/"))
if catch_all is None or proxied_to(catch_all) not in admin_up:
    fail(rel(NGINX), "location / must proxy to the admin upstream (API and dashboard)")
else:
    ok()
internal = locations.get(("^~", "/internal/"))
if internal is None or "return 404" not in internal:
    fail(rel(NGINX), "location ^~ /internal/ must return 404 (the admin's engine-only routes)")
else:
    ok()
if not {"/internal/snapshot", "/internal/traffic"} <= ADMIN_ROUTES:
    fail("admin/src/lib.rs", "expected the admin's /internal/ routes; update this check")
if "$proxy_add_x_forwarded_for" in nginx:
    ok()
else:
    fail(rel(NGINX), "X-Forwarded-For is not set: the engines' per-IP limits would see nginx only")
listen = [int(p) for p in re.findall(r"listen\s+(\d+)", nginx)]
nginx_svc = [(n, s) for n, s in services.items() if str(s.get("image", "")).startswith("nginx:")]
for n, s in nginx_svc:
    where = f"deploy/compose.yaml services.{n}"
    mounts = " ".join(s.get("volumes") or [])
    for f in ("./nginx/qyzar.conf", "./nginx/upstreams.compose.conf"):
        if f in mounts:
            ok()
        else:
            fail(where, f"does not mount {f}")
    published = [int(str(p).split(":")[-1]) for p in s.get("ports") or []]
    if published and all(p in listen for p in published):
        ok()
    else:
        fail(where, f"publishes container ports {published}, nginx listens on {listen}")
    hc = " ".join(s["healthcheck"]["test"]) if "healthcheck" in s else ""
    for host, port, path in urls_in(hc):
        if port not in listen:
            fail(where, f"healthcheck asks port {port}, nginx listens on {listen}")
        elif ("=", path) in locations or path.startswith("/"):
            ok()
    ip = (s.get("networks") or {}).get("qyzar", {}).get("ipv4_address") if isinstance(s.get("networks"), dict) else None
    for r in compose_roles:
        var = "QYZAR_ENGINE_TRUSTED_PROXIES" if r.role == "engine" else "QYZAR_ADMIN_TRUSTED_PROXIES"
        nets = [ipaddress.ip_network(c.strip(), strict=False) for c in r.env.get(var, "").split(",") if c.strip()]
        if ip and any(ipaddress.ip_address(ip) in n for n in nets):
            ok()
        else:
            fail(r.where, f"{var} does not include nginx's address {ip}: the client would be nginx")
if len(nginx_svc) != 1:
    fail("deploy/compose.yaml", "expected one nginx service")

# --- Kubernetes ------------------------------------------------------------------------

K8S = DEPLOY / "k8s"
docs: list[tuple[str, dict]] = []
for f in sorted(K8S.glob("*.yaml")):
    for d in yaml.safe_load_all(f.read_text()):
        if d:
            docs.append((rel(f), d))
kust = next((d for f, d in docs if d.get("kind") == "Kustomization"), None)
listed = set(kust.get("resources", [])) if kust else set()
for f in sorted(K8S.glob("*.yaml")):
    if f.name == "kustomization.yaml":
        continue
    if f.name in listed:
        ok()
    else:
        fail(rel(f), "not listed in deploy/k8s/kustomization.yaml")
for name in listed:
    if not (K8S / name).exists():
        fail("deploy/k8s/kustomization.yaml", f"lists {name}, which does not exist")
objs = [(f, d) for f, d in docs if d.get("kind") != "Kustomization"]
for f, d in objs:
    if not (d.get("apiVersion") and d.get("kind") and (d.get("metadata") or {}).get("name")):
        fail(f, "a document without apiVersion, kind or metadata.name")


def of_kind(kind: str) -> list[tuple[str, dict]]:
    return [(f, d) for f, d in objs if d["kind"] == kind]


configmaps = {d["metadata"]["name"]: {k: str(v) for k, v in (d.get("data") or {}).items()} for _, d in of_kind("ConfigMap")}
secrets = {}
for f, d in of_kind("Secret"):
    data = {k: str(v) for k, v in (d.get("stringData") or {}).items()}
    if d.get("data"):
        fail(f, "Secret has base64 `data`: a template holds placeholders in stringData only")
    for k, v in data.items():
        if "REPLACE" in v:
            ok()
        else:
            fail(f, f"Secret key {k} holds a value that is not a REPLACE placeholder; never commit secrets")
    secrets[d["metadata"]["name"]] = data
services_k8s = {d["metadata"]["name"]: (f, d) for f, d in of_kind("Service")}
deployments = {d["metadata"]["name"]: (f, d) for f, d in of_kind("Deployment")}
k8s_roles: dict[str, Role] = {}
pod_labels: dict[str, dict] = {}
container_ports: dict[str, dict] = {}
compose_engine_cmd = None
for n, s in services.items():
    if str(s.get("image", "")).split(":")[0] == "qyzar" and (s.get("command") or [None])[0] == "engine":
        compose_engine_cmd = (s["image"], list(s["command"]))

for dname, (f, d) in deployments.items():
    spec = d["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    pod_labels[dname] = labels
    sel = spec["selector"].get("matchLabels", {})
    if not sel.items() <= labels.items():
        fail(f, f"Deployment {dname}: selector {sel} does not match its pod labels {labels}")
    for c in spec["template"]["spec"]["containers"]:
        where = f"{f} {dname}/{c['name']}"
        image_pinned(where, c["image"])
        args = c.get("args") or c.get("command") or []
        if c["image"].split(":")[0] != "qyzar":
            continue
        if c["image"] != QYZAR_IMAGE:
            fail(where, f"image {c['image']} is not {QYZAR_IMAGE}")
        if c.get("command"):
            fail(where, "overrides the image's ENTRYPOINT; give the role in args")
        role = args[0] if args else None
        if role not in ("engine", "admin"):
            fail(where, f"args {args!r}: expected [engine] or [admin]")
            continue
        if role == "engine" and compose_engine_cmd:
            if (c["image"], list(args)) == compose_engine_cmd:
                ok()
            else:
                fail(where, f"engine image/args {c['image']} {args} differ from compose's {compose_engine_cmd}")
        env: dict[str, str] = {}
        for src in c.get("envFrom") or []:
            if "configMapRef" in src:
                cm = src["configMapRef"]["name"]
                if cm not in configmaps:
                    fail(where, f"envFrom ConfigMap {cm} is not in deploy/k8s")
                env.update(configmaps.get(cm, {}))
            if "secretRef" in src:
                sn = src["secretRef"]["name"]
                env.update(secrets.get(sn, {}))
        for e in c.get("env") or []:
            if "value" in e:
                env[e["name"]] = str(e["value"])
            elif "valueFrom" in e:
                vf = e["valueFrom"]
                ref = vf.get("secretKeyRef") or vf.get("configMapKeyRef")
                store = secrets if "secretKeyRef" in vf else configmaps
                value = store.get(ref["name"], {}).get(ref["key"])
                if value is None and not ref.get("optional"):
                    fail(where, f"{e['name']} refers to {ref['name']}/{ref['key']}, which deploy/k8s does not define")
                if value is not None:
                    env[e["name"]] = value
                elif ref.get("optional"):
                    # Optional and absent: the variable is unset; still check its name.
                    if e["name"] not in READS[role]:
                        fail(where, f"{e['name']} is not read by `qyzar {role}`")
        r = Role(where, role, env)
        k8s_roles[dname] = r
        r.check_names()
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
        container_ports[dname] = ports
        for pname, port in ports.items():
            if port in r.listeners:
                ok()
            else:
                fail(where, f"containerPort {pname}={port} is not a port `qyzar {role}` listens on "
                     f"({sorted(r.listeners)})")
        if "cpu" not in ((c.get("resources") or {}).get("requests") or {}):
            fail(where, "no CPU request (the HPA's utilisation needs one)")
        for probe in ("livenessProbe", "readinessProbe"):
            p = c.get(probe)
            if not p:
                fail(where, f"no {probe}")
                continue
            if "httpGet" in p:
                port = p["httpGet"]["port"]
                port = ports.get(port, port) if isinstance(port, str) else port
                if port not in ports.values():
                    fail(where, f"{probe} port {p['httpGet']['port']} is not a containerPort")
                r.check_probe_url(probe, "127.0.0.1", port, p["httpGet"]["path"])
            elif "exec" in p:
                text = " ".join(p["exec"]["command"])
                found = urls_in(text)
                if not found:
                    fail(where, f"{probe} exec asks no URL this check can follow")
                for host, port, path in found:
                    r.check_probe_url(probe, host, port, path)
                check_metric_names(where, text)

engines_k8s = [r for r in k8s_roles.values() if r.role == "engine"]
admins_k8s = [r for r in k8s_roles.values() if r.role == "admin"]
push_mode = any(a.env.get("QYZAR_ENGINE_INTERNAL_URLS") for a in admins_k8s)
for r in k8s_roles.values():
    r.check_required(push_mode)
    check_keys_differ(r.where, r)
for var in ("QYZAR_ENGINE_PUSH_KEY", "QYZAR_ADMIN_ENGINE_REPORT_KEY"):
    check_same("deploy/k8s", list(k8s_roles.values()), var)
if not engines_k8s or not admins_k8s:
    fail("deploy/k8s", "expected an engine and an admin Deployment")


def selects(selector: dict, dname: str) -> bool:
    return bool(selector) and selector.items() <= pod_labels.get(dname, {}).items()


svc_ports: dict[str, dict[int, tuple[str, int]]] = {}
for sname, (f, s) in services_k8s.items():
    spec = s["spec"]
    if spec.get("type") == "ExternalName":
        svc_ports[sname] = {p["port"]: ("external", p["port"]) for p in spec.get("ports") or []}
        continue
    sel = spec.get("selector") or {}
    targets = [dn for dn in deployments if selects(sel, dn)]
    if not targets:
        fail(f, f"Service {sname} selects no Deployment's pods ({sel})")
        continue
    ok()
    svc_ports[sname] = {}
    for p in spec.get("ports") or []:
        tp = p.get("targetPort", p["port"])
        for dn in targets:
            ports = container_ports.get(dn, {})
            resolved = ports.get(tp) if isinstance(tp, str) else (tp if tp in ports.values() else None)
            if resolved is None:
                fail(f, f"Service {sname} targetPort {tp} is not a containerPort of {dn} ({ports})")
            else:
                ok()
                svc_ports[sname][p["port"]] = (dn, resolved)
                r = k8s_roles.get(dn)
                if r and r.role == "engine" and resolved == r.internal[1]:
                    fail(f, f"Service {sname} exposes the engine's internal port {resolved}")


def check_k8s_url(where: str, var: str, url: str, role: str, listener: str) -> None:
    u = urlsplit(url)
    host = (u.hostname or "").split(".")[0]
    if host not in svc_ports or u.port not in svc_ports[host]:
        fail(where, f"{var}={url}: no Service {host} with port {u.port}")
        return
    dn, port = svc_ports[host][u.port]
    r = k8s_roles.get(dn)
    expected = None
    if r and r.role == role:
        expected = r.public[1] if listener == "public" else r.internal[1]
    if expected == port:
        ok()
    else:
        fail(where, f"{var}={url} reaches {dn}:{port}, not the {role}'s {listener} listener")


scylla = of_kind("ScyllaCluster")
scylla_k8s_hosts = set()
members = 0
for f, d in scylla:
    if d["apiVersion"] != "scylla.scylladb.com/v1":
        fail(f, f"ScyllaCluster apiVersion {d['apiVersion']}, expected scylla.scylladb.com/v1")
    scylla_k8s_hosts.add(f"{d['metadata']['name']}-client")
    racks = d["spec"]["datacenter"]["racks"]
    members += sum(r.get("members", 0) for r in racks)
    if str(d["spec"].get("version", "latest")) in ("latest", ""):
        fail(f, "ScyllaCluster version is not pinned")
if len(scylla) != 1 or members != 3:
    fail("deploy/k8s", f"expected one ScyllaCluster with 3 members, found {len(scylla)} with {members}")
for r in engines_k8s:
    check_k8s_url(r.where, "QYZAR_ENGINE_ADMIN_URL", r.env.get("QYZAR_ENGINE_ADMIN_URL", ""), "admin", "public")
    check_cql_nodes(r.where, r.env.get("QYZAR_ENGINE_CQL_NODES", ""), scylla_k8s_hosts)
    if int(r.env.get("QYZAR_ENGINE_CQL_RF", "3")) > max(members, 1):
        fail(r.where, "QYZAR_ENGINE_CQL_RF exceeds the ScyllaCluster's members")
for a in admins_k8s:
    check_k8s_url(a.where, "QYZAR_ENGINE_PUBLIC_URL", a.env.get("QYZAR_ENGINE_PUBLIC_URL", ""), "engine", "public")
    for u in [u for u in a.env.get("QYZAR_ENGINE_INTERNAL_URLS", "").split(",") if u.strip()]:
        check_k8s_url(a.where, "QYZAR_ENGINE_INTERNAL_URLS", u.strip(), "engine", "internal")
    check_cql_nodes(a.where, a.env.get("QYZAR_ADMIN_CQL_NODES", ""), scylla_k8s_hosts)
    db = urlsplit(a.env.get("QYZAR_DATABASE_URL", ""))
    pg = services_k8s.get((db.hostname or "").split(".")[0])
    if pg is None:
        fail(a.where, f"QYZAR_DATABASE_URL host {db.hostname} is no Service in deploy/k8s")
    else:
        spec = pg[1]["spec"]
        external = spec.get("type") == "ExternalName" or (
            not spec.get("selector") and any(d["kind"] == "Endpoints" and d["metadata"]["name"] == db.hostname for _, d in objs))
        if external and (db.port or 5432) in [p["port"] for p in spec.get("ports") or []]:
            ok()
        else:
            fail(a.where, f"Service {db.hostname} is not an external PostgreSQL (ExternalName, or no selector + Endpoints) on {db.port or 5432}")

for f, h in of_kind("HorizontalPodAutoscaler"):
    if h["apiVersion"] != "autoscaling/v2":
        fail(f, f"HPA apiVersion {h['apiVersion']}, expected autoscaling/v2")
    ref = h["spec"]["scaleTargetRef"]
    if ref.get("kind") == "Deployment" and ref.get("name") in deployments:
        ok()
    else:
        fail(f, f"HPA targets {ref.get('kind')}/{ref.get('name')}, which is not a Deployment here")
    if any(m.get("resource", {}).get("name") == "cpu" for m in h["spec"].get("metrics", [])):
        ok()
    else:
        fail(f, "HPA has no CPU metric")
    for pf, p in of_kind("PodDisruptionBudget"):
        sel = p["spec"]["selector"].get("matchLabels", {})
        if selects(sel, ref.get("name")):
            ok()
            if p["spec"].get("minAvailable", 0) >= h["spec"].get("minReplicas", 1):
                fail(pf, "PDB minAvailable is not below the HPA's minReplicas: no pod could ever be evicted")
        else:
            fail(pf, f"PDB selector {sel} does not match the {ref.get('name')} pods {pod_labels.get(ref.get('name'))}")
if not of_kind("HorizontalPodAutoscaler") or not of_kind("PodDisruptionBudget"):
    fail("deploy/k8s", "expected an HPA and a PDB for the engines")
if kust:
    for img in kust.get("images", []):
        if img.get("name") == "qyzar" and img.get("newTag") not in (None, CARGO_VERSION):
            fail("deploy/k8s/kustomization.yaml", f"images: qyzar newTag {img['newTag']} is not {CARGO_VERSION}")

# --- verdict ---------------------------------------------------------------------------------

if problems:
    for p in problems:
        print(f"check-manifests: FAIL {p}", file=sys.stderr)
    print(f"check-manifests: {len(problems)} problem(s), {checked} checks passed", file=sys.stderr)
    sys.exit(1)
print(
    f"check-manifests: ok, {checked} checks: compose ({len(services)} services), "
    f"{len(objs)} k8s objects, nginx ({len(locations)} locations) and the Dockerfile agree with "
    f"{len(READS['engine'] | READS['admin'])} variables and "
    f"{len(ENGINE_PUBLIC_ROUTES) + len(ENGINE_INTERNAL_ROUTES) + len(ADMIN_ROUTES)} routes in the source"
)
