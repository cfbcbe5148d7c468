//! The dashboard: server-rendered pages (askama templates in
//! `admin/templates/`, checked at compile time) with htmx, under `/ui/…`.
//!
//! The pages are a client of the JSON API ([`api`]): they hold no rule of
//! their own, so a message a page shows next to a field is the API's. One
//! file per page, each read top to bottom: parse the form → call the API →
//! render the answer. What every page shares is here: the request context
//! ([`Ctx`]), the CSRF guard in front of every POST, the security headers on
//! every answer, and rendering.

mod account;
mod api;
pub(crate) mod assets;
mod billing;
mod charts;
mod clusters;
mod devices;
mod email;
mod engines;
mod layout;
mod origin_tokens;
mod overview;
mod password_reset;
mod projects;
mod protection;
mod register;
mod secret;
mod session;
mod settings;
mod signin;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use axum::Router;

use crate::AppState;
pub(crate) use api::{Answer, Api};
pub(crate) use layout::Shell;

/// The policy on every dashboard answer: nothing from other origins, no
/// inline script or style (the templates use classes only), no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// What the dashboard handlers share.
#[derive(Clone)]
pub(crate) struct Ui {
    /// The admin's state (config for the cookie's `Secure`).
    pub app: AppState,
    /// The JSON API, called in process.
    pub api: Router,
}

/// The dashboard's routes; `api` is the JSON API router the pages call.
pub fn router(app: AppState, api: Router) -> Router {
    let ui = Ui { app, api };
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(projects::home))
        .route("/ui/assets/{*path}", get(assets::serve))
        .route("/ui/signin", get(signin::page).post(signin::submit))
        .route(
            "/ui/signin/2fa",
            get(signin::challenge_page).post(signin::challenge_submit),
        )
        .route("/ui/register", get(register::page).post(register::submit))
        .route("/ui/verify-email", get(email::landing).post(email::confirm))
        .route(
            "/ui/verify-email/resend",
            get(email::resend_page).post(email::resend),
        )
        .route(
            "/ui/reset-password",
            get(password_reset::page).post(password_reset::request),
        )
        .route("/ui/reset-password/confirm", post(password_reset::confirm))
        .route("/ui/projects", get(projects::list).post(projects::create))
        .route("/ui/projects/{id}/overview", get(overview::page))
        .route("/ui/projects/{id}/devices", get(devices::page))
        .route("/ui/projects/{id}/devices/{device}", get(devices::device))
        .route("/ui/projects/{id}/clusters", get(clusters::page))
        .route(
            "/ui/projects/{id}/rate-limits",
            get(protection::rate_limits),
        )
        .route("/ui/projects/{id}/anti-ato", get(protection::anti_ato))
        .route(
            "/ui/projects/{id}/settings",
            get(settings::page).post(settings::save_form),
        )
        .route("/ui/projects/{id}/settings/json", post(settings::save_json))
        .route(
            "/ui/projects/{id}/secret",
            get(secret::page).post(secret::reveal),
        )
        .route(
            "/ui/projects/{id}/origin-tokens",
            get(origin_tokens::page).post(origin_tokens::create),
        )
        .route(
            "/ui/projects/{id}/origin-tokens/invalidate",
            post(origin_tokens::invalidate),
        )
        .route("/ui/billing", get(billing::page))
        .route("/ui/engines", get(engines::page))
        .route("/ui/billing/checkout", post(billing::checkout))
        .route("/ui/billing/portal", post(billing::portal))
        .route("/ui/account", get(account::page))
        .route("/ui/account/2fa/create", post(account::two_factor_create))
        .route("/ui/account/2fa/verify", post(account::two_factor_verify))
        .route("/ui/account/2fa/disable", post(account::two_factor_disable))
        .route("/ui/account/password", post(account::password))
        .route("/ui/signout", post(account::signout))
        .route("/ui/signout-all", post(account::signout_all))
        .route("/ui/{*rest}", any(not_found))
        .layer(middleware::from_fn(csrf_guard))
        .layer(axum::extract::DefaultBodyLimit::max(crate::MAX_BODY))
        .layer(middleware::map_response(security_headers))
        .with_state(ui)
}

