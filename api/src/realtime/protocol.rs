//! The frames of the realtime socket: JSON text frames, one object each,
//! told apart by `type`. `docs/realtime.md` describes each with an example,
//! and `/asyncapi.json` (built from [`crate::realtime::asyncapi`]) lists
//! them; a test checks that every frame type named here is in both.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::problem::Problem;

/// Where a client resumes a channel: the epoch and the last offset it saw.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Since {
    /// The epoch the offsets belong to (from an earlier `subscribed`).
    pub epoch: String,
    /// The last offset the client has.
    pub offset: u64,
}

/// A frame from the client.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// The first frame: authenticate with an access token.
    Connect {
        /// Echoed in the answer.
        #[serde(default)]
        id: Option<u64>,
        /// An access token.
        token: String,
        /// The device this socket runs on (1 to 128 bytes): a reconnect from
        /// the same device replaces the connection it lost.
        #[serde(default)]
        device: Option<String>,
    },
    /// Swap in a new access token before the current one expires.
    Refresh {
        /// Echoed in the answer.
        #[serde(default)]
        id: Option<u64>,
        /// The new access token, for the same user.
        token: String,
    },
    /// Subscribe to a channel, from where the client left it or from now.
    Sub {
        /// Echoed in the answer.
        #[serde(default)]
        id: Option<u64>,
        /// `board:{lesson_id}`, `chat:{lesson_id}`, `lesson:{id}` or `user:{id}`.
        channel: String,
        /// Resume after this point: the missed events come in the answer.
        #[serde(default)]
        since: Option<Since>,
        /// On a `lesson:` channel: `full` (the default) for each
        /// participant's status and the diffs, `counts` for the number per
        /// status only (large lessons), `none` for no presence.
        #[serde(default)]
        presence: Option<PresenceMode>,
    },
    /// Stop receiving a channel.
    Unsub {
        /// Echoed in the answer.
        #[serde(default)]
        id: Option<u64>,
        /// The channel.
        channel: String,
    },
    /// Run a command, as the HTTP API would.
    Cmd {
        /// Echoed in the `reply`.
        id: u64,
        /// `chat.send`, `board.ops` or `video.heartbeat`.
        op: String,
        /// The channel the command is for: `chat:{lesson_id}` or
        /// `board:{lesson_id}` (none for `video.heartbeat`).
        #[serde(default)]
        channel: Option<String>,
        /// The command's body, as its HTTP request body.
        data: Value,
    },
    /// Cumulative acknowledgement of a chat channel's messages, by message
    /// `seq`: received up to `recv`, read up to `read`.
    Ack {
        /// `chat:{lesson_id}`.
        channel: String,
        /// Every message up to this `seq` was received.
        #[serde(default)]
        recv: Option<u64>,
        /// Every message up to this `seq` was read.
        #[serde(default)]
        read: Option<u64>,
    },
    /// Choose one's presence status: `online`, `away` or `busy`.
    Status {
        /// Echoed in the answer.
        #[serde(default)]
        id: Option<u64>,
        /// The status.
        status: String,
    },
    /// A pointer position on a board: relayed to its other subscribers,
    /// throttled, never stored.
    Cursor {
        /// `board:{lesson_id}`.
        channel: String,
        /// Horizontal position.
        x: f64,
        /// Vertical position.
        y: f64,
    },
}

impl ClientFrame {
    /// Every `type` a client may send.
    pub const TYPES: &'static [&'static str] = &[
        "connect", "refresh", "sub", "unsub", "cmd", "ack", "status", "cursor",
    ];
}

/// Every `type` the server sends.
pub const SERVER_TYPES: &[&str] = &[
    "connected",
    "refreshed",
    "subscribed",
    "unsubscribed",
    "pub",
    "unsub",
    "reply",
    "cursor",
    "presence",
    "status",
    "video.stop",
    "error",
];

/// How a `lesson:` subscriber wants presence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceMode {
    /// Each participant's status, then diffs.
    #[default]
    Full,
    /// The number of participants per status only.
    Counts,
    /// No presence.
    None,
}

