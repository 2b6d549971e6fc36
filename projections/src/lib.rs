//! Lectern's read side: the gap-free log reader, projection runners and the
//! read models they keep.
//!
//! This crate reads the event log through SQL only; it never calls the write
//! side.
#![forbid(unsafe_code)]

pub mod analytics;
pub mod audit;
pub mod billing;
pub mod classroom;
pub mod follow;
pub mod identity;
pub mod ledger;
pub mod log;
pub mod presence;
pub mod process;
pub mod projection;
pub mod runner;
pub mod status;
pub mod video;

pub use follow::{FollowConfig, Follower, Tail, Vouch, Wakeup, EVENTS_CHANNEL};
pub use log::LogEvent;
pub use process::{ProcessManager, ReactionError, Reactor};
pub use projection::{Interest, Projection, ProjectionError, Tables};
pub use runner::{RunnerConfig, RunnerHandle, RunnerState, Runners};
pub use status::ProjectionStatus;

use std::sync::Arc;

/// Every projection the server runs.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(analytics::DailyEventCounts),
        Arc::new(identity::IdentityProjection),
        Arc::new(audit::AuditLog),
        Arc::new(classroom::LessonsProjection),
        Arc::new(classroom::BoardsProjection),
        Arc::new(classroom::ChatProjection),
        Arc::new(presence::PresenceProjection),
        Arc::new(video::VideoProjection),
        Arc::new(billing::BillingProjection),
    ]
}
