//! The dev project of `qyzar dev`: created on first start, kept in
//! `.qyzar/dev.json` (mode 0600), and turned into the engine's local
//! snapshot at every start, so a new user can call every engine route with
//! the printed credentials and nothing else.

use std::path::{Path, PathBuf};

use qyzar_shared::crypto::{random_token, ProjectSecret};
use qyzar_shared::ids::ProjectId;
use qyzar_shared::settings::ProjectSettings;
use qyzar_shared::snapshot::{encode_snapshot, provision, Snapshot};
use serde::{Deserialize, Serialize};

/// The origin the dev origin token is bound to (a typical local front end).
pub const DEV_ORIGIN: &str = "http://localhost:3000";

/// What `.qyzar/dev.json` holds.
#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct DevProject {
    /// Where the engine listens.
    pub engine_url: String,
    /// Where the admin listens.
    pub admin_url: String,
    /// The dev project.
    pub project_id: String,
    /// Its secret (a dev secret: this file is mode 0600).
    pub project_secret: String,
    /// An origin token bound to [`DevProject::origin`].
    pub origin_token: String,
    /// The origin that token is bound to.
    pub origin: String,
}

/// Loads the dev project, creating it on first start, and writes the
/// engine's snapshot file. Returns the project and the snapshot path.
pub fn prepare(dir: &Path, engine_url: &str, admin_url: &str) -> Result<(DevProject, PathBuf), crate::Error> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join("dev.json");
    let mut dev: DevProject = match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DevProject {
            engine_url: String::new(),
            admin_url: String::new(),
            project_id: ProjectId::generate().to_string(),
            project_secret: ProjectSecret::generate().expose().to_owned(),
            origin_token: random_token("qz_ot_", 24),
            origin: DEV_ORIGIN.to_owned(),
        },
        Err(e) => return Err(e.into()),
    };
    dev.engine_url = engine_url.to_owned();
    dev.admin_url = admin_url.to_owned();
    write_private(&file, &serde_json::to_vec_pretty(&dev)?)?;

    let id = ProjectId::parse(&dev.project_id)?;
    let secret = ProjectSecret::parse(&dev.project_secret).map_err(|e| format!("dev.json: {e}"))?;
    let settings = ProjectSettings { allowed_origins: vec![dev.origin.clone()], test_mode: true, ..ProjectSettings::default() };
    settings.validate()?;
    let mut cfg = provision::project_config(&id, &secret, settings, None).map_err(|e| format!("dev keys: {e}"))?;
    // The dev origin token lives as long as the dev project.
    cfg.origin_tokens.push(provision::origin_token(&dev.origin_token, &dev.origin, i64::MAX));
    cfg.normalise();
    let now = qyzar_shared::time::now_ms();
    // The version is the start time, so a restart always moves forward.
    let snapshot = Snapshot::new(now as u64, now, vec![cfg])?;
    let path = dir.join("dev-snapshot.qzsn");
    write_private(&path, &encode_snapshot(&snapshot)?)?;
    Ok((dev, path))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write as _;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dev_project_is_created_once_and_its_snapshot_decodes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, snap) = prepare(dir.path(), "http://127.0.0.1:8080", "http://127.0.0.1:8081").unwrap();
        let (b, _) = prepare(dir.path(), "http://127.0.0.1:8080", "http://127.0.0.1:8081").unwrap();
        assert_eq!(a.project_id, b.project_id, "kept across restarts");
        assert_eq!(a.project_secret, b.project_secret);
        let s = qyzar_shared::snapshot::decode_snapshot(&std::fs::read(snap).unwrap()).unwrap();
        let p = s.project(&a.project_id).unwrap();
        assert!(p.settings.test_mode);
        assert_eq!(p.settings.allowed_origins, vec![DEV_ORIGIN.to_owned()]);
        let secret = ProjectSecret::parse(&a.project_secret).unwrap();
        assert!(p.secret_matches(secret.hash().as_bytes(), 0));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("dev.json")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
