//! Identity's HTTP surface: registration, login and tokens, the caller's
//! own account, devices, and account administration.

mod auth;
mod devices;
mod me;
mod problems;
mod users;

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

/// Every identity route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(auth::router())
        .merge(me::router())
        .merge(devices::router())
        .merge(users::router())
}
