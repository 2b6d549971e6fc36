//! The Channel aggregate: a lesson's chat. Each message gets the next
//! channel sequence number; every participant but the sender gets a delivery
//! of it, which starts as `sent` (the `deliveries` read model holds them,
//! and [`super::Inbox`] moves them on).

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::values::MessageText;
use super::{domain_event, Actor, LessonStatus, Roster};

/// Messages per channel remembered for duplicate detection.
pub const DEDUP_WINDOW: usize = 1000;

/// A lesson's chat channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    /// The lesson's roster at its version.
    pub roster: Roster,
    /// The message's sequence number in its channel.
    pub seq: u64,
    /// `(sender, client_message_id, message_id, seq)` of recent messages.
    pub recent: VecDeque<(Uuid, String, Uuid, u64)>,
}

/// What may be asked of a lesson's chat channel.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelCommand {
    /// Sync roster.
    SyncRoster {
        /// The lesson's roster at its version.
        roster: Roster,
    },
    /// Send a message to the lesson's participants.
    Send {
        /// Who did it.
        by: Actor,
        /// The message.
        message_id: Uuid,
        /// The client's id for the message.
        client_message_id: String,
        /// The message text.
        text: MessageText,
        /// When it was sent.
        sent_at: DateTime<Utc>,
        /// The lesson's version when the message was sent (an outside
        /// fact): every participant of that version gets a delivery, so a
        /// roster copy older than it is refused with `RosterBehind`.
        lesson_version: u64,
    },
}

impl crate::CommandName for ChannelCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::SyncRoster { .. } => "SyncRoster",
            Self::Send { .. } => "SendMessage",
        }
    }
}

/// What happened in a chat channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChannelEvent {
    /// Roster synced.
    RosterSynced {
        /// The lesson's roster at its version.
        roster: Roster,
    },
    /// Message sent.
    MessageSent {
        /// The message.
        message_id: Uuid,
        /// The message's sequence number in its channel.
        seq: u64,
        /// Who sent it.
        sender_id: Uuid,
        /// The client's id for the message.
        client_message_id: String,
        /// The message text.
        text: MessageText,
        /// When it was sent.
        sent_at: DateTime<Utc>,
        /// Who gets a delivery: every participant but the sender.
        recipients: Vec<Uuid>,
    },
}

domain_event!(ChannelEvent {
    RosterSynced,
    MessageSent
});

/// Why a chat command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// No such lesson.
    #[error("no such lesson")]
    NotFound,
    /// Only the lesson's tutor and enrolled students may chat.
    #[error("only the lesson's tutor and enrolled students may chat")]
    NotParticipant,
    /// The lesson was cancelled.
    #[error("the lesson was cancelled")]
    Closed,
    /// The message was sent before: its id and sequence number.
    #[error("the message was already sent")]
    Duplicate {
        /// The message first sent.
        message_id: Uuid,
        /// Its sequence number.
        seq: u64,
    },
    /// The channel's copy of the roster is older than the lesson: copy it
    /// again, then send.
    #[error("the channel's roster is behind the lesson")]
    RosterBehind,
}

impl Channel {
    fn exists(&self) -> Result<(), ChannelError> {
        if self.roster.lesson_version == 0 {
            Err(ChannelError::NotFound)
        } else {
            Ok(())
        }
    }

    /// Whether `by` may read and acknowledge in this channel.
    pub fn may_take_part(&self, by: Actor) -> Result<(), ChannelError> {
        self.exists()?;
        if by.own_only && !self.roster.takes_part(by.user_id) {
            return Err(ChannelError::NotParticipant);
        }
        Ok(())
    }
}

