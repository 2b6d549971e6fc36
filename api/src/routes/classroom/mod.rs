//! The classroom's HTTP surface: lessons and enrolments, bulk changes,
//! whiteboards and chat. One route group per file; the helpers they share
//! (refusals as problems, the caller as an actor) are here.

pub(crate) mod boards;
mod bulk;
pub(crate) mod chat;
mod enrollments;
mod lessons;
mod problems;

use axum::http::StatusCode;
use axum::Json;
use lectern_commands::classroom::ClassroomError;
use lectern_domain::classroom::lesson::{FieldIssue, LessonField};
use lectern_domain::classroom::{Actor, LessonCommand};
use lectern_domain::policy::Action;
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::accepted::CommandAccepted;
use crate::app::AppState;
use crate::auth::Caller;
use crate::problem::{FieldError, Problem};

/// Every classroom route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(lessons::router())
        .merge(enrollments::router())
        .merge(bulk::router())
        .merge(boards::router())
        .merge(chat::router())
}

/// A classroom refusal as a problem; a 403 is recorded as a denial.
pub(crate) async fn refusal(
    state: &AppState,
    caller: &Caller,
    action: Action,
    e: ClassroomError,
) -> Problem {
    let p = Problem::from(e);
    if p.status == StatusCode::FORBIDDEN.as_u16() {
        caller.deny(state, action, p.code, &p.detail).await
    } else {
        p
    }
}

/// Whether `caller` may read lesson `id`'s board or chat under `action`
/// (`board.read`, `chat.read`): participants, and the roles the policy
/// table lets read every lesson. `Ok(true)` for those roles.
pub(crate) async fn may_read(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    action: Action,
) -> Result<bool, Problem> {
    let grant = caller.authorize(state, action).await?;
    if grant.own_only {
        if let Err(e) = state.classroom.channel_for(id, actor(caller, grant)).await {
            return Err(refusal(state, caller, action, e).await);
        }
    } else {
        state.classroom.require_lesson(id).await?;
    }
    Ok(!grant.own_only)
}

/// The actor a grant makes of `caller`.
pub(crate) fn actor(caller: &Caller, grant: crate::auth::Grant) -> Actor {
    Actor {
        user_id: caller.user_id,
        own_only: grant.own_only,
    }
}

/// A 422 naming each invalid lesson field under `base` (such as
/// `#/items/3`).
pub(crate) fn problem_of(base: &str, issues: Vec<FieldIssue>) -> Problem {
    Problem::validation(
        issues
            .into_iter()
            .map(|(field, why)| FieldError {
                pointer: format!("{base}/{}", pointer(field)),
                detail: why.0.to_owned(),
            })
            .collect(),
    )
}

/// Where a lesson field sits in a request body, under its base.
pub(crate) fn pointer(field: LessonField) -> &'static str {
    match field {
        LessonField::Title => "title",
        LessonField::Description => "description",
        LessonField::StartsAt => "starts_at",
        LessonField::DurationMinutes => "duration_minutes",
        LessonField::Capacity => "capacity",
        LessonField::PriceAmount => "price/amount_minor",
        LessonField::PriceCurrency => "price/currency",
    }
}

/// Run a lesson command for `caller`; a refusal is a problem.
pub(crate) async fn run(
    state: &AppState,
    caller: &Caller,
    action: Action,
    id: Uuid,
    command: LessonCommand,
) -> Result<Json<CommandAccepted>, Problem> {
    let meta = caller.metadata();
    match state.classroom.lesson(id, command, &meta).await {
        Ok(committed) => Ok(Json(CommandAccepted::new(id, &committed))),
        Err(e) => Err(refusal(state, caller, action, e).await),
    }
}