/// The answer to `connect`.
#[derive(Debug, Serialize)]
pub struct Connected {
    /// Always `connected`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// This connection's id.
    pub client: String,
    /// The process serving it.
    pub node: String,
    /// The user.
    pub user_id: uuid::Uuid,
    /// The history's epoch: offsets are comparable only within one.
    pub epoch: String,
    /// When the token expires (Unix seconds): send `refresh` before then.
    pub expires_at: i64,
    /// The server pings this often (seconds); answer within `pong_timeout`.
    pub ping: u64,
    /// Seconds to answer a ping.
    pub pong_timeout: u64,
}

/// A subscription's answer.
#[derive(Debug, Serialize)]
pub struct Subscribed {
    /// Always `subscribed`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The channel.
    pub channel: String,
    /// The history's epoch.
    pub epoch: String,
    /// The channel's last offset when subscribing: live `pub`s follow it.
    pub top: u64,
    /// Whether `pubs` holds every event after `since`: present when
    /// `since` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// Why not: `epoch`, `offset_ahead`, `too_many` or `too_large`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The missed events, in offset order (raw `pub` frames).
    pub pubs: Vec<Box<serde_json::value::RawValue>>,
    /// On a `lesson:` channel: each participant's status (`full`) or the
    /// number per status (`counts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<serde_json::Value>,
}

/// An error frame: the answer to a request that failed, or a complaint
/// about a frame that could not be read.
#[derive(Debug, Serialize)]
pub struct ErrorFrame<'a> {
    /// Always `error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request's id, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The channel, for a refused `sub`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<&'a str>,
    /// An RFC 9457 problem.
    pub error: &'a Problem,
}

/// Close codes: 4000–4499 ask the client to reconnect, 4500 and up not to.
pub mod close {
    /// The server is shutting down: reconnect (to another process).
    pub const SHUTTING_DOWN: u16 = 4000;
    /// No `connect` frame within the deadline: reconnect and authenticate.
    pub const AUTH_TIMEOUT: u16 = 4001;
    /// The client read too slowly: its outbound queue overflowed.
    pub const SLOW: u16 = 4008;
    /// No pong in time: the connection is presumed dead.
    pub const PONG_TIMEOUT: u16 = 4009;
    /// The access token expired without a `refresh`: get a new one, reconnect.
    pub const TOKEN_EXPIRED: u16 = 4401;
    /// Over a rate limit: reconnect later.
    pub const RATE_LIMITED: u16 = 4429;
    /// A frame that breaks the protocol (not JSON, unknown type, no `connect` first).
    pub const PROTOCOL: u16 = 4500;
    /// The token is not valid.
    pub const INVALID_TOKEN: u16 = 4501;
    /// The session was revoked or the account deactivated.
    pub const REVOKED: u16 = 4502;
    /// The user has too many connections open.
    pub const TOO_MANY_CONNECTIONS: u16 = 4503;
    /// A frame larger than the limit.
    pub const FRAME_TOO_LARGE: u16 = 4504;

    /// Every close code, with its reason and whether to reconnect.
    pub const ALL: &[(u16, &str, bool)] = &[
        (SHUTTING_DOWN, "shutting_down", true),
        (AUTH_TIMEOUT, "auth_timeout", true),
        (SLOW, "slow_consumer", true),
        (PONG_TIMEOUT, "pong_timeout", true),
        (TOKEN_EXPIRED, "token_expired", true),
        (RATE_LIMITED, "rate_limited", true),
        (PROTOCOL, "protocol_error", false),
        (INVALID_TOKEN, "invalid_token", false),
        (REVOKED, "revoked", false),
        (TOO_MANY_CONNECTIONS, "too_many_connections", false),
        (FRAME_TOO_LARGE, "frame_too_large", false),
    ];

    /// The reason sent with `code`.
    pub fn reason(code: u16) -> &'static str {
        ALL.iter()
            .find(|(c, _, _)| *c == code)
            .map_or("closed", |(_, r, _)| r)
    }
}