impl Aggregate for Channel {
    const TYPE: &'static str = "Channel";
    type Command = ChannelCommand;
    type Event = ChannelEvent;
    type Error = ChannelError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ChannelCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), ChannelError> {
        match command {
            ChannelCommand::SyncRoster { roster } => {
                if roster.lesson_version > self.roster.lesson_version {
                    sink.write(ChannelEvent::RosterSynced { roster }, self)
                        .await;
                }
            }
            ChannelCommand::Send {
                by,
                message_id,
                client_message_id,
                text,
                sent_at,
                lesson_version,
            } => {
                if lesson_version > self.roster.lesson_version {
                    return Err(ChannelError::RosterBehind);
                }
                self.may_take_part(by)?;
                if let Some((_, _, id, seq)) = self
                    .recent
                    .iter()
                    .find(|(s, c, _, _)| *s == by.user_id && *c == client_message_id)
                {
                    return Err(ChannelError::Duplicate {
                        message_id: *id,
                        seq: *seq,
                    });
                }
                if self.roster.status == Some(LessonStatus::Cancelled) {
                    return Err(ChannelError::Closed);
                }
                let recipients = self
                    .roster
                    .participants()
                    .filter(|p| *p != by.user_id)
                    .collect();
                sink.write(
                    ChannelEvent::MessageSent {
                        message_id,
                        seq: self.seq + 1,
                        sender_id: by.user_id,
                        client_message_id,
                        text,
                        sent_at,
                        recipients,
                    },
                    self,
                )
                .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: ChannelEvent) {
        match event {
            ChannelEvent::RosterSynced { roster } => self.roster = roster,
            ChannelEvent::MessageSent {
                message_id,
                seq,
                sender_id,
                client_message_id,
                ..
            } => {
                self.seq = seq;
                if self.recent.len() == DEDUP_WINDOW {
                    self.recent.pop_front();
                }
                self.recent
                    .push_back((sender_id, client_message_id, message_id, seq));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TUTOR: Uuid = Uuid::from_u128(1);
    const A: Uuid = Uuid::from_u128(2);
    const B: Uuid = Uuid::from_u128(3);

    fn channel() -> Channel {
        let mut c = Channel::default();
        c.apply(ChannelEvent::RosterSynced {
            roster: Roster {
                lesson_version: 3,
                tutor_id: Some(TUTOR),
                students: vec![A, B],
                status: Some(LessonStatus::Scheduled),
            },
        });
        c
    }

    /// "hello" from `by`, sent when the lesson was at `lesson_version`.
    fn hello(by: Uuid, client_id: &str, lesson_version: u64) -> ChannelCommand {
        ChannelCommand::Send {
            by: Actor {
                user_id: by,
                own_only: true,
            },
            message_id: Uuid::from_u128(100),
            client_message_id: client_id.into(),
            text: MessageText::parse("hello").expect("a message"),
            sent_at: Utc::now(),
            lesson_version,
        }
    }

    /// The events of `by` sending "hello" on a copy of `c` (at version 3).
    fn send(c: &Channel, by: Uuid, client_id: &str) -> Result<Vec<ChannelEvent>, ChannelError> {
        crate::testing::when(&mut c.clone(), hello(by, client_id, 3))
    }

    #[test]
    fn a_message_goes_to_everyone_but_the_sender() {
        let events = send(&channel(), A, "m1").expect("a test value");
        let [ChannelEvent::MessageSent {
            seq, recipients, ..
        }] = events.as_slice()
        else {
            panic!("{events:?}")
        };
        assert_eq!(*seq, 1);
        assert_eq!(recipients, &[TUTOR, B]);
    }

    #[test]
    fn the_same_client_message_id_is_one_message() {
        let mut c = channel();
        for e in send(&c, A, "m1").expect("a test value") {
            c.apply(e);
        }
        assert_eq!(
            send(&c, A, "m1"),
            Err(ChannelError::Duplicate {
                message_id: Uuid::from_u128(100),
                seq: 1
            })
        );
        // Another sender's id space is separate.
        assert!(send(&c, B, "m1").is_ok());
    }

    #[test]
    fn strangers_cannot_send() {
        assert_eq!(
            send(&channel(), Uuid::from_u128(9), "x"),
            Err(ChannelError::NotParticipant)
        );
    }

    fn roster(version: u64, status: LessonStatus) -> Roster {
        Roster {
            lesson_version: version,
            tutor_id: Some(TUTOR),
            students: vec![A],
            status: Some(status),
        }
    }

    #[test]
    fn a_roster_copy_takes_effect_only_when_newer() {
        let mut c: Channel = crate::testing::given([]);
        let sync = |version| ChannelCommand::SyncRoster {
            roster: roster(version, LessonStatus::Scheduled),
        };
        assert_eq!(
            crate::testing::when(&mut c, sync(2)),
            Ok(vec![ChannelEvent::RosterSynced {
                roster: roster(2, LessonStatus::Scheduled)
            }])
        );
        assert_eq!(crate::testing::when(&mut c, sync(2)), Ok(vec![]));
        assert_eq!(crate::testing::when(&mut c, sync(1)), Ok(vec![]));
        assert_eq!(c.roster.lesson_version, 2);
    }

    #[test]
    fn a_message_sent_after_a_newer_lesson_version_waits_for_the_roster() {
        // The channel holds version 3; the lesson is at 4 (someone enrolled).
        let mut c = channel();
        assert_eq!(
            crate::testing::when(&mut c, hello(A, "m1", 4)),
            Err(ChannelError::RosterBehind)
        );
        assert_eq!(c.seq, 0, "nothing sent");
    }

    #[test]
    fn a_cancelled_lessons_channel_is_closed() {
        let mut c: Channel = crate::testing::given([ChannelEvent::RosterSynced {
            roster: roster(5, LessonStatus::Cancelled),
        }]);
        assert_eq!(
            crate::testing::when(&mut c, hello(A, "m1", 5)),
            Err(ChannelError::Closed)
        );
    }
}
