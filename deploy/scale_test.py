#!/usr/bin/env python3
"""The scale test against deploy/cluster.sh's topology (run it through
`deploy/cluster.sh scale-test`): under load through nginx, kill one
Cassandra node and one engine, then show

- no acknowledged session and no acknowledged login attempt is lost: every
  session a `/connect` answered is still verified by every live engine, and
  every login attempt answered 200 is in its identifier's history (the
  next attempt's `lastLoginAt` and, for the project's dashboard, the
  store);
- configuration converged: after a settings change made while the engine
  was down, every live engine (and the restarted one) serves the newest
  version;
- limits: one key's traffic spread over the engines at 5x its limit may
  get at most 10 % more through than the rule allows (engines share
  consumption through the store, engine/src/limit_sync.rs).

Standard library only. Exits non-zero on the first broken promise.
"""

import datetime
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

BASE = os.environ["QYZAR_CLUSTER_URL"]
ADMIN = os.environ["QYZAR_CLUSTER_ADMIN"]
ENGINES = os.environ["QYZAR_CLUSTER_ENGINES"].split(",")
STATE = os.environ["QYZAR_CLUSTER_STATE"]
ORIGIN = "https://shop.example"


def log(msg):
    print(f"scale-test: {msg}", file=sys.stderr, flush=True)


def fail(msg):
    log(f"FAILED: {msg}")
    sys.exit(1)


def call(method, url, body=None, headers=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            status, raw = res.status, res.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        return 0, {"error": str(e)}
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def must(what, got, expected=200):
    status, body = got
    if status != expected:
        fail(f"{what} answered {status}: {body}")
    return body


def mail_token(email, marker):
    outbox = os.path.join(STATE, "outbox")
    for _ in range(100):
        for f in os.listdir(outbox) if os.path.isdir(outbox) else []:
            text = open(os.path.join(outbox, f), encoding="utf-8", errors="replace").read()
            if email in text:
                m = re.search(re.escape(marker) + r"([A-Za-z0-9_-]+)", text)
                if m:
                    return m.group(1)
        time.sleep(0.1)
    fail(f"no mail to {email} in {outbox}")


def setup():
    email = f"scale-{int(time.time())}@example.com"
    password = "correct horse battery staple"
    must("register", call("POST", f"{BASE}/auth/register", {"email": email, "password": password}), 201)
    token = mail_token(email, "/ui/verify-email?token=")
    must("verify-email", call("POST", f"{BASE}/auth/verify-email", {"token": token}))
    dash = must("signin", call("POST", f"{BASE}/auth/signin", {"email": email, "password": password}))["token"]
    auth = {"authorization": f"Bearer {dash}"}
    project = must("create project", call("POST", f"{BASE}/projects", {"name": "scale test"}, auth), 201)
    pid, secret = project["projectId"], project["secret"]
    settings = {"allowedOrigins": [ORIGIN], "rateLimit": {"ip": {"limit": 50, "windowSeconds": 60}}}
    must("settings", call("PATCH", f"{BASE}/projects/settings", {"projectId": pid, "settings": settings}, auth))
    ot = must("origin token", call("POST", f"{BASE}/origin-tokens", {"projectId": pid, "origin": ORIGIN}, auth), 201)
    return auth, pid, secret, ot["token"]


def engine_version(internal_port):
    status, body = call("GET", f"http://127.0.0.1:{internal_port}/internal/snapshot/version", timeout=2)
    return body["version"] if status == 200 else None


def admin_version(auth, pid):
    return must("project detail", call("GET", f"{BASE}/projects/detail?projectId={pid}", None, auth))["configVersion"]


def wait_converged(auth, pid, ports, within=20):
    want = admin_version(auth, pid)
    deadline = time.time() + within
    while time.time() < deadline:
        got = [engine_version(p) for p in ports]
        if all(v is not None and v >= want for v in got):
            return want, got
        time.sleep(0.2)
    fail(f"engines {ports} serve {got}, admin's newest is {want}")


def wait_ready(ports, within=60):
    """Every engine's store connected (`qyzar_store_ready 1`): what a load
    balancer's readiness probe waits for before sending it traffic."""
    deadline = time.time() + within
    while time.time() < deadline:
        ready = 0
        for p in ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=2) as res:
                    ready += int(b"\nqyzar_store_ready 1" in res.read())
            except OSError:
                pass
        if ready == len(ports):
            return
        time.sleep(0.5)
    fail(f"the engines on {ports} did not all connect to the store within {within} s")


