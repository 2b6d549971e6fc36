//! Who may subscribe to a channel: the policy table's read action for its
//! kind, then the same checks as the HTTP reads. A refusal is recorded as an
//! `AccessDenied` event, as on HTTP.

use lectern_domain::identity::Role;
use lectern_domain::policy::Action;

use super::channels::{ChannelKey, Kind};
use crate::app::AppState;
use crate::auth::Caller;
use crate::problem::{Code, Problem};
use crate::routes::classroom::may_read;

/// The policy action a subscription to a channel of `kind` needs.
pub fn action(kind: Kind) -> Action {
    match kind {
        Kind::Board => Action::BoardRead,
        Kind::Chat => Action::ChatRead,
        Kind::Lesson => Action::LessonRead,
        Kind::User => Action::MeRead,
    }
}

/// Whether `caller` may subscribe to `key`; `Ok(true)` when they are
/// privileged on it (they see every enrolment of a lesson: its tutor,
/// admins and auditors).
pub async fn authorize(
    state: &AppState,
    caller: &Caller,
    key: ChannelKey,
) -> Result<bool, Problem> {
    let action = action(key.kind);
    match key.kind {
        Kind::Board | Kind::Chat => may_read(state, caller, key.id, action).await,
        Kind::Lesson => {
            caller.authorize(state, action).await?;
            let lesson = state.classroom.lesson_state(key.id).await?;
            Ok(matches!(caller.role, Role::Admin | Role::Auditor)
                || lesson.tutor_id == Some(caller.user_id))
        }
        Kind::User => {
            caller.authorize(state, action).await?;
            if key.id != caller.user_id {
                return Err(caller
                    .deny(
                        state,
                        action,
                        Code::NOT_OWNER,
                        "A user channel is only its own user's.",
                    )
                    .await);
            }
            Ok(true)
        }
    }
}
