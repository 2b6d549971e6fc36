//! What a projection is: a named fold of the event log into tables.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::PgConnection;

use crate::log::LogEvent;

/// Why a projection could not apply an event. The runner stops the projection
/// at that event (it is never skipped) and retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// Database error: ….
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Cannot apply event: ….
    #[error("cannot apply event: {0}")]
    Invalid(String),
    /// A process manager's reaction failed (see [`crate::process`]).
    #[error("reaction failed: {0}")]
    Reaction(String),
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

    /// The events it reads. The runner still walks every event in commit
    /// order (the checkpoint moves over the others), but only these are
    /// fetched whole and handed to the projection.
    fn interest(&self) -> Interest {
        Interest::ALL
    }

    /// Apply one event, writing through `conn` into `tables`.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        tables: &Tables,
        event: &LogEvent,
    ) -> Result<(), ProjectionError>;

    /// Apply a run of events in commit order. The default applies them one by
    /// one; a projection may write the run in fewer statements, as long as
    /// the result equals applying each event with [`Projection::apply`]. If
    /// this fails, the runner rolls the batch back and applies the events one
    /// by one, so a bad event is still pinned down exactly.
    async fn apply_all(
        &self,
        conn: &mut PgConnection,
        tables: &Tables,
        events: &[&LogEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            self.apply(conn, tables, event).await?;
        }
        Ok(())
    }
}

/// Which events a projection reads: see [`Projection::interest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    /// Only events of these aggregate types; `None` for every type.
    pub aggregate_types: Option<&'static [&'static str]>,
    /// Whether it reads the payload and the metadata. Without them an event
    /// carries its identity, position, types and time only.
    pub body: bool,
}

impl Interest {
    /// Every event, whole.
    pub const ALL: Self = Self {
        aggregate_types: None,
        body: true,
    };

    /// Every event of these aggregate types, whole.
    pub const fn types(aggregate_types: &'static [&'static str]) -> Self {
        Self {
            aggregate_types: Some(aggregate_types),
            body: true,
        }
    }

    /// Whether `event` is one the projection reads.
    pub fn wants(&self, event: &LogEvent) -> bool {
        self.aggregate_types
            .is_none_or(|types| types.contains(&event.aggregate_type.as_str()))
    }
}
