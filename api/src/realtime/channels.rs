//! Channels and what goes out on them. A channel is one aggregate's stream,
//! so its offset is the aggregate's `sequence`: contiguous, with no gaps.
//! An event a subscriber may not see goes out as an offset-only stub.

use std::fmt;
use std::sync::Arc;

use lectern_projections::LogEvent;
use serde_json::Value;
use uuid::Uuid;

/// The kinds of channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `board:{lesson_id}`: the Board stream (ops).
    Board,
    /// `chat:{lesson_id}`: the Channel stream (messages).
    Chat,
    /// `lesson:{id}`: the Lesson stream (state and enrolments).
    Lesson,
    /// `user:{id}`: the User stream (session revocations, role changes).
    User,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 4] = [Kind::Board, Kind::Chat, Kind::Lesson, Kind::User];

    /// The prefix before the `:`.
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Board => "board",
            Kind::Chat => "chat",
            Kind::Lesson => "lesson",
            Kind::User => "user",
        }
    }

    /// The aggregate type whose stream the channel carries.
    pub fn aggregate_type(self) -> &'static str {
        match self {
            Kind::Board => "Board",
            Kind::Chat => "Channel",
            Kind::Lesson => "Lesson",
            Kind::User => "User",
        }
    }

    fn of_aggregate(aggregate_type: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.aggregate_type() == aggregate_type)
    }
}

/// A channel: a kind and the id of its aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelKey {
    /// The kind.
    pub kind: Kind,
    /// The aggregate's id.
    pub id: Uuid,
}

impl ChannelKey {
    /// Parse `kind:uuid`.
    pub fn parse(s: &str) -> Option<Self> {
        let (prefix, id) = s.split_once(':')?;
        let kind = Kind::ALL.into_iter().find(|k| k.prefix() == prefix)?;
        let id = Uuid::parse_str(id).ok()?;
        Some(Self { kind, id })
    }

    /// The channel an event belongs to, if the gateway carries its stream.
    pub fn of_event(event: &LogEvent) -> Option<Self> {
        let kind = Kind::of_aggregate(&event.aggregate_type)?;
        let id = Uuid::parse_str(&event.aggregate_id).ok()?;
        Some(Self { kind, id })
    }
}

impl fmt::Display for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.prefix(), self.id)
    }
}

/// Who may see an event's content; everyone else gets a stub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Every subscriber.
    All,
    /// No subscriber: bookkeeping (a roster copy).
    Nobody,
    /// Only this user (an op's rejection goes to who sent it).
    Only(Uuid),
    /// This user and the channel's privileged subscribers (the lesson's
    /// tutor, admins, auditors): an enrolment.
    PrivilegedAnd(Uuid),
}

/// An event as the gateway sends it: serialised once, whoever gets it.
#[derive(Debug)]
pub struct Publication {
    /// The channel.
    pub key: ChannelKey,
    /// The event's offset: its stream `sequence`.
    pub offset: u64,
    /// Who may see the content.
    pub audience: Audience,
    /// The whole `pub` frame.
    pub frame: Arc<str>,
    /// The frame sent to everyone else: the offset only.
    pub stub: Arc<str>,
}

impl Publication {
    /// The frame `viewer` gets, `privileged` on this channel or not.
    pub fn frame_for(&self, viewer: Uuid, privileged: bool) -> &Arc<str> {
        let sees = match self.audience {
            Audience::All => true,
            Audience::Nobody => false,
            Audience::Only(u) => u == viewer,
            Audience::PrivilegedAnd(u) => privileged || u == viewer,
        };
        if sees {
            &self.frame
        } else {
            &self.stub
        }
    }
}

/// The event's own fields: cqrs-es stores `{"EventType": {...}}`.
fn body_of<'a>(payload: &'a Value, event_type: &str) -> &'a Value {
    payload.get(event_type).unwrap_or(payload)
}

fn uuid_field(body: &Value, field: &str) -> Option<Uuid> {
    body.get(field)
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// Who may see `event_type` with fields `body` on a channel of `kind`.
fn audience(kind: Kind, event_type: &str, body: &Value) -> Audience {
    let only = |field| uuid_field(body, field).map_or(Audience::Nobody, Audience::Only);
    match (kind, event_type) {
        (Kind::Board | Kind::Chat, "RosterSynced") => Audience::Nobody,
        (Kind::Board, "OpRejected" | "OpDuplicated" | "OpDuplicate") => only("user_id"),
        (Kind::Lesson, "StudentEnrolled" | "StudentUnenrolled") => {
            uuid_field(body, "student_id").map_or(Audience::Nobody, Audience::PrivilegedAnd)
        }
        // A user's own stream: only what ends or changes their access. The
        // rest (logins, password hashes, devices) stays on the server.
        (Kind::User, "SessionRevoked" | "RoleChanged" | "UserDeactivated") => Audience::All,
        (Kind::User, _) => Audience::Nobody,
        _ => Audience::All,
    }
}

#[derive(serde::Serialize)]
struct PubFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    channel: &'a str,
    offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    skip: bool,
}

/// The publication of `event`, or `None` when the gateway does not carry
/// its stream. Metadata (addresses, user agents) never goes out.
pub fn publication(event: &LogEvent) -> Option<Publication> {
    let key = ChannelKey::of_event(event)?;
    let offset = u64::try_from(event.sequence).ok()?;
    let channel = key.to_string();
    let body = body_of(&event.payload, &event.event_type);
    let frame = serde_json::to_string(&PubFrame {
        kind: "pub",
        channel: &channel,
        offset,
        event: Some(&event.event_type),
        at: Some(
            event
                .recorded_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        ),
        data: Some(body),
        skip: false,
    })
    .ok()?;
    let stub = serde_json::to_string(&PubFrame {
        kind: "pub",
        channel: &channel,
        offset,
        event: None,
        at: None,
        data: None,
        skip: true,
    })
    .ok()?;
    Some(Publication {
        key,
        offset,
        audience: audience(key.kind, &event.event_type, body),
        frame: frame.into(),
        stub: stub.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip() {
        let id = Uuid::new_v4();
        for kind in Kind::ALL {
            let name = format!("{}:{id}", kind.prefix());
            let key = ChannelKey::parse(&name).expect("a channel");
            assert_eq!(key.kind, kind);
            assert_eq!(key.to_string(), name);
        }
        assert!(ChannelKey::parse("board:nope").is_none());
        assert!(ChannelKey::parse(&format!("video:{id}")).is_none());
        assert!(ChannelKey::parse("board").is_none());
    }

    #[test]
    fn rejections_reach_only_their_sender() {
        let (me, you) = (Uuid::new_v4(), Uuid::new_v4());
        let body = serde_json::json!({ "user_id": me.to_string() });
        let a = audience(Kind::Board, "OpRejected", &body);
        assert_eq!(a, Audience::Only(me));
        assert_eq!(audience(Kind::Board, "OpApplied", &body), Audience::All);
        assert_eq!(
            audience(Kind::Chat, "RosterSynced", &body),
            Audience::Nobody
        );
        assert_eq!(
            audience(Kind::User, "PasswordChanged", &body),
            Audience::Nobody
        );
        let p = Publication {
            key: ChannelKey {
                kind: Kind::Board,
                id: me,
            },
            offset: 1,
            audience: a,
            frame: "full".into(),
            stub: "stub".into(),
        };
        assert_eq!(&**p.frame_for(me, false), "full");
        assert_eq!(&**p.frame_for(you, true), "stub");
    }
}
