//! `qyzar dev` seeding: the account and project are created through the
//! admin's API once, kept across restarts, and configured for the dev origin.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_project_is_seeded_once_through_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite:{}?mode=rwc",
        dir.path().join("admin.sqlite").display()
    );
    let config = qyzar_admin::config::AdminConfig::local(dir.path(), url);
    let state = qyzar_admin::AppState::open(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(qyzar_admin::run(listener, state.clone(), async {
        let _ = stopped.await;
    }));

    let home = dir.path().join(".qyzar");
    let first = qyzar::dev::ensure(&home, &state, "http://127.0.0.1:1", &admin_url)
        .await
        .unwrap();
    let again = qyzar::dev::ensure(&home, &state, "http://127.0.0.1:1", &admin_url)
        .await
        .unwrap();
    assert_eq!(first, again, "a restart keeps the dev project");
    assert!(first.project_id.starts_with("prj_"));
    assert!(first.project_secret.starts_with("qz_sk_"));
    assert_eq!(first.origin, qyzar::dev::DEV_ORIGIN);

    // The admin knows the project and its settings allow the dev origin in test mode.
    let row: (String,) = sqlx::query_as("SELECT settings_json FROM projects WHERE id = $1")
        .bind(&first.project_id)
        .fetch_one(state.db.pool())
        .await
        .unwrap();
    let settings: serde_json::Value = serde_json::from_str(&row.0).unwrap();
    assert_eq!(settings["testMode"], true);
    assert_eq!(
        settings["allowedOrigins"],
        serde_json::json!([qyzar::dev::DEV_ORIGIN])
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(home.join("dev.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "dev.json holds secrets");
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// One JSON call to a running service.
async fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    use http_body_util::BodyExt as _;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let res = client
        .request(
            req.body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap(),
        )
        .await
        .unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// The dashboard's dry-run rate-limit check under `qyzar dev`'s wiring:
/// engine and admin configured by [`qyzar::wire`] (on ports of this test),
/// the dev project seeded, and `POST /projects/rate-limit/check` answered by
/// dev's own engine — it answered `503` "no engine is configured" when dev
/// did not give admin the engine's public URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_wiring_lets_the_dashboard_dry_run_a_rate_limit_check() {
    let dir = tempfile::tempdir().unwrap();
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut engine_cfg = qyzar_engine::config::EngineConfig::local(&dir.path().join("engine"));
    std::fs::create_dir_all(dir.path().join("engine")).unwrap();
    engine_cfg.public_addr = public.local_addr().unwrap();
    engine_cfg.internal_addr = internal.local_addr().unwrap();
    let url = format!(
        "sqlite:{}?mode=rwc",
        dir.path().join("admin.sqlite").display()
    );
    let mut admin_cfg = qyzar_admin::config::AdminConfig::local(dir.path(), url);
    admin_cfg.addr = admin_listener.local_addr().unwrap();

    let engine_url = qyzar::wire(&mut engine_cfg, &mut admin_cfg).unwrap();
    assert_eq!(engine_url, format!("http://{}", engine_cfg.public_addr));
    assert_eq!(
        admin_cfg.engine_public_url.as_deref(),
        Some(engine_url.as_str())
    );
    assert_eq!(
        admin_cfg.engine_urls,
        [format!("http://{}", engine_cfg.internal_addr)]
    );
    assert_ne!(
        engine_cfg.push_key, engine_cfg.report_key,
        "one key per direction"
    );

    let admin_url = format!("http://{}", admin_cfg.addr);
    let state = qyzar_admin::AppState::open(admin_cfg).await.unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let admin = tokio::spawn(qyzar_admin::run(
        admin_listener,
        state.clone(),
        wait(stopped.clone()),
    ));
    let engine = tokio::spawn(qyzar_engine::config::start_on(
        engine_cfg,
        public,
        internal,
        wait(stopped.clone()),
    ));
    let dev = qyzar::dev::ensure(&dir.path().join(".qyzar"), &state, &engine_url, &admin_url)
        .await
        .unwrap();
    let (status, signin) = call(
        "POST",
        &format!("{admin_url}/auth/signin"),
        None,
        serde_json::json!({"email": dev.email, "password": dev.password}),
    )
    .await;
    assert_eq!(status, 200, "{signin}");
    let token = signin["token"].as_str().unwrap().to_owned();
    // The engine has the project once admin's push arrived; until then the
    // route says so with a 503 of its own, never "no engine is configured".
    let mut answer = (0, serde_json::Value::Null);
    for _ in 0..250 {
        answer = call(
            "POST",
            &format!("{admin_url}/projects/rate-limit/check"),
            Some(&token),
            serde_json::json!({"projectId": dev.project_id, "ip": "203.0.113.9"}),
        )
        .await;
        assert!(
            !answer.1.to_string().contains("no engine is configured"),
            "{answer:?}"
        );
        if answer.0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(answer.0, 200, "{answer:?}");
    assert_eq!(answer.1["allowed"], true, "{answer:?}");
    let _ = stop.send(true);
    admin.await.unwrap().unwrap();
    engine.await.unwrap().unwrap();
}