def entropy(n):
    return {
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
        "languages": ["en-US", "en"], "timezone": "Europe/Paris",
        "screen": {"width": 1920, "height": 1080, "colorDepth": 24, "pixelRatio": 1},
        "hardwareConcurrency": 8, "deviceMemory": 8, "platform": "Linux x86_64",
        "canvasHash": f"c{n:08x}", "webglVendor": "Google Inc.", "webglRenderer": "ANGLE (Intel GPU)",
        "audioHash": f"a{n:06x}", "fonts": ["Arial"], "touchPoints": 0, "webdriver": False,
        "cookiesEnabled": True,
    }


class Load:
    """Sessions and login attempts through nginx, recording what was acknowledged."""

    def __init__(self, pid, secret, origin_token):
        self.pid, self.secret, self.origin_token = pid, secret, origin_token
        self.sessions = []  # (sessionId, sessionToken) answered 200
        self.attempts = {}  # identifier -> (attempts answered 200, send time of the last one)
        self.errors = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def worker(self, w):
        n = 0
        while not self.stop.is_set():
            n += 1
            k = w * 1_000_000 + n
            s, b = call("POST", f"{BASE}/connect",
                        {"projectId": self.pid, "originToken": self.origin_token, "entropy": entropy(k)},
                        {"origin": ORIGIN, "x-forwarded-for": f"203.0.113.{k % 250 + 1}"})
            with self.lock:
                if s in (200, 201) and b.get("sessionId"):
                    self.sessions.append((b["sessionId"], b["sessionToken"]))
                else:
                    self.errors[f"connect {s}"] = self.errors.get(f"connect {s}", 0) + 1
            ident = f"user{k % 40}@example.com"
            sent_at = time.time()
            s, b = call("POST", f"{BASE}/projects/client/ato-login-attempt",
                        {"projectId": self.pid, "identifier": ident, "success": True, "ip": "198.51.100.7"},
                        {"authorization": f"Bearer {self.secret}"})
            with self.lock:
                if s == 200:
                    count, _ = self.attempts.get(ident, (0, 0.0))
                    self.attempts[ident] = (count + 1, sent_at)
                else:
                    self.errors[f"ato {s}"] = self.errors.get(f"ato {s}", 0) + 1


def limit_run(pid, secret, engines, ip, seconds, limit=40, window=60):
    """Calls `rate-limit-check` for `ip` round-robin over `engines` at 5x
    what the rule (limit per window, burst included) allows in `seconds`;
    returns (allowed, sent, what the rule allows)."""
    allowed_by_rule = limit + limit * seconds / window
    total = 5 * allowed_by_rule
    ok = sent = 0
    started = time.time()
    while sent < total:
        engine = engines[sent % len(engines)]
        s, b = call("POST", f"{engine}/projects/client/rate-limit-check",
                    {"projectId": pid, "ip": ip}, {"authorization": f"Bearer {secret}"})
        sent += 1
        ok += int(s == 200 and b.get("allowed") is True)
        time.sleep(max(0.0, sent * seconds / total - (time.time() - started)))
    return ok, sent, allowed_by_rule


