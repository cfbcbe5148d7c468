//! What every page's frame needs: the signed-in account, the project
//! switcher, the left nav, the CSRF token, and the API's errors placed at
//! the fields they name.

use askama::Template;

use super::api::{Answer, ApiFailure};

/// One project in the switcher.
#[derive(Debug, Clone)]
pub(crate) struct ProjectLink {
    /// `prj_…`.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// One entry of the left nav.
pub(crate) struct NavItem {
    /// Shown text.
    pub label: &'static str,
    /// Where it goes.
    pub href: String,
    /// Whether this page is it.
    pub active: bool,
}

/// The frame of every signed-in page (`templates/app.html`).
pub(crate) struct Shell {
    /// The account's address, in the top bar.
    pub email: String,
    /// Whether two-factor authentication is on (the secret page needs it).
    pub two_factor: bool,
    /// The account's projects (newest first), for the switcher.
    pub projects: Vec<ProjectLink>,
    /// The project the page is about, else the newest one: the nav's
    /// project entries point at it.
    pub project: Option<ProjectLink>,
    /// Which nav entry is this page (`settings`, `billing`, …).
    pub active: &'static str,
    /// The CSRF token for the page's forms and htmx requests.
    pub csrf: String,
}

impl Shell {
    /// Builds the frame from `GET /auth/me` and `GET /projects`.
    pub(crate) fn new(
        me: &Answer,
        list: &Answer,
        project_id: Option<&str>,
        active: &'static str,
        csrf: String,
    ) -> Self {
        let projects: Vec<ProjectLink> = list.body["projects"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| ProjectLink {
                        id: p["projectId"].as_str().unwrap_or_default().to_owned(),
                        name: p["name"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let project = match project_id {
            Some(id) => projects.iter().find(|p| p.id == id).cloned().or_else(|| {
                Some(ProjectLink {
                    id: id.to_owned(),
                    name: id.to_owned(),
                })
            }),
            None => projects.first().cloned(),
        };
        Self {
            email: me.str("email"),
            two_factor: me.body["twoFactorEnabled"].as_bool().unwrap_or(false),
            projects,
            project,
            active,
            csrf,
        }
    }

    /// Names the current project from its detail (a project beyond the
    /// switcher's first page still shows its name).
    pub(crate) fn name_project(&mut self, name: &str) {
        if let Some(p) = &mut self.project {
            name.clone_into(&mut p.name);
        }
    }

    /// Where the switcher takes project `id`: the same section of it when
    /// this page is a project page, else its settings.
    pub(crate) fn switch_href(&self, id: &str) -> String {
        let section = match self.active {
            "settings" | "secret" | "origin-tokens" => self.active,
            _ => "settings",
        };
        format!("/ui/projects/{id}/{section}")
    }

    /// The left nav. The analytics entries (Overview … Anti-ATO) point at
    /// the pages the analytics work adds under the same project prefix.
    pub(crate) fn nav(&self) -> Vec<NavItem> {
        let base = match &self.project {
            Some(p) => format!("/ui/projects/{}", p.id),
            None => String::new(),
        };
        let project_items: [(&'static str, &'static str); 8] = [
            ("Overview", "overview"),
            ("Devices", "devices"),
            ("Clusters", "clusters"),
            ("Rate limits", "rate-limits"),
            ("Anti-ATO", "anti-ato"),
            ("Settings", "settings"),
            ("Secret", "secret"),
            ("Origin tokens", "origin-tokens"),
        ];
        let mut items: Vec<NavItem> = project_items
            .iter()
            .map(|(label, slug)| NavItem {
                label,
                href: if base.is_empty() {
                    "/ui/projects".to_owned()
                } else {
                    format!("{base}/{slug}")
                },
                active: self.active == *slug,
            })
            .collect();
        items.push(NavItem {
            label: "Billing",
            href: "/ui/billing".to_owned(),
            active: self.active == "billing",
        });
        items.push(NavItem {
            label: "Engines",
            href: "/ui/engines".to_owned(),
            active: self.active == "engines",
        });
        items
    }
}

/// The API's errors for one form: each at the field it names, the rest
/// (and those naming a field the form does not show) above the form.
#[derive(Debug, Default)]
pub(crate) struct Errors {
    fields: Vec<(String, String)>,
    /// The message shown above the form.
    pub general: Option<String>,
}

impl Errors {
    /// No errors.
    pub(crate) fn none() -> Self {
        Self::default()
    }

    /// The API's error, at `field` when the form shows an input of that
    /// name (one of `known`), else above the form with the field named.
    pub(crate) fn from_failure(f: &ApiFailure, known: &[&str]) -> Self {
        match &f.field {
            Some(field) if known.contains(&field.as_str()) => Self {
                fields: vec![(field.clone(), f.message.clone())],
                general: None,
            },
            Some(field) => Self {
                fields: Vec::new(),
                general: Some(format!("{field}: {}", f.message)),
            },
            None => Self {
                fields: Vec::new(),
                general: Some(f.message.clone()),
            },
        }
    }

    /// The API's error for `answer` (see [`Self::from_failure`]).
    pub(crate) fn from_answer(answer: &Answer, known: &[&str]) -> Self {
        Self::from_failure(&answer.failure(), known)
    }

    /// One error above the form.
    pub(crate) fn general(message: impl Into<String>) -> Self {
        Self {
            fields: Vec::new(),
            general: Some(message.into()),
        }
    }

    /// One error at `field`.
    pub(crate) fn at_field(field: &str, message: impl Into<String>) -> Self {
        Self {
            fields: vec![(field.to_owned(), message.into())],
            general: None,
        }
    }

    /// The message at `field`, if any (used by the templates).
    pub(crate) fn at(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, m)| m.as_str())
    }

    /// Whether `field` has an error (`aria-invalid`, the red border).
    pub(crate) fn has(&self, field: &str) -> bool {
        self.at(field).is_some()
    }
}

/// A page with one message and one link (404, expired form, sent mail).
#[derive(Template)]
#[template(path = "message.html")]
pub(crate) struct Message {
    /// Heading and `<title>`.
    pub title: &'static str,
    /// The text.
    pub message: &'static str,
    /// Where the link goes.
    pub link: &'static str,
    /// The link's text.
    pub link_text: &'static str,
}

/// A page for an API failure no form can fix.
#[derive(Template)]
#[template(path = "failure.html")]
pub(crate) struct Failure {
    /// Heading and `<title>`.
    pub title: &'static str,
    /// The API's message.
    pub message: String,
}
