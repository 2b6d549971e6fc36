//! Video playback: one stream per user (`Playback`, its id the user's), so
//! that one device plays at a time. A session is a lease: it lives
//! [`LEASE_SECS`] past its last heartbeat. Heartbeats themselves are not
//! events (they renew the lease outside the log); a session's start, its
//! takeover by another device, its end and its expiry are.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How long a session lives past its last heartbeat.
pub const LEASE_SECS: i64 = 45;

/// What happens when a second device starts while one plays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TakeoverPolicy {
    /// Refused: `playback_active_elsewhere`.
    #[default]
    Refuse,
    /// The new device takes over; the old one is told to stop.
    Takeover,
}

/// The session playing now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The session.
    pub session_id: Uuid,
    /// The lesson watched.
    pub lesson_id: Uuid,
    /// The device playing.
    pub device_id: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

/// A user's playback.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Playback {
    /// The session playing, if any.
    pub active: Option<Session>,
}

/// What may be asked of a user's playback.
#[derive(Debug, Clone, PartialEq)]
pub enum PlaybackCommand {
    /// Start a session on a device.
    Start {
        /// The new session's id.
        session_id: Uuid,
        /// The lesson.
        lesson_id: Uuid,
        /// The device (the caller's active one).
        device_id: String,
        /// What to do when another device plays.
        policy: TakeoverPolicy,
        /// Now.
        now: DateTime<Utc>,
    },
    /// A heartbeat: the session must be the one playing.
    Beat {
        /// The session.
        session_id: Uuid,
    },
    /// End a session.
    End {
        /// The session.
        session_id: Uuid,
        /// Milliseconds watched in it.
        watched_ms: u64,
        /// Its last position.
        position_ms: u64,
        /// Now.
        now: DateTime<Utc>,
    },
    /// The lease ran out.
    Expire {
        /// The session.
        session_id: Uuid,
        /// Milliseconds watched in it.
        watched_ms: u64,
        /// Its last position.
        position_ms: u64,
        /// Now.
        now: DateTime<Utc>,
    },
}

impl crate::CommandName for PlaybackCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Start { .. } => "StartVideo",
            Self::Beat { .. } => "VideoHeartbeat",
            Self::End { .. } => "EndVideo",
            Self::Expire { .. } => "ExpireVideo",
        }
    }
}

/// What happened to a user's playback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PlaybackEvent {
    /// A session started.
    VideoStarted {
        /// The session.
        session_id: Uuid,
        /// The lesson.
        lesson_id: Uuid,
        /// The device.
        device_id: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Another device took over: the old session ended.
    VideoTakenOver {
        /// The session that ended.
        session_id: Uuid,
        /// Its lesson.
        lesson_id: Uuid,
        /// Its device, which is told to stop.
        device_id: String,
        /// The session that took over.
        by_session_id: Uuid,
        /// Its device.
        by_device_id: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A session ended.
    VideoEnded {
        /// The session.
        session_id: Uuid,
        /// The lesson.
        lesson_id: Uuid,
        /// Milliseconds watched.
        watched_ms: u64,
        /// The last position.
        position_ms: u64,
        /// When.
        at: DateTime<Utc>,
    },
    /// A session's lease ran out.
    VideoExpired {
        /// The session.
        session_id: Uuid,
        /// The lesson.
        lesson_id: Uuid,
        /// Milliseconds watched.
        watched_ms: u64,
        /// The last position.
        position_ms: u64,
        /// When.
        at: DateTime<Utc>,
    },
}

crate::classroom::domain_event!(PlaybackEvent {
    VideoStarted,
    VideoTakenOver,
    VideoEnded,
    VideoExpired
});

/// Why a playback command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaybackError {
    /// Another device plays, and the policy refuses a second.
    #[error("another device is playing")]
    ActiveElsewhere {
        /// The session playing.
        session_id: Uuid,
        /// Its device.
        device_id: String,
    },
    /// The session is not the one playing (it ended, expired or was taken over).
    #[error("the session is not playing")]
    NotPlaying,
}

impl Playback {
    fn playing(&self, session_id: Uuid) -> Result<&Session, PlaybackError> {
        self.active
            .as_ref()
            .filter(|s| s.session_id == session_id)
            .ok_or(PlaybackError::NotPlaying)
    }

