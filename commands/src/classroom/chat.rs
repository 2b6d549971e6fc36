//! Chat: sending, taking part, and delivery marks.

use chrono::Utc;
use lectern_domain::classroom::inbox::{inbox_id, AckStatus};
use lectern_domain::classroom::values::MessageText;
use lectern_domain::classroom::{
    Actor, Channel, ChannelCommand, ChannelError, ChannelEvent, InboxCommand,
};
use lectern_domain::EventMetadata;
use uuid::Uuid;

use super::*;
use crate::bus::Committed;
use crate::error::CommandError;

impl ClassroomService {
    /// Send a chat message to lesson `lesson_id`.
    pub async fn send(
        &self,
        lesson_id: Uuid,
        by: Actor,
        client_message_id: String,
        text: MessageText,
        meta: &EventMetadata,
    ) -> Result<Sent, ClassroomError> {
        let key = lesson_id.to_string();
        let message_id = Uuid::new_v4();
        let meta = meta.clone();
        // Everyone enrolled by now gets a delivery, whether or not the roster
        // copy has caught up: the channel refuses a copy older than this.
        let lesson_version = self.lessons.store().version(&key).await?;
        let run = || {
            self.channels.execute(
                &key,
                ChannelCommand::Send {
                    by,
                    message_id,
                    client_message_id: client_message_id.clone(),
                    text: text.clone(),
                    sent_at: Utc::now(),
                    lesson_version,
                },
                meta.clone(),
            )
        };
        let mut result = run().await;
        if let Err(CommandError::Rejected(
            ChannelError::NotFound
            | ChannelError::NotParticipant
            | ChannelError::Closed
            | ChannelError::RosterBehind,
        )) = result
        {
            self.resync(
                lesson_id,
                &meta,
                ClassroomError::Channel(ChannelError::NotFound),
            )
            .await?;
            result = run().await;
        }
        match result {
            Ok(committed) => {
                // From the event: a retry answered with its first attempt's
                // events (see the command bus) carries that attempt's id.
                let (message_id, seq) = committed
                    .events
                    .iter()
                    .find_map(|e| match &e.payload {
                        ChannelEvent::MessageSent {
                            message_id, seq, ..
                        } => Some((*message_id, *seq)),
                        ChannelEvent::RosterSynced { .. } => None,
                    })
                    .unwrap_or((message_id, 0));
                Ok(Sent {
                    message_id,
                    seq,
                    duplicate: false,
                    version: committed.version,
                    position: committed.position,
                })
            }
            Err(CommandError::Rejected(ChannelError::Duplicate { message_id, seq })) => Ok(Sent {
                message_id,
                seq,
                duplicate: true,
                version: 0,
                position: None,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// The channel of lesson `lesson_id`, checked for `by` taking part.
    pub async fn channel_for(&self, lesson_id: Uuid, by: Actor) -> Result<Channel, ClassroomError> {
        let channel = self.channels.store().load(&lesson_id.to_string()).await?;
        match channel.aggregate.may_take_part(by) {
            Ok(()) => Ok(channel.aggregate),
            // The roster copy may be behind the lesson: refresh, check again.
            Err(ChannelError::NotFound | ChannelError::NotParticipant)
                if self.lesson_exists(lesson_id).await? =>
            {
                self.sync(lesson_id, &EventMetadata::system(&lesson_id.to_string()))
                    .await?;
                let channel = self.channels.store().load(&lesson_id.to_string()).await?;
                channel
                    .aggregate
                    .may_take_part(by)
                    .map_err(ClassroomError::Channel)?;
                Ok(channel.aggregate)
            }
            Err(e) => Err(ClassroomError::Channel(e)),
        }
    }

    async fn lesson_exists(&self, id: Uuid) -> Result<bool, ClassroomError> {
        Ok(self.lessons.store().load(&id.to_string()).await?.version > 0)
    }

    /// Lesson `id` as it stands, or `Lesson(NotFound)`.
    pub async fn lesson_state(&self, id: Uuid) -> Result<Lesson, ClassroomError> {
        let lesson = self.lessons.store().load(&id.to_string()).await?;
        if lesson.version == 0 {
            return Err(ClassroomError::Lesson(LessonError::NotFound));
        }
        Ok(lesson.aggregate)
    }

    /// `Lesson(NotFound)` unless lesson `id` was ever scheduled: for readers
    /// who may see every lesson, so that an unknown id is not an empty page.
    pub async fn require_lesson(&self, id: Uuid) -> Result<(), ClassroomError> {
        if self.lesson_exists(id).await? {
            Ok(())
        } else {
            Err(ClassroomError::Lesson(LessonError::NotFound))
        }
    }

    /// Move `by`'s delivery marks in lesson `lesson_id` forward. `None` when
    /// nothing moved (the acknowledgement was not ahead of the marks).
    pub async fn acknowledge(
        &self,
        lesson_id: Uuid,
        by: Actor,
        up_to_seq: u64,
        status: AckStatus,
        meta: &EventMetadata,
    ) -> Result<Committed<lectern_domain::classroom::InboxEvent>, ClassroomError> {
        let channel = self.channel_for(lesson_id, by).await?;
        if up_to_seq > channel.seq {
            return Err(ClassroomError::AckBeyondLast(up_to_seq, channel.seq));
        }
        let command = InboxCommand::Acknowledge {
            lesson_id,
            recipient_id: by.user_id,
            up_to_seq,
            status,
        };
        self.inboxes
            .execute(&inbox_id(lesson_id, by.user_id), command, meta.clone())
            .await
            .map_err(ClassroomError::from)
    }

    /// Expire `recipient`'s deliveries `seqs` in lesson `lesson_id`.
    pub async fn expire(
        &self,
        lesson_id: Uuid,
        recipient: Uuid,
        seqs: Vec<u64>,
    ) -> Result<usize, ClassroomError> {
        let command = InboxCommand::Expire {
            lesson_id,
            recipient_id: recipient,
            seqs,
        };
        let committed = self
            .inboxes
            .execute(
                &inbox_id(lesson_id, recipient),
                command,
                EventMetadata::system(&lesson_id.to_string()),
            )
            .await
            .map_err(ClassroomError::from)?;
        Ok(committed.events.len())
    }
}
