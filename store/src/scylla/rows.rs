//! Bound values and decoded rows of the CQL statements.

use ::scylla::value::{CqlTimestamp, MaybeUnset};
use ::scylla::{DeserializeRow, SerializeRow};
use qyzar_shared::ids::{DeviceId, ProjectId, SessionId};

use crate::{DenyEvent, DeviceInfo, EntropySnapshot, LoginAttempt, Risk, Session, StoreError};

/// Session insert values, in statement order; the TTL is the last marker.
#[derive(SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
pub(super) struct SessionValues<'a> {
    pub(super) project_id: &'a str,
    pub(super) session_id: &'a str,
    pub(super) token_hash: &'a [u8; 32],
    pub(super) device_id: &'a str,
    pub(super) created_at: CqlTimestamp,
    pub(super) expires_at: CqlTimestamp,
    pub(super) last_seen_at: CqlTimestamp,
    pub(super) revoked: MaybeUnset<bool>,
    pub(super) ip: MaybeUnset<&'a str>,
    pub(super) risk_score: i32,
    pub(super) risk_bot: bool,
    pub(super) risk_signals: &'a [String],
    pub(super) browser: &'a str,
    pub(super) os: &'a str,
    pub(super) platform: &'a str,
    pub(super) region: MaybeUnset<&'a str>,
    pub(super) ttl: i32,
}

#[derive(SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
pub(super) struct AttemptValues<'a> {
    pub(super) project_id: &'a str,
    pub(super) identifier: &'a str,
    pub(super) at: CqlTimestamp,
    pub(super) attempt_id: &'a str,
    pub(super) success: bool,
    pub(super) ip: MaybeUnset<&'a str>,
    pub(super) device_id: MaybeUnset<&'a str>,
    pub(super) session_id: MaybeUnset<&'a str>,
    pub(super) region: MaybeUnset<&'a str>,
    pub(super) platform: MaybeUnset<&'a str>,
    pub(super) browser: MaybeUnset<&'a str>,
    pub(super) ttl: i32,
}

/// A session row. Every column is optional because a revocation mark can
/// outlive the data cells, leaving a row with only `revoked`.
#[derive(DeserializeRow)]
pub(super) struct SessionRow {
    project_id: String,
    session_id: String,
    token_hash: Option<Vec<u8>>,
    device_id: Option<String>,
    created_at: Option<CqlTimestamp>,
    expires_at: Option<CqlTimestamp>,
    last_seen_at: Option<CqlTimestamp>,
    revoked: Option<bool>,
    ip: Option<String>,
    risk_score: Option<i32>,
    risk_bot: Option<bool>,
    risk_signals: Option<Vec<String>>,
    browser: Option<String>,
    os: Option<String>,
    platform: Option<String>,
    region: Option<String>,
}

impl SessionRow {
    /// `None` for a bare revocation mark.
    pub(super) fn into_session(self) -> Result<Option<Session>, StoreError> {
        let (Some(hash), Some(device_id), Some(expires_at)) =
            (self.token_hash, self.device_id, self.expires_at)
        else {
            return Ok(None);
        };
        let token_hash = <[u8; 32]>::try_from(hash.as_slice())
            .map_err(|_| StoreError::Corrupt("session token hash is not 32 bytes".into()))?;
        Ok(Some(Session {
            project_id: parse(&self.project_id, ProjectId::parse)?,
            session_id: parse(&self.session_id, SessionId::parse)?,
            token_hash,
            device_id: parse(&device_id, DeviceId::parse)?,
            created_at: self.created_at.map_or(0, |t| t.0),
            expires_at: expires_at.0,
            last_seen_at: self.last_seen_at.map_or(0, |t| t.0),
            revoked: self.revoked.unwrap_or(false),
            ip: self.ip,
            risk: Risk {
                score: self
                    .risk_score
                    .and_then(|s| u8::try_from(s).ok())
                    .unwrap_or(0),
                bot: self.risk_bot.unwrap_or(false),
                signals: self.risk_signals.unwrap_or_default(),
            },
            device: DeviceInfo {
                browser: self.browser.unwrap_or_default(),
                os: self.os.unwrap_or_default(),
                platform: self.platform.unwrap_or_default(),
                region: self.region,
            },
        }))
    }
}

#[derive(DeserializeRow)]
pub(super) struct SnapshotRow {
    project_id: String,
    device_id: String,
    at: CqlTimestamp,
    session_id: String,
    entropy: Option<String>,
}

impl SnapshotRow {
    pub(super) fn into_snapshot(self) -> Result<EntropySnapshot, StoreError> {
        Ok(EntropySnapshot {
            project_id: parse(&self.project_id, ProjectId::parse)?,
            device_id: parse(&self.device_id, DeviceId::parse)?,
            session_id: parse(&self.session_id, SessionId::parse)?,
            at: self.at.0,
            entropy_json: self.entropy.unwrap_or_default(),
        })
    }
}

#[derive(DeserializeRow)]
pub(super) struct AttemptRow {
    project_id: String,
    identifier: String,
    at: CqlTimestamp,
    attempt_id: String,
    success: Option<bool>,
    ip: Option<String>,
    device_id: Option<String>,
    session_id: Option<String>,
    region: Option<String>,
    platform: Option<String>,
    browser: Option<String>,
}

impl AttemptRow {
    pub(super) fn into_attempt(self) -> Result<LoginAttempt, StoreError> {
        Ok(LoginAttempt {
            project_id: parse(&self.project_id, ProjectId::parse)?,
            identifier: self.identifier,
            at: self.at.0,
            attempt_id: self.attempt_id,
            success: self.success.unwrap_or(false),
            ip: self.ip,
            device_id: self
                .device_id
                .as_deref()
                .map(|d| parse(d, DeviceId::parse))
                .transpose()?,
            session_id: self
                .session_id
                .as_deref()
                .map(|s| parse(s, SessionId::parse))
                .transpose()?,
            region: self.region,
            platform: self.platform,
            browser: self.browser,
        })
    }
}

#[derive(DeserializeRow)]
pub(super) struct DenyRow {
    project_id: String,
    at: CqlTimestamp,
    bucket: Option<String>,
    deny_key: Option<String>,
    ip: Option<String>,
}

impl DenyRow {
    pub(super) fn into_event(self) -> Result<DenyEvent, StoreError> {
        Ok(DenyEvent {
            project_id: parse(&self.project_id, ProjectId::parse)?,
            at: self.at.0,
            bucket: self.bucket.unwrap_or_default(),
            key: self.deny_key.unwrap_or_default(),
            ip: self.ip,
        })
    }
}

/// An id read back from the store; a bad one means the table holds
/// something this code never wrote.
fn parse<T, E>(s: &str, f: impl FnOnce(&str) -> Result<T, E>) -> Result<T, StoreError> {
    f(s).map_err(|_| StoreError::Corrupt("a stored id does not parse".into()))
}
