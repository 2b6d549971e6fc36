//! Storage failures as problems: a conflict is 409, a database that does not
//! answer is 503, anything else 500.

use lectern_commands::StoreError;

use super::{Code, Problem};

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => Problem::new(
                Code::CONFLICT,
                "The resource was changed concurrently; retry.",
            ),
            StoreError::Database(_) | StoreError::WorkerGone => Problem::unavailable(e),
            StoreError::Serialization(_) => Problem::internal(e),
        }
    }
}

impl From<sqlx::Error> for Problem {
    fn from(e: sqlx::Error) -> Self {
        if database_unavailable(&e) {
            Self::unavailable(e)
        } else {
            Self::internal(e)
        }
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
