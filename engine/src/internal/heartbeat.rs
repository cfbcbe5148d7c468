//! The engine's heartbeat to admin (`POST /internal/engines`): it tells
//! admin this engine is alive, where to push to (when it has an advertised
//! internal URL) and which version it serves; the answer names admin's
//! newest version, and an engine behind it wakes its pull loop at once, so a
//! missed push heals within one beat instead of one pull interval. See
//! [`qyzar_shared::control`] for the message and admin's side.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use qyzar_shared::control::{ControlClient, Direction, EngineHeartbeat};

use super::AdminLink;
use crate::state::Engine;

/// Longest one beat may take; a hung admin must not stall the loop.
const BEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// Who this engine is, as its beats say.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Its id (`QYZAR_ENGINE_ID`, else random per process).
    pub engine_id: String,
    /// The internal base URL admin should push to
    /// (`QYZAR_ENGINE_ADVERTISE_URL`); `None`: pull only.
    pub push_url: Option<String>,
    /// When this process started, unix ms.
    pub started_at_ms: i64,
}

impl Identity {
    /// A random id `eng-<16 hex>` for this process, started now.
    pub fn random(push_url: Option<String>) -> Self {
        let mut bytes = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .expect("the OS random source works");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            engine_id: format!("eng-{hex}"),
            push_url,
            started_at_ms: qyzar_shared::time::now_ms(),
        }
    }
}

/// Beats every `every` until `shutdown` resolves. Failures are logged at
/// `warn` (admin's host, never the key) and tried again at the next beat.
pub async fn heartbeat_loop(
    engine: Arc<Engine>,
    admin: AdminLink,
    me: Identity,
    every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let client = match ControlClient::new(&admin, Direction::Report, "the admin url") {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "heartbeat disabled");
            return;
        }
    };
    let every = every.max(Duration::from_millis(100));
    let mut ticks = qyzar_shared::periodic::Periodic::new(every, shutdown);
    while ticks.tick().await {
        let served = engine.config.version();
        let beat = EngineHeartbeat {
            engine_id: me.engine_id.clone(),
            push_url: me.push_url.clone(),
            version: served,
            started_at_ms: me.started_at_ms,
            heartbeat_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
        };
        let Some(answer) = ticks
            .unless_stopped(client.heartbeat(&beat, BEAT_TIMEOUT))
            .await
        else {
            break;
        };
        match answer {
            Ok(a) if a.newest_version > engine.config.version() => {
                tracing::info!(
                    served,
                    newest = a.newest_version,
                    "admin has a newer configuration; pulling now"
                );
                engine.pull_now.notify_one();
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, admin = %client.name(), "heartbeat failed")
            }
        }
    }
}
