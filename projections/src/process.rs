//! Process managers: reacting to events with commands.
//!
//! When one aggregate's event must cause a command on another (an enrolment
//! updates the board's roster; later, opens an invoice or schedules a
//! reminder), the command that wrote the event does not do it. A process
//! manager follows the log instead, with a checkpoint of its own, and issues
//! the follow-up commands. So a command's answer depends only on its own
//! append, and a follow-up survives a crash: after kill -9 the process
//! manager (in this process or another that takes over its lock) resumes
//! from its checkpoint.
//!
//! It runs on the projection runner ([`Reactor`] makes it a projection with
//! no tables): one active instance in the cluster, failover, backoff on
//! failure, its position in `projection_checkpoints`. A reaction commits
//! before the checkpoint moves past its event, so after a crash an event may
//! be handed to [`ProcessManager::react`] again: reactions must be
//! idempotent. The usual way is a command whose effect is keyed by the
//! event (its id as the causation id, or a version it carries), which the
//! target aggregate refuses or ignores the second time.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::PgConnection;

use crate::log::LogEvent;
use crate::projection::{Interest, Projection, ProjectionError, Tables};

/// Why a reaction failed. The process manager stops at that event and
/// retries it with backoff; it never skips it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReactionError(pub String);

/// Reacts to events of the log by issuing commands.
#[async_trait]
pub trait ProcessManager: Send + Sync + 'static {
    /// A stable name: its checkpoint and advisory-lock key.
    fn name(&self) -> &'static str;

    /// The events it reacts to.
    fn interest(&self) -> Interest;

    /// React to one event. May run more than once for the same event (after
    /// a crash or a failed batch): it must be idempotent.
    async fn react(&self, event: &LogEvent) -> Result<(), ReactionError>;
}

/// A process manager as the runner sees it: a projection without tables.
pub struct Reactor(pub Arc<dyn ProcessManager>);

#[async_trait]
impl Projection for Reactor {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    fn interest(&self) -> Interest {
        self.0.interest()
    }

    async fn apply(
        &self,
        _conn: &mut PgConnection,
        _tables: &Tables,
        event: &LogEvent,
    ) -> Result<(), ProjectionError> {
        self.0
            .react(event)
            .await
            .map_err(|e| ProjectionError::Reaction(e.0))
    }
}
