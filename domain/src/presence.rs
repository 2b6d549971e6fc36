//! Presence: one stream per user (`Presence`, its id the user's), holding the
//! user's status. Only transitions are events (`PresenceChanged`); the
//! connections and heartbeats that decide the status are kept outside the
//! log (see `docs/realtime.md`, "Presence").

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

/// A user's presence status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Connected and available.
    Online,
    /// Set by the client: away from the device.
    Away,
    /// Set by the client: do not disturb.
    Busy,
    /// Lost without saying goodbye: may come back within the grace.
    Reconnecting,
    /// Not connected.
    #[default]
    Offline,
}

impl Status {
    /// Every status, highest first.
    pub const ALL: [Status; 5] = [
        Status::Online,
        Status::Busy,
        Status::Away,
        Status::Reconnecting,
        Status::Offline,
    ];

    /// A user's status is the highest over their connections: online, then
    /// busy, away, reconnecting and offline.
    pub fn rank(self) -> u8 {
        match self {
            Status::Online => 4,
            Status::Busy => 3,
            Status::Away => 2,
            Status::Reconnecting => 1,
            Status::Offline => 0,
        }
    }

    /// The status of rank `rank` (clamped).
    pub fn of_rank(rank: u8) -> Self {
        match rank {
            0 => Status::Offline,
            1 => Status::Reconnecting,
            2 => Status::Away,
            3 => Status::Busy,
            _ => Status::Online,
        }
    }

    /// The name used in events, frames and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::Busy => "busy",
            Status::Reconnecting => "reconnecting",
            Status::Offline => "offline",
        }
    }

    /// Parse a name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether a client may choose it (the server decides the others).
    pub fn client_settable(self) -> bool {
        matches!(self, Status::Online | Status::Away | Status::Busy)
    }
}

/// Why the status changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// A connection opened or a heartbeat arrived.
    Connected,
    /// The client chose a status.
    Chosen,
    /// A connection closed cleanly.
    Disconnected,
    /// A connection was lost (no close, no pong, or its process died).
    Lost,
    /// The grace after a loss, or a heartbeat's TTL, ran out.
    Expired,
}

/// A user's presence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    /// The status.
    pub status: Status,
    /// Since when.
    pub since: Option<DateTime<Utc>>,
}

/// Settle the user's status on what their connections say now.
#[derive(Debug, Clone, PartialEq)]
pub struct Settle {
    /// The status the connections give.
    pub status: Status,
    /// Why.
    pub cause: Cause,
    /// When.
    pub at: DateTime<Utc>,
}

impl crate::CommandName for Settle {
    fn name(&self) -> &'static str {
        "SettlePresence"
    }
}

/// What happened to a user's presence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PresenceEvent {
    /// The status changed.
    PresenceChanged {
        /// Before.
        from: Status,
        /// Now.
        to: Status,
        /// Why.
        cause: Cause,
        /// When.
        at: DateTime<Utc>,
    },
}

crate::classroom::domain_event!(PresenceEvent { PresenceChanged });

/// Settling is never refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreachable")]
pub enum PresenceError {}

impl Presence {
    /// The events `command` causes: one when the status moves, else none.
    pub fn decide(&self, command: Settle) -> Vec<PresenceEvent> {
        if command.status == self.status {
            return Vec::new();
        }
        vec![PresenceEvent::PresenceChanged {
            from: self.status,
            to: command.status,
            cause: command.cause,
            at: command.at,
        }]
    }
}

impl Aggregate for Presence {
    const TYPE: &'static str = "Presence";
    type Command = Settle;
    type Event = PresenceEvent;
    type Error = PresenceError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Settle,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), PresenceError> {
        for e in self.decide(command) {
            sink.write(e, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: PresenceEvent) {
        match event {
            PresenceEvent::PresenceChanged { to, at, .. } => {
                self.status = to;
                self.since = Some(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{given, when};

    fn settle(status: Status, cause: Cause) -> Settle {
        Settle {
            status,
            cause,
            at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    #[test]
    fn only_transitions_are_events() {
        let mut p: Presence = given([]);
        assert_eq!(p.status, Status::Offline);
        let online = when(&mut p, settle(Status::Online, Cause::Connected)).expect("settled");
        assert_eq!(online.len(), 1);
        assert_eq!(p.status, Status::Online);
        // A second connection, or a heartbeat, changes nothing.
        assert_eq!(
            when(&mut p, settle(Status::Online, Cause::Connected)),
            Ok(vec![])
        );
        let lost = when(&mut p, settle(Status::Reconnecting, Cause::Lost)).expect("settled");
        assert_eq!(
            lost,
            vec![PresenceEvent::PresenceChanged {
                from: Status::Online,
                to: Status::Reconnecting,
                cause: Cause::Lost,
                at: DateTime::<Utc>::UNIX_EPOCH,
            }]
        );
    }

    #[test]
    fn statuses_rank_and_parse() {
        for s in Status::ALL {
            assert_eq!(Status::of_rank(s.rank()), s);
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert!(Status::Online.rank() > Status::Busy.rank());
        assert!(Status::Away.rank() > Status::Reconnecting.rank());
        assert!(!Status::Reconnecting.client_settable());
        assert!(Status::Busy.client_settable());
    }
}