def run(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    internal = [18091, 18092, 18093]
    wait_ready(internal)
    auth, pid, secret, origin_token = setup()
    version, _ = wait_converged(auth, pid, internal)
    log(f"project {pid} at version {version} on all three engines")

    load = Load(pid, secret, origin_token)
    threads = [threading.Thread(target=load.worker, args=(w,), daemon=True) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(5)
    log("killing Cassandra node 127.0.0.3 (SIGKILL) and engine-3 (SIGKILL) under load")
    cass_pid = open(os.path.join(os.environ["QYZAR_CASS_NODE3_DIR"], "cassandra.pid")).read().strip()
    run(["kill", "-9", cass_pid])
    run(["kill", "-9", open(os.path.join(STATE, "engine-3.pid")).read().strip()])
    time.sleep(3)
    # A settings change while engine-3 is down.
    settings = {"rateLimit": {"ip": {"limit": 40, "windowSeconds": 60}}}
    must("settings while an engine is down", call("PATCH", f"{BASE}/projects/settings", {"projectId": pid, "settings": settings}, auth))
    time.sleep(7)
    load.stop.set()
    for t in threads:
        t.join()
    log(f"acknowledged: {len(load.sessions)} sessions, {sum(c for c, _ in load.attempts.values())} login attempts; not acknowledged: {load.errors}")
    if not load.sessions or not load.attempts:
        fail("nothing was acknowledged under load")

    # Config converged on the two live engines, then on the restarted one.
    v, got = wait_converged(auth, pid, internal[:2])
    log(f"live engines serve version {got} (newest {v})")
    subprocess.run([os.path.join(os.path.dirname(__file__), "cluster.sh"), "up"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    v, got = wait_converged(auth, pid, internal)
    wait_ready(internal)
    log(f"after restarting engine-3 and the node: all engines ready and serve {got} (newest {v})")

    # No acknowledged session lost: every one verifies on every engine.
    lost = 0
    for i, (sid, tok) in enumerate(load.sessions):
        engine = ENGINES[i % len(ENGINES)]
        s, b = call("POST", f"{engine}/projects/client/session-verify",
                    {"projectId": pid, "sessionId": sid, "sessionToken": tok},
                    {"authorization": f"Bearer {secret}"})
        if s != 200 or not b.get("valid"):
            lost += 1
            if lost <= 3:
                log(f"session {sid} on {engine}: {s} {b}")
    if lost:
        fail(f"{lost} of {len(load.sessions)} acknowledged sessions are not verified any more")
    log(f"all {len(load.sessions)} acknowledged sessions verify (each on one of the engines, round-robin)")

    # No acknowledged login attempt lost: each identifier's next attempt, on
    # an engine chosen round-robin, knows a last success no older than the
    # newest one that was acknowledged (all were successes).
    for i, ident in enumerate(sorted(load.attempts)):
        engine = ENGINES[i % len(ENGINES)]
        s, b = call("POST", f"{engine}/projects/client/ato-login-attempt",
                    {"projectId": pid, "identifier": ident, "success": False, "ip": "198.51.100.7"},
                    {"authorization": f"Bearer {secret}"})
        last = (b or {}).get("lastLoginAt")
        if s != 200 or not last:
            fail(f"{ident} on {engine}: {s} {b}: its acknowledged successful logins are gone")
        at = datetime.datetime.fromisoformat(last.replace("Z", "+00:00")).timestamp()
        newest_sent = load.attempts[ident][1]
        if at < newest_sent - 1.0:
            fail(f"{ident} on {engine}: lastLoginAt {last} is older than its newest acknowledged success "
                 f"(sent at {newest_sent:.3f})")
    log(f"all {len(load.attempts)} identifiers know their newest acknowledged success, each on the engine that answered (round-robin)")

    # Limits: one key at 5x its limit spread evenly over the three engines,
    # then another key with all its traffic through one engine.
    seconds = float(os.environ.get("QYZAR_SCALE_LIMIT_SECONDS", "12"))
    held = True
    for engines, ip, bound in ((ENGINES, "192.0.2.200", 10), (ENGINES[:1], "192.0.2.201", 2)):
        ok, sent, allowed_by_rule = limit_run(pid, secret, engines, ip, seconds)
        over = 100 * (ok - allowed_by_rule) / allowed_by_rule
        log(f"limits: one key at 5x its limit over {len(engines)} engine(s) for {seconds:.0f} s: {sent} calls, "
            f"{ok} allowed where the rule allows {allowed_by_rule:.0f} ({over:+.1f} %, bound +{bound} %)")
        held = held and over <= bound
    log("held: no acknowledged session or login attempt lost; configuration converged")
    if not held:
        fail("limits: over their bound (above)")
    log("passed")


if __name__ == "__main__":
    main()
