//! `/api/v1/audit/*`: for auditors and admins. The audit log projection
//! (`events`), and the verifiable ledger (`ledger`): the sealed global feed,
//! stream history, signed checkpoints and proofs (docs/audit.md). Every read
//! here is recorded as an `AuditHistoryRead` event on the reader's access
//! log before it is answered: who looked at what.

pub mod events;
pub mod ledger;

use axum::http::{StatusCode, Uri};
use lectern_domain::access::RecordAuditRead;
use lectern_domain::policy::Action;
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;
use crate::auth::Caller;
use crate::problem::{Code, Problem};

/// The audit routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(events::router())
        .merge(ledger::router())
}

/// The audit context's codes.
impl Code {
    /// No checkpoint has been signed yet.
    pub const NO_CHECKPOINT: Code = Code::new("no_checkpoint", StatusCode::NOT_FOUND);
    /// No events in that stream.
    pub const STREAM_NOT_FOUND: Code = Code::new("stream_not_found", StatusCode::NOT_FOUND);
    /// A sequence number or tree size beyond what is sealed.
    pub const BEYOND_LEDGER: Code = Code::new("beyond_ledger", StatusCode::UNPROCESSABLE_ENTITY);
    /// The stream ends before that version.
    pub const VERSION_NOT_FOUND: Code = Code::new("version_not_found", StatusCode::NOT_FOUND);
    /// No aggregate of that type exists.
    pub const UNKNOWN_AGGREGATE_TYPE: Code =
        Code::new("unknown_aggregate_type", StatusCode::NOT_FOUND);

    /// Every audit code.
    pub const AUDIT: &'static [Code] = &[
        Self::NO_CHECKPOINT,
        Self::STREAM_NOT_FOUND,
        Self::BEYOND_LEDGER,
        Self::VERSION_NOT_FOUND,
        Self::UNKNOWN_AGGREGATE_TYPE,
    ];
}

/// Record that `caller` read `uri` of the audit history. The read is only
/// answered once this is recorded: an unrecorded read is an error (503).
pub(crate) async fn record_read(
    state: &AppState,
    caller: &Caller,
    uri: &Uri,
) -> Result<(), Problem> {
    let read = RecordAuditRead {
        action: Action::AuditRead.name().to_owned(),
        method: caller.origin.method.clone(),
        path: uri.path().chars().take(512).collect(),
        query: uri.query().unwrap_or("").chars().take(1024).collect(),
    };
    state
        .identity
        .record_audit_read(
            &format!("user:{}", caller.user_id),
            read,
            &caller.metadata(),
        )
        .await?;
    Ok(())
}
