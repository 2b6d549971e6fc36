//! `/api/v1/devices*`: the caller's devices. At most one is active.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use lectern_commands::identity::sha256_hex;
use lectern_domain::identity::{Platform, UserCommand};
use lectern_domain::policy::Action;
use lectern_projections::identity::{self, DeviceRow};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accepted::CommandAccepted;
use crate::app::AppState;
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery};
use crate::pagination::Consistency;
use crate::problem::Problem;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register_device, list_devices))
        .routes(routes!(activate_device))
        .routes(routes!(revoke_device))
}

/// A device to register.
#[derive(Deserialize, ToSchema)]
pub struct NewDevice {
    /// The client's stable device id (1 to 128 printable ASCII characters,
    /// no spaces); sessions logged in with this value as
    /// `device_fingerprint` are bound to the device.
    #[schema(min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
    device_id: String,
    /// 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// `web`, `android` or `ios`.
    #[schema(value_type = String, example = "web", pattern = "^(web|android|ios)$")]
    platform: Platform,
}

fn device_id(raw: &str, pointer: &str) -> Result<String, Problem> {
    let ok = !raw.is_empty() && raw.len() <= 128 && raw.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(Problem::invalid(
            pointer,
            "must be 1 to 128 printable ASCII characters",
        ))
    }
}

/// Register a device for the caller.
#[utoipa::path(post, path = "/api/v1/devices", tag = "devices", security(("bearer" = [])), request_body = NewDevice,
    responses((status = 201, body = CommandAccepted), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn register_device(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewDevice>,
) -> Result<(StatusCode, Json<CommandAccepted>), Problem> {
    caller.authorize(&state, Action::DeviceRegister).await?;
    let id = device_id(&body.device_id, "#/device_id")?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Problem::invalid("#/name", "must be 1 to 100 characters"));
    }
    let command = UserCommand::RegisterDevice {
        device_id: id.clone(),
        name: name.to_owned(),
        platform: body.platform,
    };
    let committed = state
        .identity
        .execute(caller.user_id, command, &caller.metadata())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CommandAccepted::new(id, &committed)),
    ))
}

/// The caller's devices.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", security(("bearer" = [])), params(Consistency),
    responses((status = 200, body = [DeviceRow]), (status = 401, body = Problem)))]
async fn list_devices(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(consistency): ApiQuery<Consistency>,
) -> Result<Json<Vec<DeviceRow>>, Problem> {
    caller.authorize(&state, Action::DeviceRead).await?;
    consistency.wait(&state, "identity").await?;
    Ok(Json(
        identity::devices_of(&state.read_pool, caller.user_id).await?,
    ))
}

/// Make this device the active one; the previously active device is
/// deactivated in the same event.
#[utoipa::path(post, path = "/api/v1/devices/{id}/activate", tag = "devices", security(("bearer" = [])),
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = CommandAccepted), (status = 404, body = Problem)))]
async fn activate_device(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<CommandAccepted>, Problem> {
    caller.authorize(&state, Action::DeviceActivate).await?;
    let id = device_id(&id, "#/id")?;
    let command = UserCommand::ActivateDevice {
        device_id: id.clone(),
    };
    let committed = state
        .identity
        .execute(caller.user_id, command, &caller.metadata())
        .await?;
    Ok(Json(CommandAccepted::new(id, &committed)))
}

/// Revoke a device; sessions bound to it end.
#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "devices", security(("bearer" = [])),
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = CommandAccepted), (status = 404, body = Problem)))]
async fn revoke_device(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<CommandAccepted>, Problem> {
    caller.authorize(&state, Action::DeviceRevoke).await?;
    let id = device_id(&id, "#/id")?;
    let command = UserCommand::RevokeDevice {
        fingerprint_hash: sha256_hex(&id),
        device_id: id.clone(),
    };
    let committed = state
        .identity
        .execute(caller.user_id, command, &caller.metadata())
        .await?;
    Ok(Json(CommandAccepted::new(id, &committed)))
}
