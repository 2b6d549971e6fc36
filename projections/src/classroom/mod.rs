//! The classroom read models, one file per projection with its queries.
//!
//! - `lessons.rs`: `lessons` and `enrollments`, from the Lesson streams;
//! - `boards.rs`: `boards`, `board_elements` (each element's contents) and
//!   `board_ops` (the applied-operation log, with what each op changed, for
//!   undo, redo and reconnecting clients), from the Board streams, folded a
//!   run at a time by `board_run.rs`;
//! - `chat.rs`: `messages` and one `deliveries` row per recipient, from the
//!   Channel and Inbox streams.

mod board_run;
pub mod boards;
pub mod chat;
pub mod lessons;

pub use boards::*;
pub use chat::*;
pub use lessons::*;

use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::log::LogEvent;
use crate::projection::ProjectionError;

pub(crate) fn decode<T: DeserializeOwned>(event: &LogEvent) -> Result<T, ProjectionError> {
    T::deserialize(&event.payload)
        .map_err(|e| ProjectionError::Invalid(format!("{} payload: {e}", event.event_type)))
}

pub(crate) fn uuid_of(event: &LogEvent) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(&event.aggregate_id)
        .map_err(|e| ProjectionError::Invalid(format!("aggregate id: {e}")))
}
