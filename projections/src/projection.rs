//! What a projection is: a named fold of the event log into tables.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::PgConnection;

use crate::log::LogEvent;

/// Why a projection could not apply an event. The runner stops the projection
/// at that event (it is never skipped) and retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot apply event: {0}")]
    Invalid(String),
}

/// The physical names of a projection's tables for one run: the live tables,
/// or the shadow tables a rebuild fills before it swaps them in.
#[derive(Debug, Clone)]
pub struct Tables {
    names: HashMap<&'static str, String>,
}

/// The suffix of a table being rebuilt.
pub const SHADOW_SUFFIX: &str = "__rebuild";

impl Tables {
    /// The live tables.
    pub fn live(tables: &[&'static str]) -> Self {
        Self {
            names: tables.iter().map(|t| (*t, (*t).to_owned())).collect(),
        }
    }

    /// The shadow tables of a rebuild.
    pub fn shadow(tables: &[&'static str]) -> Self {
        Self {
            names: tables
                .iter()
                .map(|t| (*t, format!("{t}{SHADOW_SUFFIX}")))
                .collect(),
        }
    }

    /// The physical name of `table`, one the projection declared.
    pub fn get(&self, table: &str) -> &str {
        self.names
            .get(table)
            .map(String::as_str)
            .expect("a projection only names tables it declared in Projection::tables")
    }
}

/// A read model kept up to date from the event log.
///
/// `apply` runs inside the runner's batch transaction, which also moves the
/// checkpoint: a batch's writes and its checkpoint commit together, so every
/// event takes effect exactly once.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// A stable name: the checkpoint key and the advisory-lock key.
    fn name(&self) -> &'static str;

    /// The tables it writes, schema-qualified where not in `public`. A rebuild
    /// fills copies of these and swaps them in.
    fn tables(&self) -> &'static [&'static str];

    /// Apply one event, writing through `conn` into `tables`.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        tables: &Tables,
        event: &LogEvent,
    ) -> Result<(), ProjectionError>;
}
