//! Errors of the write side, kept apart by layer: a domain rejection is not a
//! storage failure.

use std::sync::Arc;

/// What failed underneath a command. Cheap to clone, so one failed append can
/// answer every command of its batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to the aggregate first (the primary key refused
    /// our sequence numbers).
    #[error("the aggregate was changed concurrently")]
    Conflict,
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(#[source] Arc<sqlx::Error>),
    /// A stored event or snapshot does not deserialise, or one could not be
    /// serialised.
    #[error("serialization error: {0}")]
    Serialization(#[source] Arc<serde_json::Error>),
    /// The aggregate's worker stopped before answering (it panicked or the
    /// process is shutting down).
    #[error("the command was not processed: the aggregate's worker stopped")]
    WorkerGone,
}

impl StoreError {
    /// Whether the database could not be reached or is going away, as
    /// opposed to refusing what was sent.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Database(e) if database_unavailable(e))
    }
}

/// Whether `e` says the database cannot be reached or is going away (a
/// restart, a failover), rather than that a statement is wrong: the former
/// is worth a retry (503), the latter is a bug (500).
pub fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        // Class 08: connection exception; 57P01-57P03: the server is shutting
        // down or starting up; 53300: too many connections.
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("57P") || code == "53300"
        }),
        _ => false,
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict,
            // A deadlock aborted the statement and wrote nothing: as safe to
            // retry as a lost race.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("40P01") => Self::Conflict,
            _ => Self::Database(Arc::new(e)),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self::Serialization(Arc::new(e))
    }
}

/// The outcome of a command that did not commit.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused the command: a domain rule was broken.
    #[error(transparent)]
    Rejected(E),
    /// Conflicting writers from other processes won every retry.
    #[error("the aggregate was changed concurrently; retries exhausted")]
    Conflict,
    /// Storage failed.
    #[error(transparent)]
    Store(StoreError),
}

impl<E: std::error::Error> From<StoreError> for CommandError<E> {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => Self::Conflict,
            other => Self::Store(other),
        }
    }
}
