//! `/ui/projects/{id}/settings`: the project's settings document, edited
//! two ways, both saved with `PATCH /projects/settings` (a JSON Merge Patch):
//!
//! - a form with one input per scalar member (numbers, switches, texts, lists
//!   of texts one per line), named by its JSON path (`rateLimit.ip.limit`), so
//!   the API's error, which names the same path, is shown at that input;
//! - the whole document as a JSON textarea, for members the form does not
//!   show (adding metadata buckets, …); the API's error is shown under it
//!   with the path it names.
//!
//! The form holds no rule: a value that is not a number is sent as text and
//! the API says what it expects.

use askama::Template;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::layout::{Errors, Shell};
use super::{render, render_status, see_other, Answer, Ctx, Form};

/// How an input edits one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A checkbox.
    Switch,
    /// A number input.
    Number,
    /// A text input.
    Text,
    /// A textarea, one string per line.
    Lines,
}

/// One input of the form.
#[derive(Debug, Clone)]
pub(crate) struct Leaf {
    /// The JSON path (`cookieNames.sessionId`), also the input's name.
    pub path: String,
    /// The input kind.
    pub kind: Kind,
    /// The value as the input shows it.
    pub value: String,
}

impl Leaf {
    fn is_switch(&self) -> bool {
        self.kind == Kind::Switch
    }
    fn is_number(&self) -> bool {
        self.kind == Kind::Number
    }
    fn is_lines(&self) -> bool {
        self.kind == Kind::Lines
    }
    fn on(&self) -> bool {
        self.value == "true"
    }
    /// An id safe for `id`/`for` (paths may hold bucket names).
    fn id(&self) -> String {
        format!("s-{}", self.path.replace(['.', '[', ']'], "-"))
    }
}

/// The members of `doc` the form edits: scalars and lists of strings,
/// depth first, in document order. Empty objects, `null` and lists of
/// objects are left to the JSON editor.
pub(crate) fn leaves(doc: &Value) -> Vec<Leaf> {
    fn walk(v: &Value, path: &str, out: &mut Vec<Leaf>) {
        let leaf = |kind, value: String| Leaf {
            path: path.to_owned(),
            kind,
            value,
        };
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(child, &p, out);
                }
            }
            Value::Bool(b) => out.push(leaf(Kind::Switch, b.to_string())),
            Value::Number(n) => out.push(leaf(Kind::Number, n.to_string())),
            Value::String(s) => out.push(leaf(Kind::Text, s.clone())),
            Value::Array(items) if items.iter().all(Value::is_string) => out.push(leaf(
                Kind::Lines,
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n"),
            )),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, "", &mut out);
    out
}

/// The merge patch a submitted form asks for: every input of `current`,
/// with the form's value. An unchecked checkbox is absent from a form, so
/// a switch is `true` exactly when its name was sent.
pub(crate) fn patch_from_form(current: &Value, form: &Form) -> Value {
    let mut patch = Value::Object(Map::new());
    for leaf in leaves(current) {
        let raw = form.text(&leaf.path);
        let value = match leaf.kind {
            Kind::Switch => Value::Bool(form.has(&leaf.path)),
            Kind::Number => {
                let t = raw.trim();
                t.parse::<i64>()
                    .map(Value::from)
                    .or_else(|_| t.parse::<f64>().map(Value::from))
                    .unwrap_or_else(|_| Value::String(t.to_owned()))
            }
            Kind::Text => Value::String(raw),
            Kind::Lines => Value::Array(
                raw.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| Value::String(l.to_owned()))
                    .collect(),
            ),
        };
        set_path(&mut patch, &leaf.path, value);
    }
    patch
}

