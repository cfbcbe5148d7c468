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
