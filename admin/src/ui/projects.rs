//! `/ui/projects`: the account's projects and a form for a new one
//! (`POST /projects`; the plan's project quota is the API's to enforce, and
//! its message is shown). A new project's secret is shown once, here.

use askama::Template;
use axum::response::Response;
use axum::Extension;
use serde_json::json;

use super::layout::{Errors, Shell};
use super::{render, render_status, see_other, Ctx, Form};

#[derive(Template)]
#[template(path = "projects.html")]
struct ProjectsPage {
    shell: Shell,
    name: String,
    errors: Errors,
}

#[derive(Template)]
#[template(path = "project_created.html")]
struct CreatedPage {
    shell: Shell,
    project_id: String,
    name: String,
    secret: String,
}

/// `GET /ui/`: projects when signed in, else sign-in.
pub(crate) async fn home(ctx: Ctx) -> Response {
    if ctx.token.is_some() {
        see_other("/ui/projects")
    } else {
        see_other("/ui/signin")
    }
}

/// `GET /ui/projects`.
pub(crate) async fn list(ctx: Ctx) -> Response {
    let shell = match ctx.shell("projects", None).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    render(&ProjectsPage {
        shell,
        name: String::new(),
        errors: Errors::none(),
    })
}

/// `POST /ui/projects {name}`.
pub(crate) async fn create(ctx: Ctx, Extension(form): Extension<Form>) -> Response {
    let name = form.text("name");
    let answer = ctx.api.post("/projects", json!({"name": name})).await;
    if answer.status == axum::http::StatusCode::UNAUTHORIZED {
        return see_other("/ui/signin");
    }
    let project_id = answer.str("projectId");
    let shell = match ctx
        .shell("projects", answer.ok().then_some(project_id.as_str()))
        .await
    {
        Ok(s) => s,
        Err(res) => return res,
    };
    if answer.ok() {
        return render(&CreatedPage {
            shell,
            name: answer.str("name"),
            secret: answer.str("secret"),
            project_id,
        });
    }
    let page = ProjectsPage {
        shell,
        name,
        errors: Errors::from_answer(&answer, &["name"]),
    };
    render_status(answer.status, &page)
}
