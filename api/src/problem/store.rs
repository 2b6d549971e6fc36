//! Storage failures as problems: a conflict is 409, a database that does not
//! answer is 503, anything else 500.

use lectern_commands::error::database_unavailable;
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
