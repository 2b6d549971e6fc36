//! The Inbox aggregate: one recipient's delivery marks in one lesson's chat,
//! keyed `<lesson id>:<recipient id>`.
//!
//! Marks are "up to and including" sequence numbers and only move forward:
//! `sent` → `delivered` → `read`. An acknowledgement that would move nothing
//! forward changes nothing and records nothing. Deliveries nobody
//! acknowledged within the TTL are expired by a background worker, one event
//! each.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::domain_event;

/// How far a recipient has acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckStatus {
    /// The recipient's device has it.
    Delivered,
    /// The recipient has read it.
    Read,
}

impl AckStatus {
    /// The status as clients send it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Read => "read",
        }
    }
}

/// The id of the inbox of `recipient` in `lesson`.
pub fn inbox_id(lesson: Uuid, recipient: Uuid) -> String {
    format!("{lesson}:{recipient}")
}

/// One recipient's delivery marks in one lesson's channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbox {
    /// Deliveries up to here are delivered.
    pub delivered_up_to: u64,
    /// Deliveries up to here are read.
    pub read_up_to: u64,
    /// Deliveries up to here have expired or moved on.
    pub expired_up_to: u64,
}

/// What may be asked of a recipient's deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxCommand {
    /// Move the recipient's marks forward.
    Acknowledge {
        /// The lesson.
        lesson_id: Uuid,
        /// Who receives it.
        recipient_id: Uuid,
        /// Up to and including this sequence number.
        up_to_seq: u64,
        /// The status.
        status: AckStatus,
    },
    /// Expire these deliveries (sequence numbers, ascending), unless
    /// acknowledged or expired already.
    Expire {
        /// The lesson.
        lesson_id: Uuid,
        /// Who receives it.
        recipient_id: Uuid,
        /// The sequence numbers.
        seqs: Vec<u64>,
    },
}

impl crate::CommandName for InboxCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Acknowledge { .. } => "AcknowledgeDeliveries",
            Self::Expire { .. } => "ExpireDeliveries",
        }
    }
}

/// What happened to a recipient's deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InboxEvent {
    /// Deliveries acknowledged.
    DeliveriesAcknowledged {
        /// The lesson.
        lesson_id: Uuid,
        /// Who receives it.
        recipient_id: Uuid,
        /// Up to and including this sequence number.
        up_to_seq: u64,
        /// The status.
        status: AckStatus,
    },
    /// Delivery expired.
    DeliveryExpired {
        /// The lesson.
        lesson_id: Uuid,
        /// Who receives it.
        recipient_id: Uuid,
        /// The message's sequence number in its channel.
        seq: u64,
    },
}

domain_event!(InboxEvent {
    DeliveriesAcknowledged,
    DeliveryExpired
});

/// An Inbox command is never refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreachable")]
pub enum InboxError {}

impl Inbox {
    /// The events `command` causes.
    pub fn decide(&self, command: InboxCommand) -> Vec<InboxEvent> {
        match command {
            InboxCommand::Acknowledge {
                lesson_id,
                recipient_id,
                up_to_seq,
                status,
            } => {
                let mark = match status {
                    AckStatus::Delivered => self.delivered_up_to,
                    AckStatus::Read => self.read_up_to,
                };
                if up_to_seq <= mark {
                    return Vec::new();
                }
                vec![InboxEvent::DeliveriesAcknowledged {
                    lesson_id,
                    recipient_id,
                    up_to_seq,
                    status,
                }]
            }
            InboxCommand::Expire {
                lesson_id,
                recipient_id,
                seqs,
            } => seqs
                .into_iter()
                .filter(|s| *s > self.delivered_up_to && *s > self.expired_up_to)
                .map(|seq| InboxEvent::DeliveryExpired {
                    lesson_id,
                    recipient_id,
                    seq,
                })
                .collect(),
        }
    }
}

impl Aggregate for Inbox {
    const TYPE: &'static str = "Inbox";
    type Command = InboxCommand;
    type Event = InboxEvent;
    type Error = InboxError;
    type Services = ();

    async fn handle(
        &mut self,
        command: InboxCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), InboxError> {
        for e in self.decide(command) {
            sink.write(e, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: InboxEvent) {
        match event {
            InboxEvent::DeliveriesAcknowledged {
                up_to_seq, status, ..
            } => {
                self.delivered_up_to = self.delivered_up_to.max(up_to_seq);
                if status == AckStatus::Read {
                    self.read_up_to = self.read_up_to.max(up_to_seq);
                }
            }
            InboxEvent::DeliveryExpired { seq, .. } => {
                self.expired_up_to = self.expired_up_to.max(seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Uuid = Uuid::from_u128(1);
    const R: Uuid = Uuid::from_u128(2);

    fn ack(up_to_seq: u64, status: AckStatus) -> InboxCommand {
        InboxCommand::Acknowledge {
            lesson_id: L,
            recipient_id: R,
            up_to_seq,
            status,
        }
    }

    #[test]
    fn marks_only_move_forward() {
        let mut inbox = Inbox::default();
        let events = inbox.decide(ack(5, AckStatus::Read));
        assert_eq!(events.len(), 1);
        for e in events {
            inbox.apply(e);
        }
        assert_eq!((inbox.delivered_up_to, inbox.read_up_to), (5, 5));
        // Backwards, or delivered below read: nothing.
        assert!(inbox.decide(ack(3, AckStatus::Read)).is_empty());
        assert!(inbox.decide(ack(5, AckStatus::Delivered)).is_empty());
        assert_eq!(inbox.decide(ack(6, AckStatus::Delivered)).len(), 1);
    }

    #[test]
    fn only_unacknowledged_deliveries_expire() {
        let mut inbox = Inbox::default();
        for e in inbox.decide(ack(2, AckStatus::Delivered)) {
            inbox.apply(e);
        }
        let events = inbox.decide(InboxCommand::Expire {
            lesson_id: L,
            recipient_id: R,
            seqs: vec![1, 2, 3, 4],
        });
        let seqs: Vec<_> = events
            .iter()
            .map(|e| match e {
                InboxEvent::DeliveryExpired { seq, .. } => *seq,
                InboxEvent::DeliveriesAcknowledged { .. } => 0,
            })
            .collect();
        assert_eq!(seqs, [3, 4]);
        for e in events {
            inbox.apply(e);
        }
        assert!(inbox
            .decide(InboxCommand::Expire {
                lesson_id: L,
                recipient_id: R,
                seqs: vec![4],
            })
            .is_empty());
    }
}
