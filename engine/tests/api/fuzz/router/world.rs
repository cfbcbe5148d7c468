//! The engines a router case runs against, and turning a drawn [`Case`]
//! into a request with the world's real ids, secret, session and tokens.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use qyzar_engine::Engine;
use qyzar_shared::crypto::{client_token_key, sign_hs256, Claims, Hs256Key, ProjectSecret};
use qyzar_shared::ids::ProjectId;
use qyzar_shared::settings::ProjectSettings;
use qyzar_shared::snapshot::provision;
use serde_json::{json, Value};

use super::{template, BodySpec, Case, V};
use crate::helpers;

/// The engines and the credentials cases draw from.
pub(super) struct World {
    rt: tokio::runtime::Runtime,
    engine: Arc<Engine>,
    bare: Arc<Engine>,
    id: String,
    secret: String,
    key: Hs256Key,
    origin_token: String,
    session: (String, String, String),
    _dirs: [tempfile::TempDir; 2],
}

fn new_engine(rt: &tokio::runtime::Runtime) -> (Arc<Engine>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = qyzar_store::EmbeddedStore::open(dir.path().join("engine.redb")).unwrap();
    let _guard = rt.enter();
    (Engine::new(Arc::new(store), Default::default()), dir)
}

impl World {
    pub(super) fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (engine, d1) = new_engine(&rt);
        let (bare, d2) = new_engine(&rt);
        let id = ProjectId::generate();
        let secret = ProjectSecret::generate();
        let settings = ProjectSettings::parse_and_validate(helpers::SETTINGS.as_bytes()).unwrap();
        let mut cfg = provision::project_config(&id, &secret, settings, None).unwrap();
        let origin_token = qyzar_shared::crypto::random_token("qz_ot_", 24);
        let expires = qyzar_shared::time::now_ms() + 3_600_000;
        cfg.origin_tokens.push(provision::origin_token(
            &origin_token,
            helpers::ORIGIN,
            expires,
        ));
        rt.block_on(async { helpers::install(&engine, 1, vec![cfg]) });
        let mut w = World {
            key: client_token_key(&secret, &id),
            id: id.to_string(),
            secret: secret.expose().to_owned(),
            origin_token,
            session: Default::default(),
            rt,
            engine,
            bare,
            _dirs: [d1, d2],
        };
        let body = json!({"projectId": w.id, "originToken": w.origin_token, "entropy": helpers::entropy()});
        let req = Request::post("/connect")
            .header("content-type", "application/json")
            .header("origin", helpers::ORIGIN)
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let (status, answer) = w.send(true, req);
        assert_eq!(status, 201, "{answer}");
        let field = |k: &str| answer[k].as_str().unwrap().to_owned();
        w.session = (
            field("sessionId"),
            field("sessionToken"),
            field("sessionJwt"),
        );
        w
    }

    pub(super) fn send(&self, configured: bool, req: Request<Full<Bytes>>) -> (u16, Value) {
        let engine = if configured { &self.engine } else { &self.bare };
        self.rt.block_on(async {
            let res = qyzar_engine::router::route(engine, None, req).await;
            let status = res.status().as_u16();
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        })
    }

    fn render(&self, v: &V) -> Value {
        match v {
            V::ProjectId => json!(self.id),
            V::Secret => json!(self.secret),
            V::SessionId => json!(self.session.0),
            V::SessionToken => json!(self.session.1),
            V::SessionJwt => json!(self.session.2),
            V::OriginToken => json!(self.origin_token),
            V::Token {
                exp,
                iat,
                md,
                other_aud,
            } => {
                let claims = Claims {
                    iss: "fuzz".into(),
                    aud: if *other_aud {
                        "prj_someoneelse0000000".into()
                    } else {
                        self.id.clone()
                    },
                    sub: "user@example.com".into(),
                    iat: *iat,
                    exp: *exp,
                    jti: "tok_fuzz".into(),
                    sid: Some(self.session.0.clone()),
                    md: md.clone().filter(|m| !m.is_null()),
                };
                json!(sign_hs256(&claims, &self.key))
            }
            V::Entropy => helpers::entropy(),
            V::Ip => json!("203.0.113.7"),
            V::Email => json!("user@example.com"),
            V::Bool => json!(true),
            V::Override(o) | V::Json(o) => o.clone(),
            V::Text(t) => json!(t),
        }
    }

    /// The value as text for a header or query parameter.
    fn text(&self, v: &V) -> String {
        match self.render(v) {
            Value::String(s) => s,
            other => other.to_string(),
        }
    }

    pub(super) fn request(&self, c: &Case) -> Option<Request<Full<Bytes>>> {
        let mut uri = c.path.clone();
        if let Some(q) = &c.raw_query {
            uri.push('?');
            uri.push_str(q);
        } else if let Some(pairs) = &c.query {
            let q: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}={}", encode(k), encode(&self.text(v))))
                .collect();
            uri.push('?');
            uri.push_str(&q.join("&"));
        }
        let mut method = Method::from_bytes(c.method.as_bytes()).ok()?;
        if c.shaped {
            method = match c.path.as_str() {
                "/ping" | "/connect.js" | "/projects/client/jwks" => Method::GET,
                _ => Method::POST,
            };
            if c.path == "/projects/client/jwks" {
                uri = format!("{}?projectId={}", c.path, self.id);
            }
        }
        let mut req = Request::builder().method(method).uri(uri);
        if c.json || c.shaped {
            req = req.header("content-type", "application/json");
        }
        if c.shaped {
            req = req
                .header("x-qyzar-project-secret", self.secret.as_str())
                .header("origin", helpers::ORIGIN);
        }
        for (name, v) in &c.headers {
            let text = match (name.as_str(), v) {
                ("authorization", _) => format!("Bearer {}", self.text(v)),
                ("cookie", V::SessionId | V::SessionToken) => format!(
                    "qyzar_session_id={}; qyzar_session_token={}",
                    self.session.0, self.session.1
                ),
                ("content-type", V::Json(_)) => "application/json".to_owned(),
                _ => self.text(v),
            };
            req = req.header(name.as_str(), HeaderValue::from_str(&text).ok()?);
        }
        let body = match &c.body {
            BodySpec::Raw(b) => b.clone(),
            BodySpec::Object(members) => {
                let mut m = serde_json::Map::new();
                let (fields, optional) = template(&c.path);
                if c.shaped {
                    for (k, v) in &fields {
                        m.insert((*k).to_owned(), self.render(v));
                    }
                    if c.path == "/projects/client/token-verify" {
                        m.insert("clientToken".into(), self.render(&c.token));
                    }
                }
                // A shaped case keeps to the route's fields (they refuse
                // unknown ones); the others take anything.
                for (k, v) in members {
                    let known =
                        fields.iter().any(|(f, _)| f == k) || optional.contains(&k.as_str());
                    if !c.shaped || known {
                        m.insert(k.clone(), self.render(v));
                    }
                }
                Value::Object(m).to_string().into_bytes()
            }
        };
        req.body(Full::new(Bytes::from(body))).ok()
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
