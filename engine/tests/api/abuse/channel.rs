//! Abuse cases: the internal channel. Pushes carry every project's keys, so
//! the internal listener speaks TLS when configured (a pinned or CA-issued
//! certificate, checked by the client), a plain-HTTP client gets nothing
//! from it, each direction has its own key (the engine → admin key cannot
//! push), short or shared keys stop the engine at start, and the engine's
//! own clients (pull, traffic) go over TLS with the report key.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use qyzar_shared::control::channel::{pin_of, server_config_from_pem, Trust};
use qyzar_shared::snapshot::{encode_snapshot, Snapshot};

use crate::helpers::{project, TestEngine, SETTINGS};

const PUSH_KEY: &str = "push-key-0123456789abcdef0123456789";
const REPORT_KEY: &str = "report-key-0123456789abcdef01234567";

/// A certificate and its key, as PEM, and the certificate's DER.
struct Identity {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Identity {
    /// Self-signed for 127.0.0.1 (for pinning).
    fn self_signed() -> Self {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        Self {
            cert_pem: ck.cert.pem(),
            key_pem: ck.key_pair.serialize_pem(),
            der: ck.cert.der().to_vec(),
        }
    }

    /// A private CA and a server certificate for 127.0.0.1 it issued;
    /// answers the server identity and the CA certificate's DER.
    fn issued_by_ca() -> (Self, Vec<u8>) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        (
            Self {
                cert_pem: leaf.pem(),
                key_pem: key.serialize_pem(),
                der: leaf.der().to_vec(),
            },
            ca.der().to_vec(),
        )
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        server_config_from_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes()).unwrap()
    }
}

