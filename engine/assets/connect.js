/*! Qyzar connect.js — collects device entropy, opens a verify session, and
 * re-verifies it on an interval. No dependencies.
 *
 * <script src="https://YOUR-ENGINE/connect.js"
 *         data-project-id="prj_…" data-origin-token="qz_ot_…" async></script>
 *
 * Options (data-* attributes on the script tag, or window.QyzarConfig):
 *   data-project-id     the project id (required)
 *   data-origin-token   the origin token bound to this page's origin (required)
 *   data-endpoint       engine base URL (default: where this script came from)
 *   data-reverify-seconds  re-verify interval (default 300; 0 = never)
 *   data-write-cookies  "true" (default) writes the two session cookies on
 *                       this site (needed when the engine runs on another
 *                       domain; harmless under your own domain, where the
 *                       engine's HttpOnly Set-Cookie already did it)
 * Result: window.Qyzar.ready (a Promise of the /connect answer) and a
 * "qyzar:session" event on document.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  var cfg = window.QyzarConfig || {};
  function opt(name, dflt) {
    var attr = script && script.getAttribute("data-" + name);
    var key = name.replace(/-([a-z])/g, function (_, c) { return c.toUpperCase(); });
    return cfg[key] != null ? cfg[key] : attr != null ? attr : dflt;
  }
  var endpoint = opt("endpoint", script ? new URL(script.src, location.href).origin : "");
  var projectId = opt("project-id", "");
  var originToken = opt("origin-token", "");
  var reverifySeconds = Number(opt("reverify-seconds", "300"));
  var writeCookies = String(opt("write-cookies", "true")) !== "false";

  function hash(str) {
    // FNV-1a 32-bit: enough to fingerprint canvas/audio output compactly.
    var h = 0x811c9dc5;
    for (var i = 0; i < str.length; i++) {
      h ^= str.charCodeAt(i);
      h = (h + ((h << 1) + (h << 4) + (h << 7) + (h << 8) + (h << 24))) >>> 0;
    }
    return ("0000000" + h.toString(16)).slice(-8);
  }
  function canvasHash() {
    try {
      var c = document.createElement("canvas");
      c.width = 240; c.height = 60;
      var x = c.getContext("2d");
      x.textBaseline = "top"; x.font = "16px Arial"; x.fillStyle = "#f60";
      x.fillRect(100, 1, 62, 20); x.fillStyle = "#069"; x.fillText("Qyzar, 😃 ~!@#", 2, 15);
      x.fillStyle = "rgba(102,204,0,0.7)"; x.fillText("Qyzar, 😃 ~!@#", 4, 17);
      return hash(c.toDataURL());
    } catch (e) { return undefined; }
  }
  function webgl() {
    try {
      var gl = document.createElement("canvas").getContext("webgl");
      if (!gl) return {};
      var dbg = gl.getExtension("WEBGL_debug_renderer_info");
      return {
        vendor: String(dbg ? gl.getParameter(dbg.UNMASKED_VENDOR_WEBGL) : gl.getParameter(gl.VENDOR)).slice(0, 200),
        renderer: String(dbg ? gl.getParameter(dbg.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER)).slice(0, 200)
      };
    } catch (e) { return {}; }
  }
  function fonts() {
    var list = ["Arial", "Courier New", "Georgia", "Helvetica", "Times New Roman", "Verdana", "Tahoma",
      "Trebuchet MS", "Comic Sans MS", "Impact", "Segoe UI", "Roboto", "Ubuntu", "DejaVu Sans",
      "Liberation Sans", "Menlo", "Monaco", "Consolas", "Noto Sans", "Calibri"];
    if (!document.fonts || !document.fonts.check) return undefined;
    return list.filter(function (f) { try { return document.fonts.check("12px \"" + f + "\""); } catch (e) { return false; } });
  }
  function entropy() {
    var n = navigator, s = screen || {}, g = webgl();
    var e = {
      userAgent: n.userAgent,
      languages: (n.languages || [n.language]).filter(Boolean).slice(0, 16),
      timezone: (Intl.DateTimeFormat().resolvedOptions() || {}).timeZone,
      screen: { width: s.width, height: s.height, colorDepth: s.colorDepth, pixelRatio: window.devicePixelRatio || 1 },
      hardwareConcurrency: n.hardwareConcurrency,
      deviceMemory: n.deviceMemory,
      platform: n.platform,
      canvasHash: canvasHash(),
      webglVendor: g.vendor,
      webglRenderer: g.renderer,
      fonts: fonts(),
      touchPoints: n.maxTouchPoints || 0,
      webdriver: !!n.webdriver,
      cookiesEnabled: !!n.cookieEnabled
    };
    Object.keys(e).forEach(function (k) { if (e[k] === undefined || e[k] === null) delete e[k]; });
    return e;
  }
  function post(path, body) {
    return fetch(endpoint + path + "?projectId=" + encodeURIComponent(projectId), {
      method: "POST", credentials: "include", mode: "cors",
      headers: { "content-type": "application/json" }, body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().then(function (j) { if (!r.ok) { var err = new Error((j.error && j.error.message) || r.status); err.body = j; throw err; } return j; });
    });
  }
  function setCookie(name, value, maxAge) {
    document.cookie = name + "=" + encodeURIComponent(value) + "; Max-Age=" + maxAge + "; Path=/; SameSite=Lax" +
      (location.protocol === "https:" ? "; Secure" : "");
  }
  var state = {};
  function sessionTtl(jwt) {
    // The session's lifetime from the session JWT itself (exp - iat, both
    // the engine's clock), so a wrong client clock cannot zero the cookies.
    try {
      var p = JSON.parse(atob(jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
      return Math.max(0, (p.exp || 0) - (p.iat || 0));
    } catch (e) { return 0; }
  }
  function writeSessionCookies() {
    if (!writeCookies || !state.sessionId) return;
    var maxAge = sessionTtl(state.sessionJwt);
    setCookie(opt("cookie-session-id", "qyzar_session_id"), state.sessionId, maxAge);
    setCookie(opt("cookie-session-token", "qyzar_session_token"), state.sessionToken, maxAge);
  }
  function onSession(answer) {
    state = answer;
    writeSessionCookies();
    try { document.dispatchEvent(new CustomEvent("qyzar:session", { detail: answer })); } catch (e) { /* old browsers */ }
    return answer;
  }
  function reverify() {
    if (!state.sessionJwt) return Promise.resolve(null);
    return post("/connect/reverify", { sessionJwt: state.sessionJwt, entropy: entropy() }).then(function (r) {
      if (!r.valid) return connect();
      // The engine extended the session by a full TTL from now.
      state.expiresAt = r.expiresAt;
      writeSessionCookies();
      return r;
    });
  }
  function connect() {
    var body = { projectId: projectId, originToken: originToken, entropy: entropy() };
    if (cfg.captchaToken) body.captchaToken = cfg.captchaToken;
    return post("/connect", body).then(onSession);
  }
  var ready = connect();
  if (reverifySeconds > 0) setInterval(function () { reverify().catch(function () {}); }, reverifySeconds * 1000);
  window.Qyzar = { ready: ready, reverify: reverify, entropy: entropy };
})();
