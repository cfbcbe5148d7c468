//! `/ui/projects/{id}/secret`: the project secret, for a fresh TOTP code.
//!
//! One form, two API calls: `POST /projects/secret/2fa {projectId, code}`
//! exchanges the code for a single-use grant, which `POST
//! /projects/secret/reveal` spends at once (optionally rotating the secret).
//! The secret is on that one answer only, sent `Cache-Control: no-store`
//! (every dashboard page is) so neither the browser nor a proxy keeps it.

use askama::Template;
use axum::extract::Path;
use axum::response::Response;
use axum::Extension;
use serde_json::{json, Value};

use super::layout::{Errors, Shell};
use super::{render, render_status, Ctx, Form};

#[derive(Template)]
#[template(path = "secret.html")]
struct SecretPage {
    shell: Shell,
    project_id: String,
    rotated_at: String,
    errors: Errors,
    revealed: Option<Revealed>,
}

/// What the reveal answered.
struct Revealed {
    secret: String,
    rotated: bool,
    previous_valid_until: String,
}

/// `GET /ui/projects/{id}/secret`.
pub(crate) async fn page(ctx: Ctx, Path(id): Path<String>) -> Response {
    let (shell, d) = match ctx.project(&id, "secret").await {
        Ok(x) => x,
        Err(res) => return res,
    };
    render(&SecretPage {
        shell,
        rotated_at: d.str("secretRotatedAt"),
        project_id: id,
        errors: Errors::none(),
        revealed: None,
    })
}

/// `POST /ui/projects/{id}/secret {code, rotate?, graceSeconds?}`.
pub(crate) async fn reveal(
    ctx: Ctx,
    Path(id): Path<String>,
    Extension(form): Extension<Form>,
) -> Response {
    let (shell, d) = match ctx.project(&id, "secret").await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let mut page = SecretPage {
        shell,
        rotated_at: d.str("secretRotatedAt"),
        project_id: id.clone(),
        errors: Errors::none(),
        revealed: None,
    };
    let grant = ctx
        .api
        .post(
            "/projects/secret/2fa",
            json!({"projectId": id, "code": form.text("code")}),
        )
        .await;
    if !grant.ok() {
        page.errors = Errors::from_answer(&grant, &["code"]);
        return render_status(grant.status, &page);
    }
    let rotate = form.has("rotate");
    let mut body = json!({
        "projectId": id,
        "grantToken": grant.str("grantToken"),
        "rotate": rotate,
    });
    let grace = form.text("graceSeconds");
    if rotate && !grace.trim().is_empty() {
        // Not a number: sent as text, and the API names the field.
        body["graceSeconds"] = grace
            .trim()
            .parse::<i64>()
            .map_or_else(|_| Value::String(grace.clone()), Value::from);
    }
    let answer = ctx.api.post("/projects/secret/reveal", body).await;
    if !answer.ok() {
        page.errors = Errors::from_answer(&answer, &["graceSeconds"]);
        return render_status(answer.status, &page);
    }
    page.revealed = Some(Revealed {
        secret: answer.str("secret"),
        rotated: answer.body["rotated"].as_bool().unwrap_or(false),
        previous_valid_until: answer.str("previousSecretValidUntil"),
    });
    render(&page)
}
