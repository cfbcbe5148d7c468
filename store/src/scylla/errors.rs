//! How driver errors map onto [`StoreError`].

use ::scylla::errors::{DbError, ExecutionError, PrepareError, RequestAttemptError};

use crate::StoreError;

pub(super) fn corrupt(what: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("cql {what}: unexpected result: {e}"))
}

/// Driver errors: anything about reaching nodes or replicas in time is
/// `Unavailable` (503, retry); a rejected statement is `Corrupt` (the schema
/// and the code disagree). Messages carry the driver's text, which names
/// nodes and server errors but never bound values.
pub(super) fn exec_err(what: &'static str, e: ExecutionError) -> StoreError {
    let transient = match &e {
        ExecutionError::ConnectionPoolError(_)
        | ExecutionError::RequestTimeout(_)
        | ExecutionError::EmptyPlan
        | ExecutionError::SchemaAgreementError(_)
        | ExecutionError::MetadataError(_)
        | ExecutionError::UseKeyspaceError(_) => true,
        ExecutionError::LastAttemptError(a) => attempt_is_transient(a),
        ExecutionError::PrepareError(p) => prepare_is_transient(p),
        _ => false,
    };
    let msg = format!("cql {what}: {e}");
    if transient {
        StoreError::Unavailable(msg)
    } else {
        StoreError::Corrupt(msg)
    }
}

pub(super) fn prepare_err(e: PrepareError) -> StoreError {
    let msg = format!("cql prepare: {e}");
    if prepare_is_transient(&e) {
        StoreError::Unavailable(msg)
    } else {
        StoreError::Corrupt(msg)
    }
}

fn prepare_is_transient(e: &PrepareError) -> bool {
    match e {
        PrepareError::ConnectionPoolError(_) => true,
        PrepareError::AllAttemptsFailed { first_attempt } => attempt_is_transient(first_attempt),
        _ => false,
    }
}

fn attempt_is_transient(e: &RequestAttemptError) -> bool {
    match e {
        RequestAttemptError::BrokenConnectionError(_)
        | RequestAttemptError::UnableToAllocStreamId => true,
        RequestAttemptError::DbError(db, _) => matches!(
            db,
            DbError::Unavailable { .. }
                | DbError::Overloaded
                | DbError::IsBootstrapping
                | DbError::ReadTimeout { .. }
                | DbError::WriteTimeout { .. }
                | DbError::ReadFailure { .. }
                | DbError::WriteFailure { .. }
                | DbError::RateLimitReached { .. }
                | DbError::ServerError
                | DbError::TruncateError
        ),
        _ => false,
    }
}
