"""Real ids for schemathesis runs against `qyzar dev` (see schemathesis.sh).

Generated values alone mostly hit validation (`422`) or unknown projects
(`404`), so the cases never reach the logic behind them. This file gives
the run the dev project's real ids and credentials, in two roles:

- `python3 schemathesis_hooks.py prepare DEV_JSON OUT_JSON` (run once, by
  schemathesis.sh, with the services up): reads `.qyzar/dev.json` and makes
  what a real client would hold, through the public APIs only: a dashboard
  token (sign-in), a verify session (`POST /connect`) and a client token
  bound to it, a test captcha token, a spare origin token (for
  `/origin-tokens/invalidate`), and two more projects: one the admin run
  changes (settings, names, extra metadata) so that the engine run, which
  uses the dev project at the same time, is not disturbed by it, and a
  scratch one for `DELETE /projects`. Written to OUT_JSON.
- imported by schemathesis (`SCHEMATHESIS_HOOKS=schemathesis_hooks`,
  `QYZAR_ST_FIXTURES=OUT_JSON`, `QYZAR_ST_SERVICE=engine|admin`): a
  `map_case` hook that, in most cases (`REAL_SHARE`), swaps a generated
  `projectId`, session id, token, origin, … for the real one and presents
  the right credential for the operation's security scheme. The other cases
  keep what schemathesis generated, so refusals are still exercised.

Operations that would cut the run's own branch off are kept away from the
real credentials: `DELETE /projects` gets the scratch project, the sign-out
routes never get the run's dashboard token, `invalidate` a spare token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import random
import sys
import time
import urllib.error
import urllib.request

# Share of cases that get the real value where one exists.
REAL_SHARE = 0.85

# A realistic Chrome-on-Windows entropy document (as engine/tests/api/helpers.rs).
ENTROPY = {
    "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "languages": ["en-US", "en"],
    "timezone": "Europe/Paris",
    "screen": {"width": 1920, "height": 1080, "colorDepth": 24, "pixelRatio": 1},
    "hardwareConcurrency": 8,
    "platform": "Win32",
    "touchPoints": 0,
    "webdriver": False,
    "cookiesEnabled": True,
}


# --- prepare --------------------------------------------------------------


def call(method, url, body=None, headers=None):
    """One JSON call; returns (status, parsed body or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            status, raw = res.status, res.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def must(what, status, body, expected):
    if status != expected:
        sys.exit(f"schemathesis prepare: {what} answered {status}: {body}")
    return body


def prepare(dev_path, out_path):
    dev = json.load(open(dev_path, encoding="utf-8"))
    admin, engine = dev["adminUrl"], dev["engineUrl"]
    project, secret = dev["projectId"], dev["projectSecret"]

    s, b = call("POST", f"{admin}/auth/signin", {"email": dev["email"], "password": dev["password"]})
    dashboard = must("sign-in", s, b, 200)["token"]
    auth = {"authorization": f"Bearer {dashboard}"}
    s, b = call("POST", f"{admin}/projects", {"name": "schemathesis admin"}, auth)
    admin_project = must("admin run's project", s, b, 201)
    settings = {"testMode": True, "allowedOrigins": [dev["origin"]]}
    s, b = call("PATCH", f"{admin}/projects/settings", {"projectId": admin_project["projectId"], "settings": settings}, auth)
    must("admin run's project settings", s, b, 200)
    s, b = call("POST", f"{admin}/projects", {"name": "schemathesis scratch"}, auth)
    scratch = must("scratch project", s, b, 201)["projectId"]
    s, b = call("POST", f"{admin}/origin-tokens", {"projectId": project, "origin": dev["origin"]}, auth)
    spare = must("spare origin token", s, b, 201)["token"]
    s, b = call("POST", f"{admin}/test/captcha", {"projectId": project, "outcome": "pass"})
    captcha = must("test captcha", s, b, 200)["captchaToken"]

    # The engine learns about changes by push; give it a moment for the last one.
    body = {"projectId": project, "originToken": dev["originToken"], "entropy": ENTROPY}
    for _ in range(50):
        s, b = call("POST", f"{engine}/connect", body, {"origin": dev["origin"]})
        if s == 201:
            break
        time.sleep(0.2)
    session = must("connect", s, b, 201)
    secret_h = {"x-qyzar-project-secret": secret}
    s, b = call(
        "POST",
        f"{engine}/projects/client/token",
        {"projectId": project, "sessionId": session["sessionId"], "sessionToken": session["sessionToken"]},
        secret_h,
    )
    client_token = must("client token", s, b, 200)["clientToken"]
    body = {"projectId": admin_project["projectId"]}
    s, b = call("POST", f"{engine}/projects/client/token", body, {"x-qyzar-project-secret": admin_project["secret"]})
    admin_client_token = must("admin project's client token", s, b, 200)["clientToken"]

    fixtures = {
        "projectId": project,
        "projectSecret": secret,
        "scratchProjectId": scratch,
        "origin": dev["origin"],
        "originToken": dev["originToken"],
        "spareOriginToken": spare,
        "captchaToken": captcha,
        "dashboardToken": dashboard,
        "email": dev["email"],
        "sessionId": session["sessionId"],
        "sessionToken": session["sessionToken"],
        "sessionJwt": session["sessionJwt"],
        "deviceId": session["deviceId"],
        "clientToken": client_token,
        "pushKey": os.environ.get("QYZAR_ENGINE_PUSH_KEY", ""),
        # What the admin run uses instead of the dev project's.
        "admin": {
            "projectId": admin_project["projectId"],
            "projectSecret": admin_project["secret"],
            "clientToken": admin_client_token,
        },
    }
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(fixtures, f)


# --- the hook -------------------------------------------------------------

# Operations whose real credentials or ids would end the run's own access.
SIGN_OUT = ("/auth/signout", "/auth/signout-all")
# Optional parameters without which the operation only answers
# `400 missing_field`: (body field, where else it may come, its name there),
# added there when the case carries it nowhere.
MUST_HAVE = {
    "/projects/client/token-verify": [("clientToken", "query", "clientToken")],
    "/projects/client/session-verify": [
        ("sessionId", "cookies", "qyzar_session_id"),
        ("sessionToken", "cookies", "qyzar_session_token"),
    ],
}


def real_values(fx, method, path):
    """Field name -> real value, for body members, query and cookies."""
    v = {
        "projectId": fx["projectId"],
        "sessionId": fx["sessionId"],
        "sessionToken": fx["sessionToken"],
        "sessionJwt": fx["sessionJwt"],
        "deviceId": fx["deviceId"],
        "originToken": fx["originToken"],
        "captchaToken": fx["captchaToken"],
        "clientToken": fx["clientToken"],
        "qyzar_session_id": fx["sessionId"],
        "qyzar_session_token": fx["sessionToken"],
    }
    if path.startswith("/origin-tokens"):
        v["token"] = fx["originToken"]
        v["origin"] = fx["origin"]
    if path == "/origin-tokens/invalidate":
        v["token"] = fx["spareOriginToken"]
    if (method, path) == ("DELETE", "/projects"):
        v["projectId"] = fx["scratchProjectId"]
    if path == "/auth/signin":
        v["email"] = fx["email"]
    return v


def protect(case, fx, method, path):
    """Keeps the run from destroying what it stands on, whatever the case
    holds (schemathesis also reuses ids it read from earlier answers, such as
    the dev project from `GET /projects`): the admin run acts on its own
    project, never the dev project the engine run uses meanwhile; only the
    scratch project is deleted; only the spare origin token is invalidated."""
    swap = {}
    if os.environ.get("QYZAR_ST_SERVICE") == "admin":
        swap[fx["devProjectId"]] = fx["projectId"]
    if (method, path) == ("DELETE", "/projects"):
        swap[fx["devProjectId"]] = swap[fx["projectId"]] = fx["scratchProjectId"]
    if path == "/origin-tokens/invalidate":
        swap[fx["originToken"]] = fx["spareOriginToken"]
    for container in (case.query, case.body):
        if isinstance(container, dict):
            for k, v in container.items():
                if isinstance(v, str) and v.strip() in swap:
                    container[k] = swap[v.strip()]


def credentials(fx, scheme):
    """Headers and query entries presenting the real credential of `scheme`."""
    secret, client = fx["projectSecret"], fx["clientToken"]
    return {
        "projectSecretHeader": ({"X-Qyzar-Project-Secret": secret}, {}),
        "projectSecretBearer": ({"Authorization": f"Bearer {secret}"}, {}),
        "dashboardToken": ({"Authorization": f"Bearer {fx['dashboardToken']}"}, {}),
        "pushKey": ({"Authorization": f"Bearer {fx['pushKey']}"}, {}),
        "clientTokenBearer": ({"Authorization": f"Bearer {client}"}, {}),
        "clientTokenHeader": ({"X-Qyzar-Client-Token": client}, {}),
        "clientTokenQuery": ({}, {"clientToken": client}),
    }.get(scheme, ({}, {}))


def sign_opt_out(fx, query):
    """Turns the query into a valid opt-out link of the run's project, as a
    customer backend signs it: one subject, an expiry an hour away, `sig`
    over both with the key derived from the project secret."""
    query["projectId"] = fx["projectId"]
    if "identifier" in query and isinstance(query["identifier"], str) and "deviceId" not in query:
        subject = f"identifier:{query['identifier']}"
    else:
        query.pop("identifier", None)
        query["deviceId"] = fx["deviceId"]
        subject = f"device:{fx['deviceId']}"
    query["exp"] = exp = int(time.time()) + 3600
    prk = hmac.new(b"qyzar/opt-out/v1", fx["projectSecret"].encode(), hashlib.sha256).digest()
    key = hmac.new(prk, fx["projectId"].encode() + b"\x01", hashlib.sha256).digest()
    msg = f"opt-out/v1|{fx['projectId']}|{subject}|{exp}".encode()
    sig = hmac.new(key, msg, hashlib.sha256).digest()
    query["sig"] = base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


def install():
    import schemathesis

    fx = json.load(open(os.environ["QYZAR_ST_FIXTURES"], encoding="utf-8"))
    fx["devProjectId"] = fx["projectId"]
    if os.environ.get("QYZAR_ST_SERVICE") == "admin":
        fx.update(fx["admin"])
    rng = random.Random(int(os.environ.get("QYZAR_ST_SEED", "1")))
    keys = itertools.count(1)

    def real():
        return rng.random() < REAL_SHARE

    def fill(container, values):
        if isinstance(container, dict):
            for k in list(container):
                if k in values and real():
                    container[k] = values[k]

    @schemathesis.hook
    def map_case(context, case):
        method, path = case.method.upper(), case.operation.path
        values = real_values(fx, method, path)
        if case.query is None:
            case.query = {}
        if case.cookies is None:
            case.cookies = {}
        if case.headers is None:
            case.headers = {}
        fill(case.query, values)
        fill(case.cookies, values)
        fill(case.body, values)
        if "Origin" in case.headers and real():
            case.headers["Origin"] = fx["origin"]
        if "X-Qyzar-Client-Token" in case.headers and real():
            case.headers["X-Qyzar-Client-Token"] = fx["clientToken"]
        for field, where, name in MUST_HAVE.get(path, ()):
            body = case.body if isinstance(case.body, dict) else {}
            container = getattr(case, where)
            if field not in body and name not in container and real():
                container[name] = values[field]
        if "Idempotency-Key" in case.headers and real():
            # Generated keys repeat across cases with other bodies (`409`).
            case.headers["Idempotency-Key"] = f"st-{next(keys)}"
        if path == "/opt-out/confirm" and real():
            sign_opt_out(fx, case.query)
        schemes = [name for req in (case.operation.definition.raw.get("security") or []) for name in req]
        if schemes and path not in SIGN_OUT and real():
            headers, query = credentials(fx, rng.choice(schemes))
            # A generated credential where the operation reads one would win over ours.
            for scheme in schemes:
                carrier_headers, carrier_query = credentials(fx, scheme)
                for h in carrier_headers:
                    case.headers.pop(h, None)
                for q in carrier_query:
                    case.query.pop(q, None)
            case.headers.update(headers)
            case.query.update(query)
        protect(case, fx, method, path)
        return case


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "prepare":
        sys.exit("usage: schemathesis_hooks.py prepare DEV_JSON OUT_JSON")
    prepare(sys.argv[2], sys.argv[3])
elif "QYZAR_ST_FIXTURES" in os.environ:
    install()
