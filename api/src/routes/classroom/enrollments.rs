//! `/api/v1/lessons/{id}/enrollments`: enrolling and unenrolling students.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use lectern_domain::classroom::LessonCommand;
use lectern_domain::identity::Role;
use lectern_domain::policy::Action;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{actor, run};
use crate::accepted::CommandAccepted;
use crate::app::AppState;
use crate::auth::Caller;
use crate::extract::ApiJson;
use crate::problem::Problem;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(enroll))
        .routes(routes!(unenroll))
}

/// Who to enrol.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollment {
    /// The student; the caller when absent.
    student_id: Option<Uuid>,
}

/// Enrol a student: students enrol themselves, a lesson's tutor adds
/// students. Capacity holds under any concurrency.
#[utoipa::path(post, path = "/api/v1/lessons/{id}/enrollments", tag = "lessons", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Lesson id")), request_body = NewEnrollment,
    responses((status = 201, body = CommandAccepted), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "Full or already enrolled", body = Problem)))]
async fn enroll(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<NewEnrollment>,
) -> Result<(StatusCode, Json<CommandAccepted>), Problem> {
    let grant = caller.authorize(&state, Action::LessonEnroll).await?;
    let student_id = body.student_id.unwrap_or(caller.user_id);
    let is_student = if student_id == caller.user_id {
        caller.role == Role::Student
    } else {
        let user = state
            .identity
            .users
            .store()
            .load(&student_id.to_string())
            .await?;
        user.aggregate.role == Some(Role::Student)
            && user.aggregate.status == lectern_domain::identity::user::Status::Active
    };
    if !is_student {
        return Err(Problem::invalid(
            "#/student_id",
            "must be an active student's account",
        ));
    }
    let command = LessonCommand::Enroll {
        by: actor(&caller, grant),
        student_id,
    };
    let Json(accepted) = run(&state, &caller, Action::LessonEnroll, id, command).await?;
    Ok((StatusCode::CREATED, Json(accepted)))
}

/// Remove an enrolment: the student themselves, the lesson's tutor or an admin.
#[utoipa::path(delete, path = "/api/v1/lessons/{id}/enrollments/{student_id}", tag = "lessons", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Lesson id"), ("student_id" = Uuid, Path, description = "Student id")),
    responses((status = 200, body = CommandAccepted), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn unenroll(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, student_id)): Path<(Uuid, Uuid)>,
) -> Result<Json<CommandAccepted>, Problem> {
    let grant = caller.authorize(&state, Action::LessonUnenroll).await?;
    let command = LessonCommand::Unenroll {
        by: actor(&caller, grant),
        student_id,
    };
    run(&state, &caller, Action::LessonUnenroll, id, command).await
}