/// The fields of a POSTed form, after the CSRF guard checked its token.
/// Handlers take it as `Extension<Form>`: no form reaches a handler
/// unchecked.
#[derive(Clone, Debug, Default)]
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    /// The first value of `name`, trimmed of nothing (passwords keep spaces).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, `""` when absent.
    pub(crate) fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or_default().to_owned()
    }

    /// Whether `name` was sent (a checked checkbox).
    pub(crate) fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Refuses every state-changing request (anything but GET/HEAD) whose CSRF
/// token (form field `_csrf` or header `X-CSRF-Token`) is not the one of a
/// session secret its cookies carry (`qz_session`, else `qz_pre`), with 403
/// and before any handler runs. The form
/// body is parsed here once and handed on as [`Form`].
async fn csrf_guard(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, crate::MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let form = Form(
        form_urlencoded::parse(&bytes)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    );
    let given = parts
        .headers
        .get(session::CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| form.get(session::CSRF_FIELD).map(str::to_owned));
    // Either cookie anchors a token: a page opened from a mail link in
    // another site's tab was rendered without the `SameSite=Strict`
    // session cookie (so on `qz_pre`), but its POST carries both. Only
    // this browser holds either value.
    let ok = given.as_deref().is_some_and(|g| {
        [session::SESSION_COOKIE, session::PRE_COOKIE]
            .iter()
            .filter_map(|name| session::cookie(&parts.headers, name))
            .any(|secret| session::csrf_ok(&secret, g))
    });
    if !ok {
        tracing::info!(path = %parts.uri.path(), "dashboard: post refused, csrf token missing or wrong");
        return forbidden();
    }
    parts.extensions.insert(form);
    next.run(Request::from_parts(parts, axum::body::Body::empty()))
        .await
}

/// The 403 of a refused form: a page, so a user whose tab outlived the
/// session sees what to do.
fn forbidden() -> Response {
    let tpl = layout::Message {
        title: "Form expired",
        message: "This form came from an old page or another site. Reload the page and try again.",
        link: "/ui/",
        link_text: "Back to the dashboard",
    };
    render_status(StatusCode::FORBIDDEN, &tpl)
}

/// `/ui/…` paths no page answers: an HTML 404.
async fn not_found() -> Response {
    not_found_page()
}

/// The dashboard's 404 page (also for another account's project).
pub(crate) fn not_found_page() -> Response {
    let tpl = layout::Message {
        title: "Not found",
        message: "There is no such page, or it belongs to another account.",
        link: "/ui/projects",
        link_text: "Your projects",
    };
    render_status(StatusCode::NOT_FOUND, &tpl)
}

/// Headers on every dashboard answer (pages, redirects, assets): the CSP,
/// no framing, no referrer to other origins, no MIME sniffing; and pages
/// (anything that did not set its own cache policy) are never cached, since
/// they carry account data and CSRF tokens.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// Renders a template as a 200 page.
pub(crate) fn render(tpl: &impl askama::Template) -> Response {
    render_status(StatusCode::OK, tpl)
}

/// Renders a template with `status`; a template that fails to render (no
/// input can cause it: they are checked at compile time) is a logged 500.
pub(crate) fn render_status(status: StatusCode, tpl: &impl askama::Template) -> Response {
    match tpl.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "dashboard: template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// `303 See Other` to `to`: the answer to a successful form.
pub(crate) fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// The request as the pages see it: the session's cookies, the CSRF token
/// to put in forms, and an API client for this browser.
pub(crate) struct Ctx {
    /// The dashboard token from `qz_session`, not yet checked.
    pub token: Option<String>,
    /// The CSRF token for the forms of this page.
    pub csrf: String,
    /// Whether cookies get `Secure` (the public URL is https).
    pub secure: bool,
    /// A `qz_pre` cookie to set with the answer (first visit before sign-in).
    pub new_pre: Option<String>,
    /// The sign-in challenge cookie, when one is pending.
    pub challenge: Option<String>,
    /// The JSON API, with the session's token.
    pub api: Api,
    /// The admin's state.
    pub ui: Ui,
}

impl FromRequestParts<Ui> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, ui: &Ui) -> Result<Self, Self::Rejection> {
        let token = session::cookie(&parts.headers, session::SESSION_COOKIE);
        let pre = session::cookie(&parts.headers, session::PRE_COOKIE);
        let (secret, new_pre) = match (&token, pre) {
            (Some(t), _) => (t.clone(), None),
            (None, Some(p)) => (p, None),
            (None, None) => {
                let p = session::random_secret();
                (p.clone(), Some(p))
            }
        };
        Ok(Self {
            csrf: session::csrf_token(&secret),
            secure: ui.app.config.public_url.starts_with("https://"),
            new_pre,
            challenge: session::cookie(&parts.headers, session::CHALLENGE_COOKIE),
            api: Api::new(ui.api.clone(), parts, token.clone()),
            token,
            ui: ui.clone(),
        })
    }
}

