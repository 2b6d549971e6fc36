//! Lectern's write side: the event store and command dispatch.
//!
//! [`PgEventStore`] reads and appends aggregate streams in the shared `events`
//! table (snapshot plus tail in one query, an append in one statement).
//! [`CommandBus`] runs commands through it: one queue per aggregate, group
//! commit (within an aggregate, and across the aggregates of one type), an
//! in-memory cache, and bounded retries on cross-process conflicts.
//! [`PgEventStore`] also implements `cqrs_es::EventStore`, so a stock
//! `CqrsFramework` can run on it.
#![forbid(unsafe_code)]

pub mod billing;
pub mod bus;
pub mod classroom;
mod committer;
mod cqrs_store;
pub mod error;
pub mod history;
pub mod identity;
mod loader;
pub mod pool;
pub mod presence;
pub mod store;
pub mod video;

pub use bus::{CommandBus, Committed, DispatchConfig};
pub use error::{CommandError, StoreError};
pub use store::{Loaded, PgEventStore, RecordedEvent};

/// The migrations that define the schema, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
