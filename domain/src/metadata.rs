//! The metadata every event carries: who did it, from where, and why.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `actor_role` of an event Lectern caused itself (a background worker, a
/// process manager, the CLI). Other events name the caller's
/// [`Role`](crate::identity::Role), or [`ANONYMOUS`].
pub const SYSTEM: &str = "system";
/// `actor_role` of an event an unauthenticated caller caused.
pub const ANONYMOUS: &str = "anonymous";

/// Metadata stored with every event of one command.
///
/// Every field is always present in the stored JSON (empty when it does not
/// apply), so an auditor never has to guess whether a field was forgotten or
/// did not apply. Values are strings because postgres-es reads metadata as a
/// `HashMap<String, String>`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EventMetadata {
    /// Who acted.
    pub actor_id: String,
    /// The actor's role.
    pub actor_role: String,
    /// The session (refresh-token family).
    pub session_id: String,
    /// The request id.
    pub request_id: String,
    /// Ties the events of one flow together.
    pub correlation_id: String,
    /// What caused it: an event id, for a process manager's command.
    pub causation_id: String,
    /// The client address.
    pub ip: String,
    /// The client's User-Agent.
    pub user_agent: String,
    /// The command's name, set by the command bus.
    pub command: String,
    /// The attempt id of the request's `Idempotency-Key` (a server-made
    /// UUID, never the client's key); empty without a key. A retry whose
    /// first attempt's outcome is unknown finds that attempt's events by it.
    pub idempotency_key: String,
    /// Not stored: this command retries a request whose outcome is unknown
    /// (its process died, or lost its database, before the answer was
    /// kept), so the command bus first looks for the events that attempt
    /// committed and answers with those instead of running it again.
    #[serde(skip)]
    pub redelivered: bool,
}

/// A command's name, as event metadata records it (imperative:
/// `ScheduleLesson`).
///
/// The command bus writes it into the metadata of the events the command
/// produced, so callers never name the command themselves.
pub trait CommandName {
    /// The name of this command.
    fn name(&self) -> &'static str;
}

impl EventMetadata {
    /// Metadata for a command Lectern issues itself, such as a background
    /// job; `correlation_id` ties it to what caused it.
    pub fn system(correlation_id: &str) -> Self {
        Self {
            actor_id: SYSTEM.to_owned(),
            actor_role: SYSTEM.to_owned(),
            correlation_id: correlation_id.to_owned(),
            ..Self::default()
        }
    }

    /// The same metadata for the command named `command`. The command bus
    /// sets it; only a write that bypasses the bus (a multi-stream append)
    /// sets it itself.
    pub fn for_command(mut self, command: &str) -> Self {
        command.clone_into(&mut self.command);
        self
    }

    /// An id for the `n`th new thing this command creates: derived from the
    /// idempotency attempt when there is one, so a retried request names the
    /// same new aggregate as its first attempt (and cannot create a second);
    /// random otherwise.
    pub fn new_id(&self, n: u64) -> Uuid {
        match Uuid::parse_str(&self.idempotency_key) {
            Ok(attempt) => Uuid::new_v5(&attempt, &n.to_be_bytes()),
            Err(_) => Uuid::new_v4(),
        }
    }

    /// The metadata as the string map cqrs-es uses.
    pub fn to_map(&self) -> HashMap<String, String> {
        [
            ("actor_id", &self.actor_id),
            ("actor_role", &self.actor_role),
            ("session_id", &self.session_id),
            ("request_id", &self.request_id),
            ("correlation_id", &self.correlation_id),
            ("causation_id", &self.causation_id),
            ("ip", &self.ip),
            ("user_agent", &self.user_agent),
            ("command", &self.command),
            ("idempotency_key", &self.idempotency_key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
    }

    /// Metadata from the string map cqrs-es uses; missing keys become empty.
    pub fn from_map(map: &HashMap<String, String>) -> Self {
        let get = |k: &str| map.get(k).cloned().unwrap_or_default();
        Self {
            actor_id: get("actor_id"),
            actor_role: get("actor_role"),
            session_id: get("session_id"),
            request_id: get("request_id"),
            correlation_id: get("correlation_id"),
            causation_id: get("causation_id"),
            ip: get("ip"),
            user_agent: get("user_agent"),
            command: get("command"),
            idempotency_key: get("idempotency_key"),
            redelivered: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_round_trips_and_always_holds_every_field() {
        let meta = EventMetadata {
            actor_id: "u1".into(),
            request_id: "r1".into(),
            command: "DoThing".into(),
            ..EventMetadata::system("c1")
        };
        let map = meta.to_map();
        assert_eq!(map.len(), 10);
        assert_eq!(map["session_id"], "");
        assert_eq!(EventMetadata::from_map(&map), meta);
    }

    #[test]
    fn new_ids_follow_the_idempotency_attempt_and_are_random_without_one() {
        let keyed = EventMetadata {
            idempotency_key: Uuid::new_v4().to_string(),
            ..EventMetadata::default()
        };
        assert_eq!(keyed.new_id(0), keyed.clone().new_id(0));
        assert_ne!(keyed.new_id(0), keyed.new_id(1));
        let other = EventMetadata {
            idempotency_key: Uuid::new_v4().to_string(),
            ..EventMetadata::default()
        };
        assert_ne!(keyed.new_id(0), other.new_id(0));
        let plain = EventMetadata::default();
        assert_ne!(plain.new_id(0), plain.new_id(0));
    }
}