    /// The events `command` causes, or why not.
    pub fn decide(&self, command: PlaybackCommand) -> Result<Vec<PlaybackEvent>, PlaybackError> {
        match command {
            PlaybackCommand::Start {
                session_id,
                lesson_id,
                device_id,
                policy,
                now,
            } => {
                let mut events = Vec::new();
                if let Some(old) = &self.active {
                    if old.session_id == session_id {
                        return Ok(Vec::new());
                    }
                    // The same device starting again replaces its session;
                    // another device needs the takeover policy.
                    if old.device_id != device_id && policy == TakeoverPolicy::Refuse {
                        return Err(PlaybackError::ActiveElsewhere {
                            session_id: old.session_id,
                            device_id: old.device_id.clone(),
                        });
                    }
                    events.push(PlaybackEvent::VideoTakenOver {
                        session_id: old.session_id,
                        lesson_id: old.lesson_id,
                        device_id: old.device_id.clone(),
                        by_session_id: session_id,
                        by_device_id: device_id.clone(),
                        at: now,
                    });
                }
                events.push(PlaybackEvent::VideoStarted {
                    session_id,
                    lesson_id,
                    device_id,
                    at: now,
                });
                Ok(events)
            }
            PlaybackCommand::Beat { session_id } => {
                self.playing(session_id)?;
                Ok(Vec::new())
            }
            PlaybackCommand::End {
                session_id,
                watched_ms,
                position_ms,
                now,
            } => {
                let s = self.playing(session_id)?;
                Ok(vec![PlaybackEvent::VideoEnded {
                    session_id,
                    lesson_id: s.lesson_id,
                    watched_ms,
                    position_ms,
                    at: now,
                }])
            }
            PlaybackCommand::Expire {
                session_id,
                watched_ms,
                position_ms,
                now,
            } => match self.playing(session_id) {
                Ok(s) => Ok(vec![PlaybackEvent::VideoExpired {
                    session_id,
                    lesson_id: s.lesson_id,
                    watched_ms,
                    position_ms,
                    at: now,
                }]),
                // Ended or taken over meanwhile: nothing to expire.
                Err(_) => Ok(Vec::new()),
            },
        }
    }
}

impl Aggregate for Playback {
    const TYPE: &'static str = "Playback";
    type Command = PlaybackCommand;
    type Event = PlaybackEvent;
    type Error = PlaybackError;
    type Services = ();

    async fn handle(
        &mut self,
        command: PlaybackCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), PlaybackError> {
        for e in self.decide(command)? {
            sink.write(e, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: PlaybackEvent) {
        match event {
            PlaybackEvent::VideoStarted {
                session_id,
                lesson_id,
                device_id,
                at,
            } => {
                self.active = Some(Session {
                    session_id,
                    lesson_id,
                    device_id,
                    started_at: at,
                });
            }
            PlaybackEvent::VideoTakenOver { .. }
            | PlaybackEvent::VideoEnded { .. }
            | PlaybackEvent::VideoExpired { .. } => self.active = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{given, when};

    const L: Uuid = Uuid::from_u128(1);
    const S1: Uuid = Uuid::from_u128(11);
    const S2: Uuid = Uuid::from_u128(12);

    fn start(session_id: Uuid, device: &str, policy: TakeoverPolicy) -> PlaybackCommand {
        PlaybackCommand::Start {
            session_id,
            lesson_id: L,
            device_id: device.into(),
            policy,
            now: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_second_device_is_refused_by_default() {
        let mut p: Playback = given([]);
        when(&mut p, start(S1, "phone", TakeoverPolicy::Refuse)).expect("started");
        assert_eq!(
            when(&mut p, start(S2, "laptop", TakeoverPolicy::Refuse)),
            Err(PlaybackError::ActiveElsewhere {
                session_id: S1,
                device_id: "phone".into()
            })
        );
        assert_eq!(p.active.as_ref().map(|s| s.session_id), Some(S1));
    }

    #[test]
    fn a_takeover_ends_the_old_session_first() {
        let mut p: Playback = given([]);
        when(&mut p, start(S1, "phone", TakeoverPolicy::Refuse)).expect("started");
        let events =
            when(&mut p, start(S2, "laptop", TakeoverPolicy::Takeover)).expect("taken over");
        assert!(
            matches!(&events[0], PlaybackEvent::VideoTakenOver { session_id, by_session_id, device_id, .. }
            if *session_id == S1 && *by_session_id == S2 && device_id == "phone")
        );
        assert!(
            matches!(&events[1], PlaybackEvent::VideoStarted { session_id, .. } if *session_id == S2)
        );
        // The old session's heartbeats and end are refused now.
        assert_eq!(
            when(&mut p, PlaybackCommand::Beat { session_id: S1 }),
            Err(PlaybackError::NotPlaying)
        );
        assert_eq!(
            when(&mut p, PlaybackCommand::Beat { session_id: S2 }),
            Ok(vec![])
        );
    }

    #[test]
    fn an_expiry_after_an_end_changes_nothing() {
        let mut p: Playback = given([]);
        when(&mut p, start(S1, "phone", TakeoverPolicy::Refuse)).expect("started");
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let ended = when(
            &mut p,
            PlaybackCommand::End {
                session_id: S1,
                watched_ms: 5,
                position_ms: 9,
                now,
            },
        )
        .expect("ended");
        assert_eq!(ended.len(), 1);
        assert_eq!(
            when(
                &mut p,
                PlaybackCommand::Expire {
                    session_id: S1,
                    watched_ms: 5,
                    position_ms: 9,
                    now
                }
            ),
            Ok(vec![])
        );
        // The same device may start again.
        assert_eq!(
            when(&mut p, start(S2, "phone", TakeoverPolicy::Refuse)).map(|e| e.len()),
            Ok(1)
        );
    }
}