fn set_path(root: &mut Value, path: &str, value: Value) {
    let mut at = root;
    let mut parts = path.split('.').peekable();
    while let Some(key) = parts.next() {
        let Value::Object(map) = at else { return };
        if parts.peek().is_none() {
            map.insert(key.to_owned(), value);
            return;
        }
        at = map
            .entry(key.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    shell: Shell,
    project_id: String,
    config_version: String,
    leaves: Vec<Leaf>,
    document: String,
    errors: Errors,
    json_errors: Errors,
    saved: bool,
}

/// `?saved=1` after a save.
#[derive(Deserialize)]
pub(crate) struct SavedQuery {
    saved: Option<String>,
}

/// The page with no errors; handlers set what they have to show.
fn page_for(
    shell: Shell,
    id: &str,
    d: &Answer,
    leaves: Vec<Leaf>,
    document: String,
) -> SettingsPage {
    SettingsPage {
        shell,
        project_id: id.to_owned(),
        config_version: d.body["configVersion"].to_string(),
        leaves,
        document,
        errors: Errors::none(),
        json_errors: Errors::none(),
        saved: false,
    }
}

/// The API's error with its field as a path inside the document: the API
/// names the body member too (`settings.sessionTtlSeconds`), the form's
/// inputs are named from the document's root.
fn member_failure(answer: &Answer) -> super::api::ApiFailure {
    let mut f = answer.failure();
    if let Some(field) = &f.field {
        if let Some(inner) = field.strip_prefix("settings.") {
            f.field = Some(inner.to_owned());
        }
    }
    f
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// `GET /ui/projects/{id}/settings`.
pub(crate) async fn page(
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Query<SavedQuery>,
) -> Response {
    let (shell, d) = match ctx.project(&id, "settings").await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let settings = &d.body["settings"];
    let mut page = page_for(shell, &id, &d, leaves(settings), pretty(settings));
    page.saved = q.saved.is_some();
    render(&page)
}

/// `POST /ui/projects/{id}/settings`: the form.
pub(crate) async fn save_form(
    ctx: Ctx,
    Path(id): Path<String>,
    Extension(form): Extension<Form>,
) -> Response {
    let (shell, d) = match ctx.project(&id, "settings").await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let current = &d.body["settings"];
    let patch = patch_from_form(current, &form);
    let answer = ctx
        .api
        .patch(
            "/projects/settings",
            json!({"projectId": id, "settings": patch}),
        )
        .await;
    if answer.ok() {
        return see_other(&format!("/ui/projects/{id}/settings?saved=1"));
    }
    // Show the form as submitted, the API's error at its input.
    let shown: Vec<Leaf> = leaves(current)
        .into_iter()
        .map(|mut l| {
            l.value = match l.kind {
                Kind::Switch => form.has(&l.path).to_string(),
                _ => form.text(&l.path),
            };
            l
        })
        .collect();
    let known: Vec<&str> = shown.iter().map(|l| l.path.as_str()).collect();
    let errors = Errors::from_failure(&member_failure(&answer), &known);
    let mut page = page_for(shell, &id, &d, shown, pretty(current));
    page.errors = errors;
    render_status(answer.status, &page)
}

/// `POST /ui/projects/{id}/settings/json {document}`: the JSON editor.
pub(crate) async fn save_json(
    ctx: Ctx,
    Path(id): Path<String>,
    Extension(form): Extension<Form>,
) -> Response {
    let (shell, d) = match ctx.project(&id, "settings").await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let document = form.text("document");
    let current = &d.body["settings"];
    let (status, json_errors) = match serde_json::from_str::<Value>(&document) {
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Errors::at_field("document", format!("not valid JSON: {e}")),
        ),
        Ok(value) => {
            let answer = ctx
                .api
                .patch(
                    "/projects/settings",
                    json!({"projectId": id, "settings": value}),
                )
                .await;
            if answer.ok() {
                return see_other(&format!("/ui/projects/{id}/settings?saved=1"));
            }
            let f = member_failure(&answer);
            let message = match &f.field {
                Some(field) => format!("{field}: {}", f.message),
                None => f.message,
            };
            (answer.status, Errors::at_field("document", message))
        }
    };
    let mut page = page_for(shell, &id, &d, leaves(current), document);
    page.json_errors = json_errors;
    render_status(status, &page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_round_trips_the_document() {
        let doc = json!({
            "sessionTtlSeconds": 600,
            "testMode": true,
            "allowedOrigins": ["https://a.example", "https://b.example"],
            "cookieNames": {"sessionId": "sid"},
            "rateLimit": {"metadata": {}},
        });
        let ls = leaves(&doc);
        let paths: Vec<&str> = ls.iter().map(|l| l.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "allowedOrigins",
                "cookieNames.sessionId",
                "sessionTtlSeconds",
                "testMode"
            ]
        );
        let form = Form(
            ls.iter()
                .filter(|l| l.kind != Kind::Switch || l.on())
                .map(|l| (l.path.clone(), l.value.clone()))
                .collect(),
        );
        let patch = patch_from_form(&doc, &form);
        assert_eq!(patch["sessionTtlSeconds"], 600);
        assert_eq!(patch["testMode"], true);
        assert_eq!(patch["cookieNames"]["sessionId"], "sid");
        assert_eq!(patch["allowedOrigins"][1], "https://b.example");
    }

    #[test]
    fn unchecked_switch_and_non_number_are_sent_for_the_api_to_judge() {
        let doc = json!({"testMode": true, "sessionTtlSeconds": 600});
        let form = Form(vec![("sessionTtlSeconds".into(), "ten".into())]);
        let patch = patch_from_form(&doc, &form);
        assert_eq!(patch["testMode"], false);
        assert_eq!(patch["sessionTtlSeconds"], "ten");
    }
}
