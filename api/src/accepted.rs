//! The answer every command endpoint gives.

use lectern_commands::Committed;
use serde::Serialize;
use utoipa::ToSchema;

/// The answer to a command.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandAccepted {
    /// The id of the thing the command acted on.
    pub id: String,
    /// The aggregate's version after the command.
    pub version: u64,
    /// Where the command's last event sits in the log; pass it as
    /// `consistent_with` to a query to read your own write.
    pub position: Option<String>,
}

impl CommandAccepted {
    /// The answer for `committed`, naming `id`.
    pub fn new<E>(id: impl ToString, committed: &Committed<E>) -> Self {
        Self {
            id: id.to_string(),
            version: committed.version,
            position: committed.position.map(|p| p.to_string()),
        }
    }
}
