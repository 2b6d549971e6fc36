//! The realtime gateway: `GET /api/v1/realtime` upgrades to a WebSocket
//! whose channels are streams of the event log (`docs/realtime.md`).
//!
//! - [`protocol`]: the frames and close codes.
//! - [`channels`]: channel names, and what goes out for each event (whole,
//!   or an offset-only stub).
//! - [`hub`]: this process's sockets and subscriptions, fed by
//! - [`tail`]: the process's one follower of the log.
//! - [`history`]: a channel's missed events, read from the log on resume.
//! - [`access`]: who may subscribe to what.
//! - [`socket`]: one socket's life.
//! - [`acks`]: delivery acknowledgements, merged per recipient and chat.
//! - [`asyncapi`]: the AsyncAPI 3 document served at `/asyncapi.json`.

pub mod access;
pub mod acks;
pub mod asyncapi;
pub mod channels;
pub mod history;
pub mod hub;
pub mod protocol;
pub mod socket;
pub mod tail;

use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use hub::Hub;

use crate::app::AppState;
use crate::auth::Origin;
use crate::problem::{Code, Problem};

/// The gateway's codes.
impl Code {
    /// `GET /api/v1/realtime` without a WebSocket handshake.
    pub const UPGRADE_REQUIRED: Code =
        Code::new("websocket_upgrade_required", StatusCode::UPGRADE_REQUIRED);
    /// A channel name this gateway does not know.
    pub const UNKNOWN_CHANNEL: Code = Code::new("unknown_channel", StatusCode::NOT_FOUND);
    /// A socket subscribed to as many channels as allowed.
    pub const TOO_MANY_CHANNELS: Code =
        Code::new("too_many_channels", StatusCode::TOO_MANY_REQUESTS);
    /// A user holds as many sockets open as allowed.
    pub const TOO_MANY_CONNECTIONS: Code =
        Code::new("too_many_connections", StatusCode::TOO_MANY_REQUESTS);
    /// A socket command this gateway does not know.
    pub const UNKNOWN_COMMAND: Code = Code::new("unknown_command", StatusCode::BAD_REQUEST);

    /// Every gateway code.
    pub const REALTIME: &'static [Code] = &[
        Self::UPGRADE_REQUIRED,
        Self::UNKNOWN_CHANNEL,
        Self::TOO_MANY_CHANNELS,
        Self::TOO_MANY_CONNECTIONS,
        Self::UNKNOWN_COMMAND,
    ];
}

/// The gateway's route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(realtime))
}

/// Upgrade to the realtime WebSocket. The socket itself authenticates: its
/// first frame is `connect` with an access token, within 15 s. The frames,
/// channels, close codes and limits are in `docs/realtime.md` and the
/// AsyncAPI document at `/asyncapi.json`.
#[utoipa::path(get, path = "/api/v1/realtime", tag = "realtime",
    responses((status = 101, description = "Switching to the WebSocket protocol"),
        (status = 426, description = "Not a WebSocket handshake", body = Problem)))]
async fn realtime(
    State(state): State<AppState>,
    origin: Origin,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(_) => {
            return Problem::new(
                Code::UPGRADE_REQUIRED,
                "This endpoint is a WebSocket: connect with a WebSocket client.",
            )
            .into_response()
        }
    };
    let config = &state.http.realtime;
    upgrade
        .read_buffer_size(config.read_buffer_bytes)
        // Frames are gathered into writes of up to 8 KiB, flushed at the
        // end of each burst (see socket.rs).
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(config.outbound_bytes.max(config.max_frame_bytes * 2))
        .max_message_size(config.max_frame_bytes)
        .max_frame_size(config.max_frame_bytes)
        .on_upgrade({
            // The upgrade's task holds this closure for the socket's whole
            // life: one pointer, not the state and origin themselves.
            let context = Box::new((state, origin));
            move |ws| {
                let (state, origin) = *context;
                socket::serve(state, ws, origin)
            }
        })
}