/// The internal listener of `engine` on a random port, TLS with `tls` when
/// given, accepting pushes with [`PUSH_KEY`].
async fn internal(
    engine: &TestEngine,
    tls: Option<&Identity>,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(qyzar_engine::internal::serve_internal(
        listener,
        Arc::clone(&engine.engine),
        Some(PUSH_KEY.to_owned()),
        tls.map(Identity::server_config),
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

/// An encoded full snapshot with one project, at `version`.
fn snapshot(version: u64) -> Vec<u8> {
    let (_, cfg) = project(SETTINGS, false);
    let snap = Snapshot::new(version, qyzar_shared::time::now_ms(), vec![cfg]).unwrap();
    encode_snapshot(&snap).unwrap()
}

/// `PUT {base}/internal/snapshot` through the channel's own connector
/// (`trust` for https); the status, or why no answer came.
async fn push(base: &str, trust: &Trust, key: &str, body: Vec<u8>) -> Result<u16, String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .build(qyzar_shared::control::channel::connector(trust)?);
    let req = http::Request::put(format!("{base}/internal/snapshot"))
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let status = res.status().as_u16();
    let _ = res.into_body().collect().await;
    Ok(status)
}

#[tokio::test]
async fn a_push_over_tls_needs_the_pinned_or_ca_issued_certificate() {
    let engine = TestEngine::spawn().await;
    let id = Identity::self_signed();
    let (addr, _stop) = internal(&engine, Some(&id)).await;
    let base = format!("https://{addr}");

    // The pinned certificate: applied.
    let pinned = Trust::Pins(vec![pin_of(&id.der)]);
    assert_eq!(push(&base, &pinned, PUSH_KEY, snapshot(1)).await, Ok(200));
    assert_eq!(engine.engine.config.version(), 1);

    // Another pin (a man in the middle's view of it): no handshake, nothing applied.
    let wrong = Trust::Pins(vec![pin_of(b"some other certificate")]);
    let refused = push(&base, &wrong, PUSH_KEY, snapshot(2)).await;
    assert!(refused.is_err(), "a wrong pin must refuse: {refused:?}");
    // Nor do the public roots vouch for a self-signed certificate.
    let public = push(&base, &Trust::PublicRoots, PUSH_KEY, snapshot(2)).await;
    assert!(public.is_err(), "{public:?}");
    assert_eq!(engine.engine.config.version(), 1);

    // A certificate from a configured private CA: applied; the CA is checked.
    let (issued, ca_der) = Identity::issued_by_ca();
    let (addr, _stop_ca) = internal(&engine, Some(&issued)).await;
    let base = format!("https://{addr}");
    let ca = Trust::Ca(vec![ca_der.into()]);
    assert_eq!(push(&base, &ca, PUSH_KEY, snapshot(3)).await, Ok(200));
    assert_eq!(engine.engine.config.version(), 3);
    let (_, other_ca) = Identity::issued_by_ca();
    let other = push(
        &base,
        &Trust::Ca(vec![other_ca.into()]),
        PUSH_KEY,
        snapshot(4),
    )
    .await;
    assert!(other.is_err(), "{other:?}");
    assert_eq!(engine.engine.config.version(), 3);
    engine.stop().await;
}

#[tokio::test]
async fn a_plain_http_client_gets_nothing_from_a_tls_listener() {
    let engine = TestEngine::spawn().await;
    let id = Identity::self_signed();
    let (addr, _stop) = internal(&engine, Some(&id)).await;
    let plain = push(
        &format!("http://{addr}"),
        &Trust::PublicRoots,
        PUSH_KEY,
        snapshot(1),
    )
    .await;
    assert!(
        plain.is_err(),
        "plain HTTP must get no answer from the TLS listener: {plain:?}"
    );
    assert_eq!(engine.engine.config.version(), 0, "nothing was applied");
    engine.stop().await;
}

#[tokio::test]
async fn the_engine_to_admin_key_cannot_push() {
    let engine = TestEngine::spawn().await;
    let (addr, _stop) = internal(&engine, None).await;
    let base = format!("http://{addr}");
    assert_eq!(
        push(&base, &Trust::PublicRoots, REPORT_KEY, snapshot(1)).await,
        Ok(401),
        "the report key is for engine → admin calls only"
    );
    assert_eq!(engine.engine.config.version(), 0);
    assert_eq!(
        push(&base, &Trust::PublicRoots, PUSH_KEY, snapshot(1)).await,
        Ok(200)
    );
    engine.stop().await;
}

#[tokio::test]
async fn short_or_shared_channel_keys_stop_the_engine_at_start() {
    let base = qyzar_engine::config::EngineConfig::from_env().expect("default configuration");
    let cases = [
        (Some("short-key"), None, "at least 32 bytes"),
        (Some(PUSH_KEY), Some("0123456789"), "at least 32 bytes"),
        (Some(PUSH_KEY), Some(PUSH_KEY), "must differ"),
        (
            Some("a key with spaces in it, long enough"),
            None,
            "printable",
        ),
    ];
    for (push_key, report_key, why) in cases {
        let mut cfg = base.clone();
        cfg.push_key = push_key.map(str::to_owned);
        cfg.report_key = report_key.map(str::to_owned);
        let err = qyzar_engine::config::start(cfg, async {})
            .await
            .expect_err("the engine must not start")
            .to_string();
        assert!(err.contains(why), "{err}");
        assert!(
            !err.contains(PUSH_KEY),
            "the key itself is never printed: {err}"
        );
    }
    let mut good = base.clone();
    good.push_key = Some(PUSH_KEY.to_owned());
    good.report_key = Some(REPORT_KEY.to_owned());
    assert!(good.validate().is_ok());
}

/// A stand-in admin speaking TLS with `id`: serves `snapshot` on `GET
/// /internal/snapshot` and takes `POST /internal/traffic`, both only with
/// `Bearer REPORT_KEY` (401 otherwise); counts the traffic batches.
async fn tls_admin(id: &Identity, snapshot: Vec<u8>) -> (SocketAddr, Arc<std::sync::Mutex<u32>>) {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(id.server_config());
    let batches = Arc::new(std::sync::Mutex::new(0u32));
    let (snapshot, seen) = (Bytes::from(snapshot), Arc::clone(&batches));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, snapshot, seen) =
                (acceptor.clone(), snapshot.clone(), Arc::clone(&seen));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (snapshot, seen) = (snapshot.clone(), Arc::clone(&seen));
                    async move {
                        let authorised = req.headers().get("authorization").is_some_and(|v| {
                            v.as_bytes() == format!("Bearer {REPORT_KEY}").as_bytes()
                        });
                        let (status, body) = match (authorised, req.uri().path()) {
                            (false, _) => (401, Bytes::from_static(b"{}")),
                            (true, "/internal/snapshot") => (200, snapshot),
                            (true, _) => {
                                *seen.lock().unwrap() += 1;
                                (
                                    200,
                                    Bytes::from_static(
                                        br#"{"rows":1,"ignoredRows":0,"duplicate":false}"#,
                                    ),
                                )
                            }
                        };
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(status)
                                .body(Full::new(body))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, batches)
}

#[tokio::test]
async fn pulls_and_traffic_reports_go_over_tls_with_the_report_key() {
    use qyzar_engine::internal::AdminLink;
    let engine = TestEngine::spawn().await;
    let id = Identity::self_signed();
    let (addr, batches) = tls_admin(&id, snapshot(7)).await;
    let link = AdminLink {
        url: format!("https://{addr}"),
        key: Some(REPORT_KEY.to_owned()),
        trust: Trust::Pins(vec![pin_of(&id.der)]),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(qyzar_engine::internal::pull_loop_with(
        Arc::clone(&engine.engine),
        link.clone(),
        Duration::from_secs(30),
        async {
            let _ = stopped.await;
        },
    ));
    let mut pulled = false;
    for _ in 0..250 {
        if engine.engine.config.version() == 7 {
            pulled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pulled, "the engine pulled version 7 over TLS");
    let _ = stop.send(());

    // The traffic reporter: delivered over TLS with the report key …
    let traffic = qyzar_engine::traffic::Traffic::new();
    traffic.enable();
    let p = qyzar_shared::ids::ProjectId::generate();
    let now = qyzar_shared::time::now_ms();
    traffic.record(
        p.as_str(),
        qyzar_shared::usage::TrafficRoute::Connect,
        qyzar_shared::usage::TrafficOutcome::Ok,
        qyzar_engine::traffic::Dims::UNKNOWN,
        now,
    );
    let reporter = qyzar_engine::traffic::Reporter::with_link(&link).unwrap();
    assert_eq!(reporter.flush(&traffic).await.unwrap(), 1);
    assert_eq!(*batches.lock().unwrap(), 1);
    // … and refused, kept for later, when the admin's certificate is not the pinned one.
    let wrong = AdminLink {
        trust: Trust::Pins(vec![pin_of(b"not admin's certificate")]),
        ..link
    };
    traffic.record(
        p.as_str(),
        qyzar_shared::usage::TrafficRoute::Connect,
        qyzar_shared::usage::TrafficOutcome::Ok,
        qyzar_engine::traffic::Dims::UNKNOWN,
        now,
    );
    let reporter = qyzar_engine::traffic::Reporter::with_link(&wrong).unwrap();
    assert!(reporter.flush(&traffic).await.is_err());
    assert_eq!(traffic.undelivered_rows(), 1);
    assert_eq!(*batches.lock().unwrap(), 1);
    engine.stop().await;
}