impl Ctx {
    /// Adds the `qz_pre` cookie to a page's answer when this visit made one.
    pub(crate) fn finish(&self, mut res: Response) -> Response {
        if let Some(p) = &self.new_pre {
            res.headers_mut().append(
                header::SET_COOKIE,
                session::set_cookie(session::PRE_COOKIE, p, self.secure, None),
            );
        }
        res
    }

    /// Sets cookie `name` on `res`.
    pub(crate) fn set_cookie(
        &self,
        res: &mut Response,
        name: &str,
        value: &str,
        max_age: Option<u64>,
    ) {
        res.headers_mut().append(
            header::SET_COOKIE,
            session::set_cookie(name, value, self.secure, max_age),
        );
    }

    /// Deletes cookie `name` with `res`.
    pub(crate) fn clear_cookie(&self, res: &mut Response, name: &str) {
        res.headers_mut()
            .append(header::SET_COOKIE, session::clear_cookie(name, self.secure));
    }

    /// The signed-in account and the page frame, or the answer that sends
    /// the browser to sign-in (the cookie is dropped when the API no longer
    /// accepts its token: expired, revoked, signed out elsewhere).
    pub(crate) async fn shell(
        &self,
        active: &'static str,
        project_id: Option<&str>,
    ) -> Result<Shell, Response> {
        if self.token.is_none() {
            return Err(see_other("/ui/signin"));
        }
        let me = self.api.get("/auth/me").await;
        if me.status == StatusCode::UNAUTHORIZED {
            let mut res = see_other("/ui/signin");
            self.clear_cookie(&mut res, session::SESSION_COOKIE);
            return Err(res);
        }
        if !me.ok() {
            return Err(self.error_page(&me));
        }
        let list = self.api.get("/projects?limit=100").await;
        if !list.ok() {
            return Err(self.error_page(&list));
        }
        Ok(Shell::new(
            &me,
            &list,
            project_id,
            active,
            self.csrf.clone(),
        ))
    }

    /// The frame and `GET /projects/detail` of project `id`, for every page
    /// under `/ui/projects/{id}/…`; a project that is not the caller's (or
    /// an id that cannot be one) is the 404 page, an ended session goes to
    /// sign-in.
    pub(crate) async fn project(
        &self,
        id: &str,
        active: &'static str,
    ) -> Result<(Shell, Answer), Response> {
        let mut shell = self.shell(active, Some(id)).await?;
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("projectId", id)
            .finish();
        let detail = self.api.get(&format!("/projects/detail?{q}")).await;
        match detail.status {
            s if s.is_success() => {
                shell.name_project(&detail.str("name"));
                Ok((shell, detail))
            }
            StatusCode::UNAUTHORIZED => Err(see_other("/ui/signin")),
            StatusCode::NOT_FOUND | StatusCode::UNPROCESSABLE_ENTITY => Err(not_found_page()),
            _ => Err(self.error_page(&detail)),
        }
    }

    /// A page for an API answer no form can fix (a 5xx, a 429): its message.
    pub(crate) fn error_page(&self, answer: &Answer) -> Response {
        if answer.status == StatusCode::NOT_FOUND {
            return not_found_page();
        }
        let f = answer.failure();
        let status = if answer.status.is_client_error() || answer.status.is_server_error() {
            answer.status
        } else {
            StatusCode::BAD_GATEWAY
        };
        let tpl = layout::Failure {
            title: "Something went wrong",
            message: f.message,
        };
        render_status(status, &tpl)
    }
}

/// The session cookie's name, for the pages that set or drop it.
pub(crate) use session::{CHALLENGE_COOKIE, SESSION_COOKIE};
